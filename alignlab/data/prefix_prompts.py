"""A corpus of texts whose prefixes are the prompts: the IMDb protocol shared by the embedded mini-IMDb
(alignlab.data.mini_imdb) and the real IMDb (alignlab.data.imdb), METHODS.md section 6.

The SFT stage trains on the training texts; prompts are random 2-8-token prefixes of texts (pair generation: of
the training texts, evaluation: of the held-out texts); pairs are sampled from the SFT model and labelled by the
reward group (the pair stage: the source has no preference rows of its own).
"""
from __future__ import annotations

import random
from abc import abstractmethod

from alignlab.data.source import DataSource


class PrefixPromptSource(DataSource):
    """A corpus of texts whose prefixes are the prompts. Subclasses provide `texts(split)`; the SFT stage trains
    on the training texts and pairs are generated (no preference rows of its own)."""

    def __init__(self, seed: int = 0, prompt_tokens: tuple[int, int] = (2, 8), n_pair_prompts: int = 512,
                 n_eval_prompts: int = 128):
        lo, hi = prompt_tokens
        if not 1 <= lo <= hi:
            raise ValueError(f"data.source.prompt_tokens={list(prompt_tokens)} must be [min, max] with 1 <= min <= max")
        self.seed, self.prompt_tokens = seed, (lo, hi)
        self.n_pair_prompts, self.n_eval_prompts = n_pair_prompts, n_eval_prompts

    @abstractmethod
    def texts(self, split: str) -> list[str]:
        """The texts of 'train', or the held-out texts for any other split name."""

    def corpus(self) -> list[str]:
        """Texts to train an embedded tokenizer on."""
        return self.texts("train")

    def sft_rows(self) -> list[dict]:
        return [{"prompt": "", "response": text} for text in self.texts("train")]

    def prompts(self, split: str, tokenizer) -> list[str]:
        """'train': prompts for pair generation; 'test': held-out prompts for evaluation. Each is a prefix of a
        random lo..hi tokens of a text, decoded back to a string."""
        n = self.n_pair_prompts if split == "train" else self.n_eval_prompts
        texts = self.texts(split)
        rng = random.Random(f"{self.seed}-{split}-prompts")
        picked = rng.sample(texts, n) if len(texts) >= n else rng.choices(texts, k=n)
        prompts = []
        for text in picked:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            k = rng.randint(*self.prompt_tokens)
            prompts.append(tokenizer.decode(ids[: min(k, max(1, len(ids) - 1))]))
        return prompts

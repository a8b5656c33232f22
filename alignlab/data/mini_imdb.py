"""The embedded miniature of the IMDb sentiment experiment.

Reviews come from alignlab's own seeded grammar (alignlab.data.reviews); the base model is fine-tuned on them
(SFT stage), prompts are 2-8-token prefixes of reviews, and preference pairs are sampled from the SFT model and
labelled by the reward group (pair stage), exactly as in the DPO paper's IMDb protocol (METHODS.md section 6).
"""
from __future__ import annotations

import random

from alignlab.data.reviews import generate_reviews


class PrefixPromptSource:
    """A corpus of texts whose prefixes are the prompts. Subclasses provide `texts(split)`; the SFT stage trains
    on the training texts and pairs are generated (no preference rows of its own)."""

    def __init__(self, seed: int = 0, prompt_tokens: tuple[int, int] = (2, 8), n_pair_prompts: int = 512,
                 n_eval_prompts: int = 128):
        lo, hi = prompt_tokens
        if not 1 <= lo <= hi:
            raise ValueError(f"data.source.prompt_tokens={list(prompt_tokens)} must be [min, max] with 1 <= min <= max")
        self.seed, self.prompt_tokens = seed, (lo, hi)
        self.n_pair_prompts, self.n_eval_prompts = n_pair_prompts, n_eval_prompts

    def texts(self, split: str) -> list[str]:
        raise NotImplementedError

    def corpus(self) -> list[str]:
        """Texts to train an embedded tokenizer on."""
        return self.texts("train")

    def sft_rows(self) -> list[dict]:
        return [{"prompt": "", "response": text} for text in self.texts("train")]

    def preference_rows(self, split: str) -> None:
        return None  # pairs are generated from the SFT model by the pair stage

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


class MiniImdb(PrefixPromptSource):
    """Generated reviews: the last n_eval_prompts are held out (their prefixes are the eval prompts)."""

    def __init__(self, n_reviews: int = 3000, **kwargs):
        super().__init__(**kwargs)
        if n_reviews <= self.n_eval_prompts:
            raise ValueError(f"data.source.n_reviews={n_reviews} must exceed n_eval_prompts={self.n_eval_prompts}")
        self.n_reviews = n_reviews
        self._reviews = None

    def texts(self, split: str) -> list[str]:
        if self._reviews is None:
            self._reviews = [r["text"] for r in generate_reviews(self.n_reviews, self.seed)]
        cut = self.n_reviews - self.n_eval_prompts
        return self._reviews[:cut] if split == "train" else self._reviews[cut:]

"""The embedded miniature of the IMDb sentiment experiment.

Reviews come from alignlab's own seeded grammar (alignlab.data.reviews); the base model is fine-tuned on them
(SFT stage), prompts are 2-8-token prefixes of reviews, and preference pairs are sampled from the SFT model and
labelled by the reward group (pair stage), exactly as in the DPO paper's IMDb protocol (METHODS.md section 6;
the protocol itself is alignlab.data.prefix_prompts.PrefixPromptSource, shared with alignlab.data.imdb).

A second skill that has nothing to do with sentiment rides along in the SFT corpus, so that alignment has a
capability to lose (the alignment tax, eval=tax): translation from the language of a generated world
(alignlab.data.capability). A share `capability_share` of the SFT texts are such translations; they are in the SFT
rows and the tokenizer's corpus only, never in `texts()`, so no prompt (pair generation or evaluation) is one.
"""
from __future__ import annotations

from alignlab.data.capability import capability_texts
from alignlab.data.prefix_prompts import PrefixPromptSource
from alignlab.data.reviews import generate_reviews


class MiniImdb(PrefixPromptSource):
    """Generated reviews: the last n_eval_prompts are held out (their prefixes are the eval prompts). SFT texts:
    the training reviews plus translation worksheets (`capability_share` of all SFT texts, each
    `capability_items_per_text` translations of training sentences)."""

    def __init__(self, n_reviews: int = 3000, capability_share: float = 0.0, capability_items_per_text: int = 6,
                 **kwargs):
        super().__init__(**kwargs)
        if n_reviews <= self.n_eval_prompts:
            raise ValueError(f"data.source.n_reviews={n_reviews} must exceed n_eval_prompts={self.n_eval_prompts}")
        if not 0.0 <= capability_share < 1.0:
            raise ValueError(f"data.source.capability_share={capability_share} must be in [0, 1)")
        if capability_items_per_text < 1:
            raise ValueError(f"data.source.capability_items_per_text={capability_items_per_text} must be >= 1")
        self.n_reviews = n_reviews
        self.capability_share, self.capability_items_per_text = capability_share, capability_items_per_text
        self._reviews = None

    def texts(self, split: str) -> list[str]:
        """Reviews only: the prompts are prefixes of these."""
        if self._reviews is None:
            self._reviews = [r["text"] for r in generate_reviews(self.n_reviews, self.seed)]
        cut = self.n_reviews - self.n_eval_prompts
        return self._reviews[:cut] if split == "train" else self._reviews[cut:]

    def capability_texts(self) -> list[str]:
        """The translation worksheets of the SFT corpus: share / (1 - share) as many as training reviews."""
        n_reviews = len(self.texts("train"))
        n = round(self.capability_share / (1.0 - self.capability_share) * n_reviews)
        return capability_texts(n, self.capability_items_per_text, self.seed)

    def sft_texts(self) -> list[str]:
        """The training reviews, then the worksheets (the SFT stage shuffles its rows)."""
        return self.texts("train") + self.capability_texts()

    def corpus(self) -> list[str]:
        return self.sft_texts()

    def sft_rows(self) -> list[dict]:
        return [{"prompt": "", "response": text} for text in self.sft_texts()]

"""The embedded miniature of the IMDb sentiment experiment.

Reviews come from alignlab's own seeded grammar (alignlab.data.reviews); the base model is fine-tuned on them
(SFT stage), prompts are 2-8-token prefixes of reviews, and preference pairs are sampled from the SFT model and
labelled by the reward group (pair stage), exactly as in the DPO paper's IMDb protocol (METHODS.md section 6;
the protocol itself is alignlab.data.prefix_prompts.PrefixPromptSource, shared with alignlab.data.imdb).
"""
from __future__ import annotations

from alignlab.data.prefix_prompts import PrefixPromptSource
from alignlab.data.reviews import generate_reviews


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

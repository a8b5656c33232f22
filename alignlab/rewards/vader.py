"""VADER sentiment as the reward of the embedded "mini-IMDb" experiment.

At full scale the IMDb experiment scores ``prompt + completion`` with a sentiment classifier; here VADER
(Hutto & Gilbert 2014, package ``vaderSentiment``) plays that role. VADER is a rule-based scorer over a
sentiment lexicon. The lexicon (``vader_lexicon.txt``, plus the emoji lexicon) ships inside the
``vaderSentiment`` wheel and is read from the installed package, so scoring needs no download and runs
offline. (Do not confuse it with NLTK's VADER, which fetches its lexicon with ``nltk.download``.)

The reward is VADER's compound score of the full review text mapped from [-1, 1] to [0, 1]:
``reward = (compound + 1) / 2``, so 0.5 is neutral (including the empty string).
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["VaderReward"]


class VaderReward:
    """Score ``prompt + response`` with VADER; rewards in [0, 1].

    ``batch_size`` only sets the chunk size of the progress bar (VADER scores one text at a time on the
    CPU); other keyword arguments (``device``, ``model_name``, ... that other reward configs take) are
    accepted and ignored, so reward configs are interchangeable.
    """

    def __init__(self, batch_size: int = 256, **unused):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.analyzer = SentimentIntensityAnalyzer()

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Rewards of whole texts: ``(compound + 1) / 2``."""
        texts = list(texts)
        out: list[float] = []
        bar = None
        if len(texts) > 1000:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="vader reward", unit="text")
        try:
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                out.extend((self.analyzer.polarity_scores(t)["compound"] + 1.0) / 2.0 for t in chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return out

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Rewards of ``prompts[i] + responses[i]`` (the full review, as the IMDb classifier sees it)."""
        if len(prompts) != len(responses):
            raise ValueError(
                f"prompts and responses differ in length: {len(prompts)} prompts vs {len(responses)} responses"
            )
        return self.score_texts([p + r for p, r in zip(prompts, responses)])

    __call__ = score

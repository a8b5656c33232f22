"""IMDb sentiment (`stanfordnlp/imdb`), the DPO paper's controlled-sentiment task (METHODS.md section 6).

Columns `text` (string) and `label` (ClassLabel neg/pos; -1 in `unsupervised`); splits `train` and `test`
(25,000 reviews each) and `unsupervised` (50,000). The hub stores them as
``plain_text/{train,test,unsupervised}-00000-of-00001.parquet``; a local directory in that layout loads the same
way (``data.source.path=/path/to/dir``).

The reviews are HTML-ish: line breaks are ``<br />`` tags (also ``<br/>``, ``<br>``). They are replaced by a
space and runs of spaces collapsed (``strip_html: true``), so neither the SFT model nor the prompts see tags.

Protocol: the SFT stage trains on the train reviews; prompts are random 2-8-token prefixes (pair generation: of
train reviews, evaluation: of test reviews); pairs are sampled from the SFT model and labelled by the reward
group (reward=hf_classifier: siebert/sentiment-roberta-large-english, P(POSITIVE)).
"""
from __future__ import annotations

import re

from alignlab.data.files import load_split, seeded_subset
from alignlab.data.prefix_prompts import PrefixPromptSource

BR_TAG = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
SPACES = re.compile(r"[ \t]{2,}")


def clean_review(text: str) -> str:
    """`<br />` tags -> one space; repeated spaces collapsed; ends stripped."""
    return SPACES.sub(" ", BR_TAG.sub(" ", text)).strip()


class Imdb(PrefixPromptSource):
    """IMDb reviews as a prefix-prompt source: texts('train') is the train split, any other split name the
    test split (held-out prompts). `max_texts` keeps a seeded random subset of each split (null: all; the hub's
    splits are sorted by label, so never take a head)."""

    def __init__(self, path: str = "stanfordnlp/imdb", name: str | None = None, train_split: str = "train",
                 test_split: str = "test", max_texts: int | None = None, strip_html: bool = True,
                 min_chars: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.path, self.name = str(path), name
        self.splits = {"train": train_split, "test": test_split}
        self.max_texts, self.strip_html, self.min_chars = max_texts, strip_html, min_chars
        self._texts: dict[str, list[str]] = {}

    def texts(self, split: str) -> list[str]:
        key = "train" if split == "train" else "test"
        if key not in self._texts:
            ds = load_split(self.path, self.splits[key], name=self.name, columns=("text",))
            texts = [t for t in ds["text"] if isinstance(t, str)]
            if self.strip_html:
                texts = [clean_review(t) for t in texts]
            texts = [t for t in texts if len(t) >= self.min_chars]
            self._texts[key] = seeded_subset(texts, self.max_texts, self.seed, f"data.source.max_texts-{key}")
        return self._texts[key]

"""Anthropic HH-RLHF (`Anthropic/hh-rlhf`), the TDPO paper's dialogue benchmark (METHODS.md section 6).

Each row holds two full transcripts, `chosen` and `rejected`, of the form
``"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ...\\n\\nAssistant: ..."``. The hub stores gzipped JSON lines
in one folder per subset (``harmless-base/train.jsonl.gz``, ``helpful-base/test.jsonl.gz``,
``helpful-online/...``, ``helpful-rejection-sampled/...``; ``red-team-attempts`` has another schema and is not a
train/test split). `datasets.load_dataset("Anthropic/hh-rlhf", split="train")` reads every subset's train file;
``data_dir="harmless-base"`` (config key ``data.source.data_dir``) picks one subset. A local directory with
``train.jsonl.gz`` / ``test.jsonl.gz``, or with such subset folders, loads the same way.

A pair is split by :func:`split_pair`: the prompt is the common prefix of the two transcripts up to and
including the last ``"\\n\\nAssistant:"`` they share, the responses are the remainders (they start with the
space after the colon). Rows that cannot be split (no shared ``"\\n\\nAssistant:"``, identical transcripts) are
counted and skipped by default (``data.on_bad_row=error`` stops at the first, naming the split and row).
"""
from __future__ import annotations

import os

from alignlab.data.files import SplitPairSource

ASSISTANT = "\n\nAssistant:"
HUMAN = "\n\nHuman:"


def split_pair(chosen_text: str, rejected_text: str) -> dict:
    """{prompt, chosen, rejected} from two HH transcripts.

    prompt = the longest common prefix of the two transcripts, cut just after the last ``"\\n\\nAssistant:"`` it
    contains; chosen / rejected = the rest of each transcript. In a multi-turn dialogue whose transcripts differ
    only in the final assistant turn, the prompt is the whole dialogue up to that turn. Raises ValueError when
    either is not text, the transcripts share no ``"\\n\\nAssistant:"``, or they are identical.

    >>> split_pair("\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "\\n\\nHuman: Hi\\n\\nAssistant: Go away.")
    {'prompt': '\\n\\nHuman: Hi\\n\\nAssistant:', 'chosen': ' Hello!', 'rejected': ' Go away.'}
    """
    for column, text in (("chosen", chosen_text), ("rejected", rejected_text)):
        if not isinstance(text, str):
            raise ValueError(f"{column!r} is a {type(text).__name__}, expected text")
    if chosen_text == rejected_text:
        raise ValueError("'chosen' and 'rejected' are identical transcripts")
    common = os.path.commonprefix([chosen_text, rejected_text])
    cut = common.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError(f"the transcripts share no {ASSISTANT!r} prefix (they differ from character "
                         f"{len(common)})")
    end = cut + len(ASSISTANT)
    return {"prompt": chosen_text[:end], "chosen": chosen_text[end:], "rejected": rejected_text[end:]}


class HhRlhf(SplitPairSource):
    """HH-RLHF pairs: SFT on the train split's chosen responses first (sft=true), preference pairs from train,
    the test split as validation pairs (preference accuracy) and for the evaluation prompts."""

    columns = ("chosen", "rejected")

    def __init__(self, path: str = "Anthropic/hh-rlhf", data_dir: str | None = None, sft: bool = True, **kwargs):
        super().__init__(path, data_dir=data_dir, sft=sft, **kwargs)

    def convert(self, row: dict) -> dict:
        return split_pair(row["chosen"], row["rejected"])

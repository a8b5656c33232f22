"""The contract of a data source: what every `data.source._target_` object provides to the pipeline.

A run asks its source, in this order:

    source.corpus()                       texts an embedded tokenizer is trained on (before any tokenizer exists)
    source.bind_tokenizer(tokenizer)      once the tokenizer exists (chat data renders with its template)
    source.sft_rows()                     [{prompt, response}] for an SFT stage, or None: no SFT stage
    source.preference_rows(split)         [{prompt, chosen, rejected}] for 'train' / 'validation', or None:
                                          the pair stage generates pairs from the start model on prompts('train')
    source.prompts(split, tokenizer)      'train': prompts for pair generation; 'test': held-out eval prompts
    source.chosen_responses("test")       {prompt: the dataset's chosen response}, for the win rate against the
                                          dataset ({}: none, and the win rate is absent from the results)

Subclass :class:`DataSource` and override what differs from its defaults; `corpus` and `prompts` have none.
The pipeline calls every method unconditionally, so it never needs to ask which kind of source it has.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable


class DataSource(ABC):
    """Base class of the data sources (alignlab.data.*): the defaults describe a source with prompts only."""

    def bind_tokenizer(self, tokenizer) -> None:
        """Called once the run's tokenizer exists, before any rows or prompts are asked for. Default: nothing to
        do (sources of plain text need no tokenizer to build their rows)."""

    @abstractmethod
    def corpus(self) -> list[str]:
        """Texts to train an embedded tokenizer on (called before bind_tokenizer: no tokenizer exists yet)."""

    def sft_rows(self) -> list[dict] | None:
        """Rows {prompt, response} of the SFT stage run before alignment. Default None: no SFT stage."""
        return None

    def preference_rows(self, split: str) -> list[dict] | None:
        """Pairs {prompt, chosen, rejected} of 'train' or 'validation'. Default None: the source has no pairs of
        its own; the pair stage samples them from the start model on prompts('train') and labels them by reward."""
        return None

    @abstractmethod
    def prompts(self, split: str, tokenizer=None) -> list[str]:
        """'train': the prompts pairs are generated from; 'test' (any other split name): held-out prompts for
        evaluation."""

    def chosen_responses(self, split: str = "test") -> dict[str, str]:
        """prompt -> the dataset's chosen response, for the win rate against the dataset
        (alignlab.eval.winrate.winrate_vs_chosen). Default {}: no reference responses (no win rate)."""
        return {}


def distinct_prompts(rows: Iterable[dict]) -> list[str]:
    """The rows' prompts, each once, in order of first appearance."""
    return list(dict.fromkeys(r["prompt"] for r in rows))


def first_chosen(rows: Iterable[dict]) -> dict[str, str]:
    """prompt -> the chosen response of its first pair (what sources with pairs return as chosen_responses)."""
    out: dict[str, str] = {}
    for r in rows:
        out.setdefault(r["prompt"], r["chosen"])
    return out

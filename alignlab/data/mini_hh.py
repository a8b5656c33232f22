"""The embedded miniature of Anthropic HH-RLHF (data=mini_hh): generated dialogues (alignlab.data.dialogues) in HH's
exact transcript format, read through the same code path as data=hh_rlhf (HhRlhf: split_pair on each row, SFT on
the train split's chosen responses, the test split as validation pairs, evaluation prompts and the chosen responses
the win rate is measured against). Nothing is downloaded; the reward is reward=dialogue_rule.
"""
from __future__ import annotations

from alignlab.data.dialogues import generate_dialogues
from alignlab.data.hh_rlhf import HhRlhf
from alignlab.errors import ConfigError


class MiniHh(HhRlhf):
    """Generated HH rows: ``n_test_prompts`` dialogues for the test split, then ``n_train_prompts`` others (no
    prompt is in both) for train, each with ``pairs_per_prompt`` = [min, max] pairs whose labels are swapped with
    probability ``label_noise``. The rows hold only ``chosen`` and ``rejected`` transcripts, as the hub's do."""

    def __init__(self, n_train_prompts: int = 1200, n_test_prompts: int = 200, pairs_per_prompt=(1, 4),
                 label_noise: float = 0.25, max_turns: int = 3, seed: int = 0, **kwargs):
        super().__init__(path="embedded:mini_hh", seed=seed, **kwargs)
        if n_train_prompts < 1 or n_test_prompts < 1:
            raise ConfigError(f"data.source.n_train_prompts={n_train_prompts} and n_test_prompts={n_test_prompts} "
                              "must be >= 1")
        lo, hi = pairs_per_prompt
        if not 1 <= lo <= hi:
            raise ConfigError(f"data.source.pairs_per_prompt={list(pairs_per_prompt)} must be [min, max] with "
                              "1 <= min <= max")
        if not 0.0 <= label_noise < 0.5:
            raise ConfigError(f"data.source.label_noise={label_noise} must be in [0, 0.5) (0.5 leaves no preference)")
        if max_turns not in (1, 2, 3):
            raise ConfigError(f"data.source.max_turns={max_turns} must be 1, 2 or 3")
        self.n_prompts = {"train": n_train_prompts, "test": n_test_prompts}
        self.generator = {"pairs_per_prompt": (lo, hi), "label_noise": label_noise, "max_turns": max_turns}

    def where(self, split: str) -> str:
        return f"mini_hh (generated, seed {self.seed}) split {split!r}"

    def generated(self, split: str) -> list[dict]:
        """The generator's rows of 'train' or 'test', with its metadata (flipped, family, styles)."""
        test = generate_dialogues(self.n_prompts["test"], self.seed, **self.generator)
        if split == "test":
            return test
        return generate_dialogues(self.n_prompts["train"], self.seed + 1, exclude={r["prompt"] for r in test},
                                  **self.generator)

    def raw_rows(self, split: str) -> list[dict]:
        if split not in self._raw:
            self._raw[split] = [{"chosen": r["chosen"], "rejected": r["rejected"]} for r in self.generated(split)]
        return self._raw[split]

"""The one interface of a merge plug-in: what a ``conf/merge/*.yaml`` builds through its ``_target_``.

The pipeline instantiates ``cfg.merge`` (every key of the YAML, ``name`` included, is a keyword argument of the
constructor; settings are validated there, so a bad value fails before anything is built) and then only calls
these hooks; it never asks which merge it holds:

* :meth:`Merge.check_trainer` before anything is built;
* :meth:`Merge.optimizer_factory` when the alignment module is built (online merges replace AdamW);
* :meth:`Merge.merge` after training, or alone in ``mode=merge``, when :attr:`Merge.posthoc` is true.

Adding a merge is one subclass (in :mod:`alignlab.merge.plugins` or anywhere importable) plus one YAML file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

__all__ = ["Merge", "OptimizerFactory"]

# make(named_groups, lr, strategy) -> optimizer; named_groups = [{"params": [(name, param), ...], "weight_decay": wd}]
OptimizerFactory = Callable[[Sequence[dict], float, object], torch.optim.Optimizer]


class Merge:
    """What a conf/merge/*.yaml builds (its _target_). The pipeline calls these hooks and never asks for a name.

    The base class is merge=none: the trained policy is the result."""

    posthoc: bool = False  # True: merge() runs after training (and in mode=merge)
    aligned: str | None = None  # post-hoc merges: the given aligned checkpoint dir (None = this run's policy)
    pre: str | None = None  # post-hoc merges: the given pre-alignment dir (None = this run's start model)

    def __init__(self, name: str = "none"):
        self.name = name

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "name")
        return f"{type(self).__name__}(name={self.name!r}{', ' + settings if settings else ''})"

    def check_trainer(self, trainer_cfg) -> None:
        """Raise alignlab.errors.ConfigError naming the keys if this merge cannot run with that trainer config
        (called before anything is built). Default: nothing to check."""

    def optimizer_factory(self, new_base_model: Callable[[], torch.nn.Module]) -> OptimizerFactory | None:
        """Online merges: a function ``make(named_groups, lr, strategy) -> torch optimizer`` that replaces AdamW
        for the policy; None (default) keeps AdamW. ``new_base_model()`` returns a fresh copy of the model the SFT
        stage started from (merge.base_model=sft_init). Call it when the module is built, so that a bad base model
        fails before training."""
        return None

    def merge(self, pre_dir: str | Path, aligned_dir: str | Path, out_dir: str | Path, *, tokenizer, reward,
              prompts: Sequence[str], device="cpu") -> dict:
        """Post-hoc merges: write the merged HF checkpoint to ``out_dir`` and return its ``merge/*`` metrics
        (e.g. ``{"merge/alpha": 0.5, "merge/ratio_1": ...}``). Only called when :attr:`posthoc` is true.
        ``reward`` (an object with ``score(prompts, responses)``), ``prompts`` (the training prompts) and
        ``device`` serve merges that learn from samples (HMA)."""
        raise NotImplementedError(f"merge={self.name} is not a post-hoc merge")

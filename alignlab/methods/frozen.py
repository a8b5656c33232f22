"""How a method declares the frozen models it needs, so that the pipeline can serve them without knowing the method.

A method class answers ``frozen_models(settings)`` (its own ``method`` config node) with a dict from constructor
argument name to :class:`FrozenModel`. The frozen-model stage (alignlab.pipeline.frozen) reads nothing else:

- ``FrozenModel()``: a fresh frozen copy of the start model (the reference of DPO, IPO, TDPO, ...);
- ``FrozenModel(path="...")``: a local HF directory or hub id given in the config;
- ``FrozenModel(training=Training(...))`` with no path: trained here from the start model with another method's
  config (AlignDistil's DPO and reverse-DPO teachers) and cached as a stage, so a sweep trains it once;
- ``FrozenModel(logps_only=True)``: only its sequence log-probs of the training pairs are used (DPO, cDPO, IPO with
  method.reference=precomputed): a cached stage computes them once and the model is not loaded for training.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Training:
    """How to train a frozen model from the start model when none is given.

    ``method`` is a method config node (``{"_target_": ..., "beta": ..., "optim": {...}}``) trained for
    ``max_epochs`` on the run's preference pairs, with chosen and rejected exchanged when ``swap_preferences``.
    ``stage`` names the cache directory (``<stage>-<fingerprint>``)."""

    stage: str
    method: dict = field(hash=False)
    max_epochs: int = 1
    swap_preferences: bool = False


@dataclass(frozen=True)
class FrozenModel:
    """One frozen model of a method: given by ``path``, else trained with ``training``, else a copy of the start
    model. ``dtype`` None means model.dtype. ``logps_only``: the method reads nothing of it but the summed
    log-probabilities of the training pairs' responses, which never change: they are computed once, as a cached
    stage shared by every job of a sweep, travel with each batch (``ref_logps``), and the model is not loaded for
    training at all."""

    path: str | None = None
    training: Training | None = None
    dtype: str | None = None
    logps_only: bool = False


REFERENCE = FrozenModel()  # the frozen copy of the start model that reference-based objectives compare against
REFERENCE_LOGPS = FrozenModel(logps_only=True)  # the same reference, of which only sequence log-probs are used

"""Supervised fine-tuning: -sum_t m_t log pi(y_t|s_t) (or its mean over tokens). METHODS.md section 1."""
from __future__ import annotations

from alignlab.errors import ConfigError
from alignlab.forward import response_logps
from alignlab.losses import sft_loss
from alignlab.methods.base import AlignmentModule


class SFT(AlignmentModule):
    batch_kind = "sequences"
    needs_reference = False

    def __init__(self, policy, reference=None, average: str = "sum", **kwargs):
        super().__init__(policy, reference, **kwargs)
        if average not in ("sum", "mean"):
            raise ConfigError(f"method.average={average!r} is not one of ['mean', 'sum']")
        self.average = average

    def loss_and_metrics(self, batch):
        logps, n_tokens = response_logps(self.policy, batch)
        losses = sft_loss(logps, n_tokens, self.average)
        return losses.mean(), {"nll_per_token": -logps.detach().sum() / n_tokens.sum()}

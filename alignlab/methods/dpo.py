"""DPO (sigmoid loss; label_smoothing > 0 is conservative DPO). METHODS.md section 1."""
from __future__ import annotations

from alignlab.errors import ConfigError
from alignlab.forward import response_logps
from alignlab.losses import dpo_loss
from alignlab.methods.base import AlignmentModule, check_positive, preference_metrics


class DPO(AlignmentModule):
    reads_reference_logps_only = True   # method.reference=precomputed: a cached stage instead of a reference forward
    frozen_settings = ("reference",)

    @classmethod
    def frozen_models(cls, settings):
        return cls.reference_from_settings(settings)

    def __init__(self, policy, reference=None, beta: float = 0.1, label_smoothing: float = 0.0, **kwargs):
        super().__init__(policy, reference, **kwargs)
        check_positive(beta=beta)
        if not 0.0 <= label_smoothing < 0.5:
            raise ConfigError(f"method.label_smoothing={label_smoothing} must be in [0, 0.5)")
        self.beta, self.label_smoothing = beta, label_smoothing

    def loss_and_metrics(self, batch):
        b = batch["num_pairs"]
        ref = self.reference_logps(batch)
        policy, _ = response_logps(self.policy, batch)
        losses, chosen_rewards, rejected_rewards = dpo_loss(policy[:b], policy[b:], ref[:b], ref[b:], self.beta,
                                                            self.label_smoothing)
        return losses.mean(), preference_metrics(losses, chosen_rewards, rejected_rewards, policy[:b], policy[b:])

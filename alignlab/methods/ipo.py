"""IPO (Azar et al. 2024): (h - 1/(2 beta))^2, h the DPO logratio margin. METHODS.md section 1."""
from __future__ import annotations

from alignlab.errors import ConfigError
from alignlab.forward import response_logps
from alignlab.losses import ipo_loss
from alignlab.methods.base import AlignmentModule, check_positive, preference_metrics


class IPO(AlignmentModule):
    """length_normalize=False: h on summed log-probs (the reference DPO code); True: each of the four log-probs
    is divided by its response length |y| first (TRL's choice). rewards/* are beta times the logratio the loss
    sees (so per token under length_normalize)."""

    reads_reference_logps_only = True   # method.reference=precomputed: a cached stage instead of a reference forward
    frozen_settings = ("reference",)

    @classmethod
    def frozen_models(cls, settings):
        return cls.reference_from_settings(settings)

    def __init__(self, policy, reference=None, beta: float = 0.1, length_normalize: bool = False, **kwargs):
        super().__init__(policy, reference, **kwargs)
        check_positive(beta=beta)
        if not isinstance(length_normalize, bool):
            raise ConfigError(f"method.length_normalize={length_normalize!r} must be true or false")
        self.beta, self.length_normalize = beta, length_normalize

    def preference_score(self, policy_logps, ref_logps, n_tokens):
        """The logratio the loss sees: per response token under length_normalize."""
        score = policy_logps - ref_logps
        return score / n_tokens.clamp(min=1) if self.length_normalize else score

    def loss_and_metrics(self, batch):
        b = batch["num_pairs"]
        ref = self.reference_logps(batch)
        policy, n_tokens = response_logps(self.policy, batch)
        if self.length_normalize:
            n_tokens = n_tokens.clamp(min=1)
            policy_in, ref_in = policy / n_tokens, ref / n_tokens
        else:
            policy_in, ref_in = policy, ref
        losses, chosen_rewards, rejected_rewards = ipo_loss(policy_in[:b], policy_in[b:], ref_in[:b], ref_in[b:],
                                                            self.beta)
        return losses.mean(), preference_metrics(losses, chosen_rewards, rejected_rewards, policy[:b], policy[b:])

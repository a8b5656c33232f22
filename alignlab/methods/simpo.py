"""SimPO (Meng et al. 2024): reference-free, length-normalised preference loss. METHODS.md section 1.

    loss = -log sigmoid(beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma)

No reference model is loaded for training (needs_reference = False); evaluation still builds one for its KL.
"""
from __future__ import annotations

from alignlab.errors import ConfigError
from alignlab.forward import response_logps
from alignlab.losses import simpo_loss
from alignlab.methods.base import AlignmentModule, check_positive, preference_metrics


class SimPO(AlignmentModule):
    needs_reference = False

    def __init__(self, policy, reference=None, beta: float = 2.0, gamma: float = 0.5, **kwargs):
        super().__init__(policy, None, **kwargs)   # a reference passed in is not kept: SimPO never uses one
        check_positive(beta=beta)
        if gamma < 0:
            raise ConfigError(f"method.gamma={gamma} must be >= 0 (the target reward margin)")
        self.beta, self.gamma = beta, gamma

    def preference_score(self, policy_logps, ref_logps, n_tokens):
        """SimPO's implicit reward (up to the positive factor beta): the mean log-prob per response token."""
        return policy_logps / n_tokens.clamp(min=1)

    def loss_and_metrics(self, batch):
        b = batch["num_pairs"]
        policy, n_tokens = response_logps(self.policy, batch)
        n_tokens = n_tokens.clamp(min=1)
        losses, chosen_rewards, rejected_rewards = simpo_loss(policy[:b], policy[b:], n_tokens[:b], n_tokens[b:],
                                                              self.beta, self.gamma)
        return losses.mean(), preference_metrics(losses, chosen_rewards, rejected_rewards, policy[:b], policy[b:])

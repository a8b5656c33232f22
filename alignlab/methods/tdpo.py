"""TDPO (token-level DPO, Zeng et al. ICML 2024): DPO plus the sequential KL over the full vocabulary.
METHODS.md section 2.

    TDPO1: u = (D_w - D_l) - (K_l - K_w)
    TDPO2: u = (D_w - D_l) - alpha (K_l - stopgrad(K_w))          loss = -log sigmoid(beta u)

`method=tdpo1` and `method=tdpo2` are two configs of this one class with `variant` set explicitly (the official
code's "TDPO2" command silently runs TDPO1; here the choice is always visible).

Unlike DPO, the loss needs the reference's full distribution at every response position. Both models project to
the vocabulary only there, `chunk_size` positions at a time, fused with the KL (alignlab.forward.
response_logps_and_kl): the step holds the reference's hidden states at those positions, never its logits, so
TDPO's memory stays that of DPO with a live reference.
"""
from __future__ import annotations

from alignlab.errors import ConfigError
from alignlab.forward import response_logps_and_kl
from alignlab.losses import TDPO_VARIANTS, pair_accuracy, tdpo_loss
from alignlab.methods.base import AlignmentModule, check_positive, preference_metrics

DEFAULT_ALPHA = 0.5  # the paper's TDPO2 default


class TDPO(AlignmentModule):
    inspect_signal = "kl"         # KL_t, the per-token term of the sequential KL
    def __init__(self, policy, reference, beta: float = 0.1, alpha: float | None = None, variant: str = "tdpo2",
                 chunk_size: int = 1024, **kwargs):
        super().__init__(policy, reference, **kwargs)
        if variant not in TDPO_VARIANTS:
            raise ConfigError(f"method.variant={variant!r} is not one of {list(TDPO_VARIANTS)}")
        check_positive(beta=beta)
        if variant == "tdpo1" and alpha is not None:
            # a sweep over alpha on TDPO1 would silently train the same model every time
            raise ConfigError(f"method.alpha={alpha} has no effect with method.variant=tdpo1 (TDPO1 has no alpha); "
                              "use method=tdpo2")
        if variant == "tdpo2":
            alpha = DEFAULT_ALPHA if alpha is None else alpha
            if alpha < 0:
                raise ConfigError(f"method.alpha={alpha} must be >= 0 (0 gives DPO)")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"method.chunk_size={chunk_size!r} must be an integer >= 1")
        self.beta, self.alpha, self.variant, self.chunk_size = beta, alpha, variant, chunk_size

    def loss_and_metrics(self, batch):
        b = batch["num_pairs"]
        policy, ref, seq_kl = response_logps_and_kl(self.policy, self.reference, batch, self.chunk_size)
        logratio = policy - ref
        losses, tdpo_chosen, tdpo_rejected = tdpo_loss(logratio[:b], logratio[b:], seq_kl[:b], seq_kl[b:],
                                                       self.beta, self.alpha, self.variant)
        # rewards/* as DPO defines them (beta * logratio), so DPO and TDPO runs share comparable keys
        rewards = self.beta * logratio.detach()
        kl = seq_kl.detach()
        metrics = preference_metrics(losses, rewards[:b], rewards[b:], policy[:b], policy[b:])
        metrics.update({
            "kl/chosen": kl[:b],
            "kl/rejected": kl[b:],
            "kl/margin": kl[:b] - kl[b:],
            "rewards_tdpo/chosen": tdpo_chosen,
            "rewards_tdpo/rejected": tdpo_rejected,
            "rewards_tdpo/accuracies": pair_accuracy(tdpo_chosen, tdpo_rejected),
        })
        return losses.mean(), metrics

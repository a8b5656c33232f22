"""TDPO, token-level DPO (Zeng et al., ICML 2024; METHODS section 2).

Inputs are per-sequence sums from :func:`alignlab.losses.token_logps_and_kl`: D = logratio(y) and
K = SeqKL(y) = sum_t m_t KL_t with KL_t = KL(ref(.|s_t) || pi(.|s_t)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TDPO_VARIANTS = ("tdpo1", "tdpo2")


def tdpo_loss(
    chosen_logratio: torch.Tensor,
    rejected_logratio: torch.Tensor,
    chosen_seq_kl: torch.Tensor,
    rejected_seq_kl: torch.Tensor,
    beta: float,
    alpha: float,
    variant: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-log sigmoid(beta u) with D_w, D_l the logratios and K_w, K_l the sequential KLs:

    - tdpo1: u = (D_w - D_l) - (K_l - K_w)                (alpha is unused)
    - tdpo2: u = (D_w - D_l) - alpha (K_l - stopgrad(K_w))

    TDPO2's stop-gradient keeps the chosen response's KL from being pulled up while the rejected one is pushed
    down, and alpha scales the KL term, so alpha = 0 is exactly DPO. The variant is an explicit choice because
    the official code silently runs TDPO1 for its "TDPO2" command (METHODS convention).
    Rewards: the official TDPO reward beta * (D + K), detached.
    """
    margin = chosen_logratio - rejected_logratio
    if variant == "tdpo1":
        u = margin - (rejected_seq_kl - chosen_seq_kl)
    elif variant == "tdpo2":
        u = margin - alpha * (rejected_seq_kl - chosen_seq_kl.detach())
    else:
        raise ValueError(f"tdpo_loss: variant must be one of {TDPO_VARIANTS}, got {variant!r}")
    losses = -F.logsigmoid(beta * u)
    chosen_rewards = beta * (chosen_logratio + chosen_seq_kl).detach()
    rejected_rewards = beta * (rejected_logratio + rejected_seq_kl).detach()
    return losses, chosen_rewards, rejected_rewards

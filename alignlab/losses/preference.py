"""Sequence-level objectives (METHODS section 1): SFT, DPO (sigmoid / conservative), IPO, SimPO.

Each preference loss is a small pure function in the style of the reference DPO code: it takes per-sequence
log-probabilities (sums over response positions, from :func:`alignlab.losses.sequence_logps`) and returns
``(losses[B], chosen_rewards[B], rejected_rewards[B])``. Losses are per pair so the caller chooses the reduction
(mean over the batch, or a sum for gradient-accumulation invariance); rewards are detached because they are
logged, never optimised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _logratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    """h = logratio(y_w) - logratio(y_l), plus the two logratios."""
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    return chosen - rejected, chosen, rejected


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h), eps = label_smoothing.

    eps = 0 is DPO; eps > 0 is conservative DPO (the preference label is assumed flipped with probability eps).
    logsigmoid rather than log(sigmoid) so a large margin cannot underflow to log(0).
    Rewards: beta * logratio(y) = beta * (log pi(y) - log ref(y)), detached.
    """
    h, chosen, rejected = _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h - 1/(2 beta))^2: IPO regresses the margin to a finite target instead of pushing it to infinity.

    h uses whatever log-probs are passed in: summed log-probs as in the reference DPO code, or, for METHODS'
    ``length_normalize`` option (TRL's choice), the caller divides each of the four log-probs by its response
    length |y| before calling. Rewards: beta * logratio(y), detached.
    """
    h, chosen, rejected = _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    return losses, beta * chosen.detach(), beta * rejected.detach()


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-log sigmoid(beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma).

    No reference model: the implicit reward is the length-normalised policy log-likelihood (so longer responses
    are not favoured), and gamma is the target reward margin. Rewards: beta * log pi(y) / |y|, detached.
    """
    chosen = beta * policy_chosen_logps / chosen_lengths
    rejected = beta * policy_rejected_logps / rejected_lengths
    losses = -F.logsigmoid(chosen - rejected - gamma)
    return losses, chosen.detach(), rejected.detach()


def sft_loss(logps: torch.Tensor, n_tokens: torch.Tensor, average: str = "sum") -> torch.Tensor:
    """-sum_t m_t log pi(y_t|s_t) per sequence ("sum"), or that divided by |y| ("mean").

    "sum" is METHODS' default (a per-sequence quantity is a sum over response positions), so long responses weigh
    more; "mean" weighs every sequence equally regardless of its length (|y| = 0 is clamped to 1).
    """
    if average == "sum":
        return -logps
    if average == "mean":
        return -logps / n_tokens.clamp(min=1)
    raise ValueError(f"sft_loss: average must be 'sum' or 'mean', got {average!r}")


def pair_accuracy(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """Per pair: 1 when the chosen response scores higher, 1/2 on a tie, 0 otherwise (METHODS section 1, 6).

    A tie carries no preference either way, so a model that cannot tell the responses apart (one identical to the
    reference: every implicit reward is 0) scores 1/2 on average, as chance does, not 0."""
    return (chosen_scores > rejected_scores).float() + 0.5 * (chosen_scores == rejected_scores).float()


def logratio_score(policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """The implicit reward of reference-based objectives up to the positive factor beta: logratio(y) =
    log pi(y) - log ref(y). Only its order matters (preference accuracy); `n_tokens` is unused here and is the
    argument length-normalised scores divide by."""
    return policy_logps - ref_logps

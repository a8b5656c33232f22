"""Per-sequence log-probabilities, TDPO's sequential KL and predictive entropy, chunked over response positions.

Convention for every function here: labels are *already shifted*, i.e. position t of the logits predicts
labels[:, t]; prompt and padding positions carry ``ignore_index`` (m_t = 0). Use :func:`shift_for_next_token` to
get there from Hugging Face style labels.

Why custom autograd functions: a plain chunked loop still lets autograd keep every chunk's [chunk, V] float32
intermediates (or, with checkpointing, one logits-sized gradient buffer per chunk from ``index_select``'s
backward) alive until backward. The gradients here have closed forms (d log pi(y_t)/dz = onehot(y_t) - pi,
d KL_t/dz = pi - ref), so backward recomputes each chunk's softmax and writes straight into a single gradient
tensor. Autograd saves only the logits themselves (no copy) and the position indices, so the peak memory of a
TDPO step stays close to DPO's (METHODS section 2, "Cost"). These functions are differentiable once (no
double backward), which is all training needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._positions import check_logits, chunks, compute_dtype, select_positions, sum_per_sequence


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn HF-style labels (labels = input_ids, prompt/padding = -100) into the "already shifted" form.

    The distribution at s_t = (x, y_<t) sits at the position *before* y_t, so logits[:, t] predicts
    labels[:, t + 1]. Returns views (no copies); the chunked functions below index them without copying them.
    """
    return logits[:, :-1], labels[:, 1:]


class _TokenLogps(torch.autograd.Function):
    """log pi(y_t|s_t) = z_t[y_t] - logsumexp(z_t) at the selected positions; returns [N]."""

    @staticmethod
    def forward(ctx, logits, rows, cols, targets, chunk_size):
        out = torch.empty(rows.numel(), dtype=compute_dtype(logits), device=logits.device)
        for sl in chunks(rows.numel(), chunk_size):
            z = logits[rows[sl], cols[sl]].to(out.dtype)
            out[sl] = z.gather(1, targets[sl, None]).squeeze(1) - z.logsumexp(-1)
        ctx.save_for_backward(logits, rows, cols, targets)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        logits, rows, cols, targets = ctx.saved_tensors
        grad = torch.zeros_like(logits)
        for sl in chunks(rows.numel(), ctx.chunk_size):
            g = logits[rows[sl], cols[sl]].to(grad_out.dtype).softmax(-1).neg_()
            g.scatter_add_(1, targets[sl, None], torch.ones_like(g[:, :1]))  # onehot(y_t) - pi
            g.mul_(grad_out[sl, None])
            grad[rows[sl], cols[sl]] = g.to(grad.dtype)
        return grad, None, None, None, None


class _TokenLogpsAndKL(torch.autograd.Function):
    """Per position: log pi(y_t|s_t), log ref(y_t|s_t), KL_t = sum_v ref (log ref - log pi); each [N].

    ref_logits are constants (the frozen reference): no gradient is returned for them.
    """

    @staticmethod
    def forward(ctx, policy_logits, ref_logits, rows, cols, targets, chunk_size):
        dtype = compute_dtype(policy_logits)
        n = rows.numel()
        policy_lp, ref_lp, kl = (torch.empty(n, dtype=dtype, device=policy_logits.device) for _ in range(3))
        for sl in chunks(n, chunk_size):
            r, c, y = rows[sl], cols[sl], targets[sl, None]
            log_pi = F.log_softmax(policy_logits[r, c].to(dtype), dim=-1)
            log_ref = F.log_softmax(ref_logits[r, c].to(dtype), dim=-1)
            policy_lp[sl] = log_pi.gather(1, y).squeeze(1)
            ref_lp[sl] = log_ref.gather(1, y).squeeze(1)
            ref_p = log_ref.exp()
            kl[sl] = ref_p.mul_(log_ref.sub_(log_pi)).sum(-1)  # in place: three [chunk, V] tensors at most
        ctx.save_for_backward(policy_logits, ref_logits, rows, cols, targets)
        ctx.chunk_size = chunk_size
        ctx.mark_non_differentiable(ref_lp)
        return policy_lp, ref_lp, kl

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lp, _g_ref, g_kl):
        policy_logits, ref_logits, rows, cols, targets = ctx.saved_tensors
        grad = torch.zeros_like(policy_logits)
        for sl in chunks(rows.numel(), ctx.chunk_size):
            r, c = rows[sl], cols[sl]
            a, b = g_lp[sl, None], g_kl[sl, None]
            pi = policy_logits[r, c].to(g_lp.dtype).softmax(-1)
            ref = ref_logits[r, c].to(g_lp.dtype).softmax(-1)
            # a * (onehot(y_t) - pi) + b * (pi - ref)
            g = pi.mul_(b - a).sub_(ref.mul_(b))
            g.scatter_add_(1, targets[sl, None], a)
            grad[r, c] = g.to(grad.dtype)
        return grad, None, None, None, None, None


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_t m_t log pi(y_t|s_t) per sequence, and |y| = sum_t m_t (float).

    Summed, not averaged, as in the official DPO/TDPO code (METHODS notation); divide by n_tokens for the
    length-normalised variants. bf16 logits are upcast one chunk at a time, so no [B, T, V] float32 copy exists.
    """
    check_logits(logits, labels)
    pos = select_positions(labels, ignore_index)
    per_token = _TokenLogps.apply(logits, pos.rows, pos.cols, pos.targets, chunk_size)
    return sum_per_sequence(per_token, pos), pos.n_tokens.to(per_token.dtype)


def token_logps_and_kl(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum_t m_t log pi(y_t|s_t), sum_t m_t log ref(y_t|s_t), SeqKL(y) = sum_t m_t KL_t) per sequence.

    KL_t = sum_v ref(v|s_t) (log ref(v|s_t) - log pi(v|s_t)) over the full vocabulary (TDPO, METHODS section 2),
    computed from log_softmax of both sides, never log(softmax), so an underflowing probability cannot give NaN.
    Gradients reach policy_logits only; ref_logits are treated as constants (the frozen reference).
    """
    check_logits(policy_logits, labels, "policy_logits")
    check_logits(ref_logits, labels, "ref_logits")
    pos = select_positions(labels, ignore_index)
    policy_lp, ref_lp, kl = _TokenLogpsAndKL.apply(
        policy_logits, ref_logits.detach(), pos.rows, pos.cols, pos.targets, chunk_size
    )
    return sum_per_sequence(policy_lp, pos), sum_per_sequence(ref_lp, pos), sum_per_sequence(kl, pos)


@torch.no_grad()
def per_token_logratio_and_kl(
    policy_logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: (log pi(y_t|s_t) - log ref(y_t|s_t), KL_t), each of the targets' shape [...].

    The per-token terms of :func:`token_logps_and_kl` (their sums over a response are its logratio and SeqKL), for
    logits [..., V] at positions that predict ``targets`` [...] (already shifted); float32 (float64 stays float64).
    For looking at single tokens (``python -m alignlab.inspect``); no gradient.
    """
    if policy_logits.shape != ref_logits.shape:
        raise ValueError(f"policy_logits {tuple(policy_logits.shape)} and ref_logits {tuple(ref_logits.shape)} must "
                         f"have the same shape")
    if policy_logits.dim() < 2 or targets.shape != policy_logits.shape[:-1]:
        raise ValueError(f"targets {tuple(targets.shape)} must match the logits' leading shape "
                         f"{tuple(policy_logits.shape[:-1])}")
    vocab = policy_logits.shape[-1]
    n = targets.numel()
    rows, cols = torch.arange(n, device=targets.device), torch.zeros(n, dtype=torch.long, device=targets.device)
    policy_lp, ref_lp, kl = _TokenLogpsAndKL.apply(policy_logits.reshape(n, 1, vocab), ref_logits.reshape(n, 1, vocab),
                                                   rows, cols, targets.reshape(n), chunk_size)
    return (policy_lp - ref_lp).reshape(targets.shape), kl.reshape(targets.shape)


@torch.no_grad()
def sequence_kl(
    p_logits: torch.Tensor, q_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100,
    chunk_size: int = 1024
) -> torch.Tensor:
    """sum_t m_t KL(p(.|s_t) || q(.|s_t)) per sequence, over the full vocabulary, from log_softmax of both.

    With p = pi and q = ref on responses sampled from pi itself, its mean over samples is KL(pi || ref) per response
    (METHODS section 6): the same expectation as the sampled log-ratio sum_t [log pi(y_t) - log ref(y_t)], whose
    per-position conditional expectation it is, with far lower variance. An evaluation metric: no gradient.
    """
    check_logits(p_logits, labels, "p_logits")
    check_logits(q_logits, labels, "q_logits")
    pos = select_positions(labels, ignore_index)
    dtype = compute_dtype(p_logits)
    kl = torch.empty(pos.rows.numel(), dtype=dtype, device=p_logits.device)
    for sl in chunks(pos.rows.numel(), chunk_size):
        log_p = F.log_softmax(p_logits[pos.rows[sl], pos.cols[sl]].to(dtype), dim=-1)
        log_q = F.log_softmax(q_logits[pos.rows[sl], pos.cols[sl]].to(dtype), dim=-1)
        kl[sl] = log_p.exp().mul_(log_p.sub_(log_q)).sum(-1)
    return sum_per_sequence(kl, pos)


@torch.no_grad()
def token_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_t m_t H_t, |y|) per sequence, H_t = -sum_v pi(v|s_t) log pi(v|s_t).

    An evaluation metric (mean per-token predictive entropy, TDPO's HH-RLHF table), so it is computed without
    gradient; divide the sum by n_tokens for the per-token mean.
    """
    check_logits(logits, labels)
    pos = select_positions(labels, ignore_index)
    dtype = compute_dtype(logits)
    ent = torch.empty(pos.rows.numel(), dtype=dtype, device=logits.device)
    for sl in chunks(pos.rows.numel(), chunk_size):
        log_p = F.log_softmax(logits[pos.rows[sl], pos.cols[sl]].to(dtype), dim=-1)
        ent[sl] = -(log_p.exp() * log_p).sum(-1)
    return sum_per_sequence(ent, pos), pos.n_tokens.to(dtype)

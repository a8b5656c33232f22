"""AlignDistil (Zhang et al., ACL 2025; METHODS section 3): token-level distillation from a DPO-derived teacher.

The student pi minimises, per sequence,

    loss(x, y) = (1/|y|) sum_t m_t w_t KL(pi(.|s_t) || pi*(.|s_t)),   pi* = softmax(z*_t)

a *reverse* KL (mode seeking, like the RLHF objective it replaces) to a teacher built from the logits of a DPO
model z_dpo and a second model z_other (the reverse-DPO model, or the reference for ``dpo_ref``). Every position
with a label counts, including the one predicting the first response token (the released code skips it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._positions import check_logits, chunks, compute_dtype, select_positions, sum_per_sequence

TEACHERS = ("dpo_ref", "contrastive", "adaptive")


def _check_teacher(teacher: str) -> None:
    if teacher not in TEACHERS:
        raise ValueError(f"aligndistil teacher must be one of {TEACHERS}, got {teacher!r}")


@torch.no_grad()
def _teacher(dpo_logits, other_logits, teacher, beta, beta0, r, eps):
    """(z*_t, w_t, a_t): teacher logits, per-position KL weight, and the extrapolation coefficient used."""
    _check_teacher(teacher)
    dtype = compute_dtype(dpo_logits)
    z_dpo = dpo_logits.detach().to(dtype)
    z_other = other_logits.detach().to(dtype)
    lead = z_dpo.shape[:-1]
    ratio = beta0 / beta
    if teacher == "dpo_ref":
        # Theorem 1: the RLHF optimum with coefficient beta, built from a DPO model trained with beta0.
        z_star = ratio * z_dpo + (1.0 - ratio) * z_other
        return z_star, z_dpo.new_full(lead, beta), z_dpo.new_full(lead, ratio)
    diff = z_dpo - z_other
    if teacher == "contrastive":
        return z_dpo + ratio * diff, z_dpo.new_full(lead, beta), z_dpo.new_full(lead, ratio)
    # adaptive: the contrastive teacher with a token-wise beta_t = beta0 / a_t in place of beta (a_t = beta0/beta
    # gives back exactly the contrastive row): extrapolate more where the DPO and reverse-DPO models disagree.
    # (in-place ops only on tensors created here: z_dpo may share memory with the caller's float32 logits)
    a = _coefficient(z_dpo, z_other, r, eps)
    return diff.mul_(a.unsqueeze(-1)).add_(z_dpo), beta0 / a, a


def _coefficient(z_dpo: torch.Tensor, z_other: torch.Tensor, r: float, eps: float) -> torch.Tensor:
    """a_t = r * TVD_t + eps, TVD_t = 1/2 sum_v |p_dpo(v|s_t) - p_rev(v|s_t)|, for logits [..., V]."""
    tvd = z_dpo.softmax(-1).sub_(z_other.softmax(-1)).abs_().sum(-1).mul_(0.5)
    return r * tvd.clamp(0.0, 1.0) + eps


@torch.no_grad()
def adaptive_coefficient(dpo_logits: torch.Tensor, reverse_logits: torch.Tensor, r: float = 20.0, eps: float = 1e-3,
                         chunk_size: int = 1024) -> torch.Tensor:
    """The adaptive teacher's a_t = r * TVD_t + eps (in [eps, r + eps]) per position, for logits [..., V]: how hard
    AlignDistil extrapolates at each token (the value :func:`aligndistil_teacher` uses), in float32, ``chunk_size``
    positions at a time."""
    if dpo_logits.shape != reverse_logits.shape:
        raise ValueError(f"dpo_logits {tuple(dpo_logits.shape)} and reverse_logits {tuple(reverse_logits.shape)} "
                         f"must have the same shape")
    z_dpo, z_rev = dpo_logits.reshape(-1, dpo_logits.shape[-1]), reverse_logits.reshape(-1, dpo_logits.shape[-1])
    dtype = compute_dtype(z_dpo)
    out = torch.empty(z_dpo.shape[0], dtype=dtype, device=z_dpo.device)
    for sl in chunks(z_dpo.shape[0], chunk_size):
        out[sl] = _coefficient(z_dpo[sl].to(dtype), z_rev[sl].to(dtype), r, eps)
    return out.reshape(dpo_logits.shape[:-1])


def aligndistil_teacher(
    dpo_logits: torch.Tensor,
    other_logits: torch.Tensor,
    teacher: str,
    beta: float,
    beta0: float,
    r: float = 20.0,
    eps: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits z*_t and weights w_t (METHODS section 3 table) for logits of shape [..., V].

    - ``dpo_ref``:     z* = (beta0/beta) z_dpo + (1 - beta0/beta) z_ref,   w = beta   (other = reference logits)
    - ``contrastive``: z* = z_dpo + (beta0/beta)(z_dpo - z_rev),          w = beta
    - ``adaptive``:    z* = z_dpo + a_t (z_dpo - z_rev),                   w = beta0 / a_t,
      a_t = r TVD_t + eps, TVD_t = 1/2 sum_v |p_dpo - p_rev| in [0, 1], so a_t in [eps, r + eps].

    r = 20 is our convention for the released off-policy r = 10, whose TVD lacks the 1/2 (METHODS convention).
    Everything is detached and in float32 (float64 inputs stay float64): the teacher is a target, not a path for
    gradients, and z* extrapolates logit differences, which bf16 would round badly. ``weights`` has the leading
    shape [...].
    """
    z_star, weights, _ = _teacher(dpo_logits, other_logits, teacher, beta, beta0, r, eps)
    return z_star, weights


def _reverse_kl(p_s: torch.Tensor, log_s: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """KL(pi || target) = sum_v pi (log pi - log target), rows of [chunk, V]."""
    log_t = F.log_softmax(target_logits.to(log_s.dtype), dim=-1)
    return log_t.neg_().add_(log_s).mul_(p_s).sum(-1)


class _AlignDistilKL(torch.autograd.Function):
    """Per position: w_t KL(pi||pi*) (differentiable wrt the student) and detached diagnostics.

    Custom backward for the same reason as in logps.py: d KL(pi||pi*)/dz = pi (log pi - log pi* - KL), so backward
    recomputes one chunk's teacher at a time instead of autograd keeping every chunk's [chunk, V] tensors.
    """

    @staticmethod
    def forward(ctx, student, dpo, other, rows, cols, spec, chunk_size, packed):
        dtype = compute_dtype(student)
        n = rows.numel()
        kl_t, kl_dpo, kl_other, alpha, weight = (
            torch.empty(n, dtype=dtype, device=student.device) for _ in range(5)
        )
        for sl in chunks(n, chunk_size):
            r, c = rows[sl], cols[sl]
            log_s = F.log_softmax(student[r, c].to(dtype), dim=-1)
            p_s = log_s.exp()
            z_dpo, z_other = (dpo[sl], other[sl]) if packed else (dpo[r, c], other[r, c])
            z_star, weight[sl], alpha[sl] = _teacher(z_dpo, z_other, *spec)
            kl_t[sl] = _reverse_kl(p_s, log_s, z_star)
            del z_star
            kl_dpo[sl] = _reverse_kl(p_s, log_s, z_dpo)
            kl_other[sl] = _reverse_kl(p_s, log_s, z_other)
        ctx.save_for_backward(student, dpo, other, rows, cols)
        ctx.spec, ctx.chunk_size, ctx.packed = spec, chunk_size, packed
        ctx.mark_non_differentiable(kl_t, kl_dpo, kl_other, alpha, weight)
        return weight * kl_t, kl_t, kl_dpo, kl_other, alpha, weight

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_wkl, *_unused):
        student, dpo, other, rows, cols = ctx.saved_tensors
        grad = torch.zeros_like(student)
        for sl in chunks(rows.numel(), ctx.chunk_size):
            r, c = rows[sl], cols[sl]
            log_s = F.log_softmax(student[r, c].to(grad_wkl.dtype), dim=-1)
            z_dpo, z_other = (dpo[sl], other[sl]) if ctx.packed else (dpo[r, c], other[r, c])
            z_star, weight, _ = _teacher(z_dpo, z_other, *ctx.spec)
            g = log_s - F.log_softmax(z_star.to(log_s.dtype), dim=-1)  # log pi - log pi*
            del z_star
            p_s = log_s.exp_()
            kl = (p_s * g).sum(-1, keepdim=True)
            g.sub_(kl).mul_(p_s).mul_((grad_wkl[sl] * weight)[:, None])
            grad[r, c] = g.to(grad.dtype)
        return grad, None, None, None, None, None, None, None


def aligndistil_loss(
    student_logits: torch.Tensor,
    dpo_logits: torch.Tensor,
    other_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher: str,
    beta: float,
    beta0: float,
    r: float = 20.0,
    eps: float = 1e-3,
    ignore_index: int = -100,
    chunk_size: int = 1024,
    teacher_at_positions: bool = False,
) -> dict[str, torch.Tensor]:
    """AlignDistil loss per sequence, with its diagnostics. All logits [B, T, V]; labels already shifted.

    With ``teacher_at_positions=True``, dpo_logits and other_logits are [N, V]: the teachers' logits at the N
    response positions only (labels != ignore_index, in row-major order), so the frozen models never produce
    vocabulary-sized rows for prompt and padding positions.

    Returns a dict:

    - ``losses`` [B]: (1/|y|) sum_t m_t w_t KL(pi||pi*), full vocabulary; the only entry with a gradient, and only
      to student_logits (the teacher, a_t and w_t are constants). A sequence with |y| = 0 gets 0.
    - ``alpha_mean`` (scalar): mean over response positions of the extrapolation coefficient: a_t for
      ``adaptive``; beta0/beta for ``contrastive`` (its fixed extrapolation coefficient) and for ``dpo_ref``
      (the coefficient of z_dpo in z*), so the logged value is comparable across teachers.
    - ``weight_mean`` (scalar): mean w_t over response positions.
    - ``kl_teacher``, ``kl_dpo``, ``kl_other`` [B]: mean over response tokens of KL(pi||model) for pi*, the DPO
      model and the other model (reverse DPO, or the reference for ``dpo_ref``); unweighted, detached.
    """
    _check_teacher(teacher)
    check_logits(student_logits, labels, "student_logits")
    pos = select_positions(labels, ignore_index)
    for name, logits in (("dpo_logits", dpo_logits), ("other_logits", other_logits)):
        if not teacher_at_positions:
            check_logits(logits, labels, name)
        elif logits.shape != (pos.rows.numel(), student_logits.shape[-1]):
            raise ValueError(f"{name} must be [N={pos.rows.numel()} response positions, V], got {tuple(logits.shape)}")
    spec = (teacher, beta, beta0, r, eps)
    wkl, kl_t, kl_dpo, kl_other, alpha, weight = _AlignDistilKL.apply(
        student_logits, dpo_logits.detach(), other_logits.detach(), pos.rows, pos.cols, spec, chunk_size,
        teacher_at_positions,
    )
    per_seq = pos.n_tokens.clamp(min=1).to(wkl.dtype)
    n_pos = max(pos.rows.numel(), 1)
    return {
        "losses": sum_per_sequence(wkl, pos) / per_seq,
        "alpha_mean": alpha.sum() / n_pos,
        "weight_mean": weight.sum() / n_pos,
        "kl_teacher": sum_per_sequence(kl_t, pos) / per_seq,
        "kl_dpo": sum_per_sequence(kl_dpo, pos) / per_seq,
        "kl_other": sum_per_sequence(kl_other, pos) / per_seq,
    }

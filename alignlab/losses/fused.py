"""Fused vocabulary projection: the token-level quantities of every objective straight from hidden states.

A causal LM spends most of a small model's FLOPs, and most of any model's activation memory, on its output head:
z = head(h) for every position of the batch, a [B, T, V] tensor, although a loss only reads the N positions that
predict response tokens. The functions here take the backbone's hidden states at those N positions (h, [N, H])
and the head's parameters (:class:`Head`), and walk over the positions C at a time: each chunk's logits [C, V] are
computed, used (log-softmax, the gathered log-prob, a KL), and dropped. Their backward recomputes each chunk's
logits from the saved hidden states (the "cut cross-entropy" / fused-linear-cross-entropy idea), so autograd never
holds a vocabulary-sized tensor: the memory a step adds for the head is h (N x H) plus one chunk.

The head is the model's own (alignlab.forward.output_head checks it against the model's forward):

    z = c * tanh(u / c),   u = s * (W h + b)         (c: final soft-capping, Gemma 2; s: logit scaling)

so dz/d(Wh + b) = s * (1 - (z / c)^2), or s without capping. Gradients reach h, W and b of a trainable head only;
frozen heads (reference, teachers) are constants. Every quantity is computed in float32 (float64 stays float64)
with log_softmax. These functions are differentiable once, which is all training needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._positions import chunks
from .aligndistil import _reverse_kl, _teacher


@dataclass(frozen=True)
class Head:
    """An output head: z = softcap * tanh(scale * (weight h + bias) / softcap) (no tanh when softcap is None)."""

    weight: torch.Tensor           # [V, H]
    bias: torch.Tensor | None = None
    scale: float = 1.0
    softcap: float | None = None


def _dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _logits(h: torch.Tensor, weight, bias, scale: float, softcap) -> torch.Tensor:
    """[C, V] logits of one chunk of hidden states, in float32 (float64 stays float64)."""
    z = F.linear(h, weight, bias).to(_dtype(h))
    if scale != 1.0:
        z = z * scale
    if softcap:
        z = torch.tanh(z / softcap) * softcap
    return z


def _to_linear(g_z: torch.Tensor, z: torch.Tensor, scale: float, softcap) -> torch.Tensor:
    """The gradient with respect to W h + b, from the gradient with respect to the (capped, scaled) logits z."""
    if softcap:
        g_z = g_z * (1.0 - (z / softcap) ** 2)
    return g_z * scale if scale != 1.0 else g_z


class _HeadGrads:
    """Accumulates the gradients of h, W and b chunk by chunk (W and b only when they need one)."""

    def __init__(self, ctx, h, weight, bias):
        self.grad_h = torch.zeros_like(h) if ctx.needs_input_grad[0] else None
        self.grad_w = torch.zeros(weight.shape, dtype=_dtype(h), device=weight.device) \
            if ctx.needs_input_grad[1] else None
        self.grad_b = torch.zeros(bias.shape, dtype=_dtype(h), device=bias.device) \
            if bias is not None and ctx.needs_input_grad[2] else None
        self.weight = weight

    def add(self, sl: slice, h_chunk: torch.Tensor, g_lin: torch.Tensor) -> None:
        if self.grad_h is not None:
            self.grad_h[sl] = (g_lin.to(self.weight.dtype) @ self.weight).to(self.grad_h.dtype)
        if self.grad_w is not None:
            self.grad_w.addmm_(g_lin.t(), h_chunk.to(g_lin.dtype))
        if self.grad_b is not None:
            self.grad_b.add_(g_lin.sum(0))

    def result(self, weight, bias):
        grad_w = None if self.grad_w is None else self.grad_w.to(weight.dtype)
        grad_b = None if self.grad_b is None else self.grad_b.to(bias.dtype)
        return self.grad_h, grad_w, grad_b


class _FusedTokenLogps(torch.autograd.Function):
    """log pi(y_t|s_t) = z_t[y_t] - logsumexp(z_t) per position; [N]."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, h, weight, bias, targets, scale, softcap, chunk_size):
        out = torch.empty(targets.numel(), dtype=_dtype(h), device=h.device)
        for sl in chunks(targets.numel(), chunk_size):
            z = _logits(h[sl], weight, bias, scale, softcap)
            out[sl] = z.gather(1, targets[sl, None]).squeeze(1) - z.logsumexp(-1)
        ctx.save_for_backward(h, weight, bias, targets)
        ctx.head, ctx.chunk_size = (scale, softcap), chunk_size
        return out

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_out):
        h, weight, bias, targets = ctx.saved_tensors
        grads = _HeadGrads(ctx, h, weight, bias)
        for sl in chunks(targets.numel(), ctx.chunk_size):
            z = _logits(h[sl], weight, bias, *ctx.head)
            g = z.softmax(-1).neg_()
            g.scatter_add_(1, targets[sl, None], torch.ones_like(g[:, :1]))  # onehot(y_t) - pi
            g.mul_(grad_out[sl, None].to(g.dtype))
            grads.add(sl, h[sl], _to_linear(g, z, *ctx.head))
        return (*grads.result(weight, bias), None, None, None, None)


class _FusedLogpsAndKL(torch.autograd.Function):
    """Per position: log pi(y_t), log ref(y_t), KL_t = sum_v ref (log ref - log pi) (TDPO); ref is a constant."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, h, weight, bias, h_ref, ref_head, targets, scale, softcap, chunk_size):
        n = targets.numel()
        lp, ref_lp, kl = (torch.empty(n, dtype=_dtype(h), device=h.device) for _ in range(3))
        for sl in chunks(n, chunk_size):
            y = targets[sl, None]
            log_pi = F.log_softmax(_logits(h[sl], weight, bias, scale, softcap), -1)
            log_ref = F.log_softmax(_ref_logits(h_ref[sl], ref_head).to(log_pi.dtype), -1)
            lp[sl] = log_pi.gather(1, y).squeeze(1)
            ref_lp[sl] = log_ref.gather(1, y).squeeze(1)
            kl[sl] = log_ref.exp().mul_(log_ref.sub_(log_pi)).sum(-1)
        ctx.save_for_backward(h, weight, bias, h_ref, targets)
        ctx.ref_head, ctx.head, ctx.chunk_size = ref_head, (scale, softcap), chunk_size
        ctx.mark_non_differentiable(ref_lp)
        return lp, ref_lp, kl

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g_lp, _g_ref, g_kl):
        h, weight, bias, h_ref, targets = ctx.saved_tensors
        grads = _HeadGrads(ctx, h, weight, bias)
        for sl in chunks(targets.numel(), ctx.chunk_size):
            z = _logits(h[sl], weight, bias, *ctx.head)
            a, b = g_lp[sl, None].to(z.dtype), g_kl[sl, None].to(z.dtype)
            pi = z.softmax(-1)
            ref = _ref_logits(h_ref[sl], ctx.ref_head).to(z.dtype).softmax(-1)
            g = pi.mul_(b - a).sub_(ref.mul_(b))  # a * (onehot(y_t) - pi) + b * (pi - ref)
            g.scatter_add_(1, targets[sl, None], a)
            grads.add(sl, h[sl], _to_linear(g, z, *ctx.head))
        return (*grads.result(weight, bias), None, None, None, None, None, None)


class _FusedAlignDistil(torch.autograd.Function):
    """Per position: w_t KL(pi || pi*) (differentiable wrt the student) and detached diagnostics; the teachers'
    logits are computed chunk by chunk from their hidden states."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, h, weight, bias, h_dpo, dpo_head, h_other, other_head, spec, scale, softcap, chunk_size):
        n = h.shape[0]
        kl_t, kl_dpo, kl_other, alpha, w = (torch.empty(n, dtype=_dtype(h), device=h.device) for _ in range(5))
        for sl in chunks(n, chunk_size):
            log_s = F.log_softmax(_logits(h[sl], weight, bias, scale, softcap), -1)
            p_s = log_s.exp()
            z_dpo = _ref_logits(h_dpo[sl], dpo_head).to(log_s.dtype)
            z_other = _ref_logits(h_other[sl], other_head).to(log_s.dtype)
            z_star, w[sl], alpha[sl] = _teacher(z_dpo, z_other, *spec)
            kl_t[sl] = _reverse_kl(p_s, log_s, z_star)
            del z_star
            kl_dpo[sl] = _reverse_kl(p_s, log_s, z_dpo)
            kl_other[sl] = _reverse_kl(p_s, log_s, z_other)
        ctx.save_for_backward(h, weight, bias, h_dpo, h_other)
        ctx.heads, ctx.spec, ctx.head, ctx.chunk_size = (dpo_head, other_head), spec, (scale, softcap), chunk_size
        ctx.mark_non_differentiable(kl_t, kl_dpo, kl_other, alpha, w)
        return w * kl_t, kl_t, kl_dpo, kl_other, alpha, w

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_wkl, *_unused):
        h, weight, bias, h_dpo, h_other = ctx.saved_tensors
        grads = _HeadGrads(ctx, h, weight, bias)
        for sl in chunks(h.shape[0], ctx.chunk_size):
            z = _logits(h[sl], weight, bias, *ctx.head)
            log_s = F.log_softmax(z, -1)
            z_star, w, _ = _teacher(_ref_logits(h_dpo[sl], ctx.heads[0]).to(z.dtype),
                                    _ref_logits(h_other[sl], ctx.heads[1]).to(z.dtype), *ctx.spec)
            g = log_s - F.log_softmax(z_star, -1)  # log pi - log pi*
            del z_star
            p_s = log_s.exp_()
            kl = (p_s * g).sum(-1, keepdim=True)
            g.sub_(kl).mul_(p_s).mul_((grad_wkl[sl].to(g.dtype) * w)[:, None])
            grads.add(sl, h[sl], _to_linear(g, z, *ctx.head))
        return (*grads.result(weight, bias), *([None] * 8))


@torch.no_grad()
def _ref_logits(h: torch.Tensor, head: Head) -> torch.Tensor:
    return _logits(h, head.weight, head.bias, head.scale, head.softcap)


def fused_token_logps(h: torch.Tensor, head: Head, targets: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """log pi(y_t|s_t) at N positions from their hidden states h [N, H]; gradients reach h and the head."""
    return _FusedTokenLogps.apply(h, head.weight, head.bias, targets, head.scale, head.softcap, chunk_size)


def fused_logps_and_kl(h: torch.Tensor, head: Head, h_ref: torch.Tensor, ref_head: Head, targets: torch.Tensor,
                       chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per position: (log pi(y_t), log ref(y_t), KL(ref(.|s_t) || pi(.|s_t))) from the policy's and the frozen
    reference's hidden states (TDPO's terms, METHODS section 2); gradients reach the policy side only."""
    return _FusedLogpsAndKL.apply(h, head.weight, head.bias, h_ref.detach(), ref_head, targets, head.scale,
                                  head.softcap, chunk_size)


def fused_aligndistil(h: torch.Tensor, head: Head, h_dpo: torch.Tensor, dpo_head: Head, h_other: torch.Tensor,
                      other_head: Head, teacher: str, beta: float, beta0: float, r: float, eps: float,
                      chunk_size: int = 1024) -> tuple[torch.Tensor, ...]:
    """Per position: (w_t KL(pi || pi*), KL(pi || pi*), KL(pi || dpo), KL(pi || other), a_t, w_t) (METHODS section
    3), the teacher built chunk by chunk from the DPO and other model's hidden states; gradients reach the student
    through the first entry only."""
    return _FusedAlignDistil.apply(h, head.weight, head.bias, h_dpo.detach(), dpo_head, h_other.detach(),
                                   other_head, (teacher, beta, beta0, r, eps), head.scale, head.softcap, chunk_size)

"""Heterogeneous Model Averaging (HMA; Lin et al., EMNLP 2024; METHODS.md section 4): learning the block ratios.

The transformer layers are split into K contiguous blocks (:mod:`alignlab.merge.blocks`), each merged with its own
ratio alpha_k (the share of the ALIGNED model, as everywhere in alignlab). The merge itself is
:func:`alignlab.merge.average.merge_state_dicts` / :func:`~alignlab.merge.average.merge_checkpoints` with the
per-tensor ratio function of :func:`~alignlab.merge.blocks.block_ratio_function`: one mechanism for plain
averaging and HMA. This module learns the ratios.

Learned ratios (:func:`learn_block_ratios`): alpha_k = alpha*K*(sigmoid(s_k)+eps) / sum_j (sigmoid(s_j)+eps), with
the mean pinned to alpha. **Decision (not in METHODS):** this parameterisation can give alpha_k > 1 when alpha is
near 1 (for alpha = 1, K = 3, eps = 0.2 a block can reach 2.25), which would extrapolate beyond the aligned model
and make "alpha = 1 is the aligned model" false. By default (``bound=True``) the ratios are therefore the Euclidean
projection of METHODS' ratios onto {a in [0, 1]^K : mean(a) = alpha}: identical to METHODS' formula whenever its
ratios already lie in [0, 1] (always the case when alpha <= (1+K*eps)/(K*(1+eps)), e.g. alpha <= 0.444 at K=3,
eps=0.2), the mean stays exactly alpha, and alpha = 1 gives all ratios 1. The projection is applied inside
training too (it is piecewise linear; its gradient is exact almost everywhere), so the logits learn what is used.
``bound=False`` gives METHODS' raw formula (extrapolation allowed).
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import torch

from alignlab.errors import ConfigError
from alignlab.merge.average import linear_keys
from alignlab.merge.blocks import block_of, check_num_blocks
from alignlab.merge.checks import check_alpha, check_compatible, check_scope

__all__ = ["check_eps", "check_learning", "hma_ratios", "learn_block_ratios", "project_ratios",
           "sample_high_reward_rows", "select_high_reward_rows"]


# ---- ratios --------------------------------------------------------------------------------------------------------
def project_ratios(ratios: torch.Tensor, alpha: float) -> torch.Tensor:
    """Euclidean projection onto {a in [0,1]^K : mean(a) = alpha}, differentiable almost everywhere.

    The projection is a_k = clamp(r_k - tau, 0, 1) for the tau that makes the mean alpha; tau is located by
    bisection, then recomputed differentiably from the coordinates left free. Ratios already in [0, 1] with mean
    alpha are returned unchanged (the same tensor)."""
    if bool(((ratios >= 0) & (ratios <= 1)).all()) and abs(float(ratios.detach().mean()) - alpha) < 1e-6:
        return ratios
    k = ratios.numel()
    with torch.no_grad():
        r = ratios.detach().double()
        lo, hi = float(r.min()) - 1.0, float(r.max())
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if float((r - mid).clamp(0, 1).mean()) > alpha:
                lo = mid
            else:
                hi = mid
        shifted = r - 0.5 * (lo + hi)
        upper, lower = shifted >= 1.0, shifted <= 0.0
        free = ~(upper | lower)
    fixed = upper.to(ratios.dtype)
    if not bool(free.any()):
        return fixed + 0.0 * ratios  # constant, but keeps the graph (zero gradient)
    tau = (ratios[free].sum() + upper.sum() - k * alpha) / free.sum()
    return torch.where(free, ratios - tau, fixed).clamp(0.0, 1.0)


def hma_ratios(s: torch.Tensor, alpha: float, eps: float = 0.2, bound: bool = True) -> torch.Tensor:
    """alpha_k = alpha*K*(sigmoid(s_k)+eps) / sum_j (sigmoid(s_j)+eps): mean exactly alpha.

    bound=True (default) projects onto [0, 1]^K keeping the mean (see the module docstring); bound=False is
    METHODS' raw formula, whose ratios can exceed 1 when alpha is near 1."""
    weights = torch.sigmoid(s) + eps
    raw = alpha * s.numel() * weights / weights.sum()
    return project_ratios(raw, alpha) if bound else raw


# ---- data for learning ---------------------------------------------------------------------------------------------
def select_high_reward_rows(samples: Sequence[dict], rewards: Sequence[float], top: int,
                            n_keep: int | None = None, seed: int = 0) -> list[dict]:
    """HMA's training data: the `top` highest-reward samples ({prompt, completion} rows from
    alignlab.sampling.sample_completions), of which `n_keep` are drawn at random (paper: ~2000 of the top
    5000). Returns {prompt, response, prompt_ids, response_ids} rows for :func:`learn_block_ratios`: the sampled
    token ids are kept (a sample that stopped at max_new_tokens has no EOS and is learned without one)."""
    if len(samples) != len(rewards):
        raise ValueError(f"{len(samples)} samples but {len(rewards)} rewards")
    order = sorted(range(len(samples)), key=lambda i: -float(rewards[i]))[:top]
    if n_keep is not None and n_keep < len(order):
        order = random.Random(seed).sample(order, n_keep)
    rows = []
    for i in order:
        row = {"prompt": samples[i]["prompt"], "response": samples[i]["completion"]}
        if "completion_ids" in samples[i]:
            row.update(prompt_ids=samples[i]["prompt_ids"], response_ids=samples[i]["completion_ids"])
        rows.append(row)
    return rows


def sample_high_reward_rows(policy, tokenizer, reward, prompts: Sequence[str], top: int, n_keep: int | None = None,
                            max_new_tokens: int = 64, temperature: float = 1.0, batch_size: int = 64,
                            num_return_sequences: int = 1, seed: int = 0) -> list[dict]:
    """Sample responses of the aligned policy for `prompts`, score them with the reward (an object with
    ``score(prompts, responses)``, as the reward group builds), and keep the best (:func:`select_high_reward_rows`)."""
    from alignlab.sampling import sample_completions

    samples = sample_completions(policy, tokenizer, list(prompts), max_new_tokens, temperature=temperature,
                                 batch_size=batch_size, seed=seed, num_return_sequences=num_return_sequences,
                                 desc="hma: sampling the aligned policy")
    rewards = reward.score([s["prompt"] for s in samples], [s["completion"] for s in samples])
    return select_high_reward_rows(samples, rewards, top, n_keep, seed)


# ---- learning the ratios -------------------------------------------------------------------------------------------
def check_eps(eps: float) -> float:
    if not 0.0 <= eps <= 0.9:
        raise ConfigError(f"merge.eps={eps} must be in [0, 0.9] (METHODS section 4)")
    return eps


def check_learning(eps: float, lr: float, batch_size: int, epochs: int) -> None:
    """The settings of :func:`learn_block_ratios`, or a ConfigError naming the merge.* key."""
    check_eps(eps)
    if lr <= 0 or batch_size < 1 or epochs < 1:
        raise ConfigError(f"merge.lr={lr}, merge.batch_size={batch_size}, merge.epochs={epochs} must be positive")


def _batches(rows: list[dict], batch_size: int, epochs: int, seed: int):
    rng = random.Random(seed)
    for _ in range(epochs):
        order = list(range(len(rows)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [rows[i] for i in order[start:start + batch_size]]


class _ResponseLogps(torch.nn.Module):
    """`model`'s summed response log-probs of a batch (alignlab.forward.response_logps) as a module, so that
    torch.func.functional_call can run it on merged parameters."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        from alignlab.forward import response_logps

        return response_logps(self.model, batch)


def learn_block_ratios(pre_model, aligned_model, tokenizer, rows: Sequence[dict], alpha: float,
                       num_blocks: int = 3, eps: float = 0.2, lr: float = 2e-5, batch_size: int = 8,
                       epochs: int = 1, warmup_ratio: float = 0.03, max_length: int = 512,
                       max_prompt_length: int = 256, scope: str = "all", bound: bool = True, seed: int = 0,
                       history: list | None = None) -> list[float]:
    """Learn HMA's K block ratios (mean pinned to alpha) on high-reward responses; returns them as floats.

    Both weight sets stay frozen; each step the merged parameters are computed from the K logits s
    (``ratio*aligned + (1-ratio)*pre`` per tensor, the ratio of the tensor's block) and the aligned model's
    architecture is run on them with ``torch.func.functional_call`` (scored by
    :func:`alignlab.forward.response_logps`). The objective is the mean log-likelihood of the
    response tokens (prompt and padding masked; a response given as text gets EOS appended, as in SFT; sampled token
    ids are used as sampled), maximised with AdamW
    (no weight decay on s), a cosine schedule with ``warmup_ratio`` warm-up, for ``epochs`` passes over ``rows``
    ({prompt, response} dicts). s starts at 0 (all ratios alpha). METHODS' lr is 2e-5; a tiny model needs a much
    larger one (e.g. 0.1) for the ratios to move measurably. ``history``, if a list, receives one dict per step
    (step, loss, ratios). Buffers (e.g. rotary tables) come from the aligned model.
    """
    from torch.func import functional_call
    from transformers import get_scheduler

    from alignlab.data.tokenize import TruncationStats, collate_sequences, tokenize_text
    from alignlab.forward import to_device

    alpha = check_alpha(alpha)
    check_scope(scope)
    check_learning(eps, lr, batch_size, epochs)
    num_layers = aligned_model.config.num_hidden_layers
    check_num_blocks(num_blocks, num_layers)

    aligned_params = dict(aligned_model.named_parameters())  # tied weights appear once (their first name)
    pre_params = dict(pre_model.named_parameters())
    check_compatible({k: v.shape for k, v in pre_params.items()}, {k: v.shape for k, v in aligned_params.items()})
    merged_names = list(aligned_params)
    if scope == "linear":
        keys = linear_keys(aligned_model)
        merged_names = [n for n in merged_names if n in keys]
    slot = {n: (num_blocks if block_of(n, num_layers, num_blocks) is None else block_of(n, num_layers, num_blocks))
            for n in merged_names}

    stats = TruncationStats()
    examples = [tokenize_text(tokenizer, r, max_length, max_prompt_length, stats)
                for r in rows]
    examples = [e for e in examples if e is not None]
    if not examples:
        raise ValueError(f"HMA: no usable (prompt, response) rows to learn the ratios from ({stats.summary()})")

    device = next(aligned_model.parameters()).device
    flags = {m: (m.training, [p.requires_grad for p in m.parameters()]) for m in (pre_model, aligned_model)}
    s = torch.zeros(num_blocks, device=device, requires_grad=True)
    optimizer = torch.optim.AdamW([s], lr=lr, weight_decay=0.0)
    total = epochs * math.ceil(len(examples) / batch_size)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=int(warmup_ratio * total),
                              num_training_steps=total)
    try:
        for m in (pre_model, aligned_model):
            m.eval()
            m.requires_grad_(False)
        scorer = _ResponseLogps(aligned_model)
        for step, chunk in enumerate(_batches(examples, batch_size, epochs, seed)):
            batch = collate_sequences([e["prompt_ids"] for e in chunk], [e["response_ids"] for e in chunk],
                                      tokenizer.pad_token_id)
            batch = to_device(batch, device)
            ratios = hma_ratios(s, alpha, eps, bound)
            per_slot = torch.cat([ratios, ratios.new_tensor([alpha])])
            params = {}
            for name in merged_names:
                r = per_slot[slot[name]].to(aligned_params[name].dtype)
                params[name] = r * aligned_params[name] + (1 - r) * pre_params[name].to(aligned_params[name].device)
            # the aligned architecture on the merged weights, scored by the fused response log-probs
            logps, n_tokens = functional_call(scorer, {f"model.{k}": v for k, v in params.items()}, args=(batch,),
                                              strict=False)
            loss = -logps.sum() / n_tokens.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if history is not None:
                history.append({"step": step, "loss": float(loss.detach()), "ratios": ratios.detach().tolist()})
    finally:
        for m, (training, requires) in flags.items():
            m.train(training)
            for p, flag in zip(m.parameters(), requires):
                p.requires_grad_(flag)
    with torch.no_grad():
        return [float(r) for r in hma_ratios(s.detach(), alpha, eps, bound)]

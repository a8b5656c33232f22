"""A model run on a batch, reduced to what the losses and metrics use.

Every place that scores responses (the objectives, evaluation, the alignment-tax metrics, HMA's ratio learning,
the token-level inspector) goes through these functions, so there is one definition of "the log-probability of a
response" in alignlab. A batch is a dict with ``input_ids``, ``attention_mask`` and HF-style ``labels`` (prompt and
padding set to -100, as alignlab.data.tokenize builds them), already on the model's device (:func:`to_device`).
A packed batch (alignlab.data.tokenize.pack) has several sequences per row: ``position_ids`` restart at each
sequence, ``attention_mask`` is absent (transformers then keeps the sequences apart) and ``sequence_index`` says
which sequence each token belongs to.

The fast path: the model's backbone runs on the batch, and its output head projects to the vocabulary only at the
positions that predict response tokens, fused with the log-softmax and KL terms (alignlab.losses.fused), so no
[B, T, V] tensor exists in a training step. The head is the model's own (:func:`output_head`, checked against the
model's forward by :func:`check_output_head`).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from alignlab.data.tokenize import IGNORE_INDEX
from alignlab.losses.fused import Head, fused_aligndistil, fused_logps_and_kl, fused_token_logps

CHUNK = 1024  # positions per vocabulary-sized chunk


@contextmanager
def eval_mode(*models):
    """The models in eval mode (no dropout) inside the block, each back in the mode it came in afterwards."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield models
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def to_device(batch: dict, device) -> dict:
    """The batch's tensors on `device` (non-tensor entries such as ``num_pairs`` are kept as they are)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def model_inputs(batch: dict) -> dict:
    """What the model itself reads from a batch (padded: the attention mask; packed: the position ids)."""
    inputs = {"input_ids": batch["input_ids"], "use_cache": False}
    for key in ("attention_mask", "position_ids"):
        if batch.get(key) is not None:
            inputs[key] = batch[key]
    return inputs


def logits_of(model, batch: dict) -> torch.Tensor:
    """[B, T, V] logits of the whole batch (evaluation and the model-agnostic paths; training uses the fused ones)."""
    return model(**model_inputs(batch)).logits


# ---- where the responses are -------------------------------------------------------------------------------------
@dataclass
class Responses:
    """The positions of a batch that predict response tokens, in the shifted frame (position t predicts t + 1)."""

    rows: torch.Tensor        # [N] batch row of each position
    cols: torch.Tensor        # [N] column of the predicting position
    targets: torch.Tensor     # [N] the response token it predicts
    sequence: torch.Tensor    # [N] which sequence of the batch the token belongs to
    n_sequences: int

    def per_sequence(self, values: torch.Tensor) -> torch.Tensor:
        """sum over each sequence's positions (differentiable)."""
        return values.new_zeros(self.n_sequences).index_add(0, self.sequence, values)

    def n_tokens(self, dtype=torch.float32) -> torch.Tensor:
        """|y| per sequence."""
        return self.per_sequence(torch.ones_like(self.targets, dtype=dtype))


def responses(batch: dict) -> Responses:
    labels = batch["labels"][:, 1:]
    rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
    index = batch.get("sequence_index")
    sequence = rows if index is None else index[:, 1:][rows, cols]
    n_sequences = int(batch.get("num_sequences", labels.shape[0]))
    return Responses(rows, cols, labels[rows, cols], sequence, n_sequences)


# ---- the output head -------------------------------------------------------------------------------------------
def output_head(model) -> Head:
    """The model's output head as the fused functions apply it: the LM head's weight and bias, then the
    architecture's logit scaling (Cohere multiplies by logit_scale, Granite divides by logits_scaling) and final
    soft-capping (Gemma 2: cap * tanh(z / cap))."""
    head, config = model.get_output_embeddings(), model.config
    scale = float(getattr(config, "logit_scale", None) or 1.0)
    if getattr(config, "logits_scaling", None):
        scale /= float(config.logits_scaling)
    return Head(head.weight, head.bias, scale, getattr(config, "final_logit_softcapping", None) or None)


def output_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The model's own output head on hidden states ([..., V] logits), through the head module (so hooks such as
    DeepSpeed ZeRO-3's parameter gathering run), then its scaling and soft-capping (:func:`output_head`)."""
    head = output_head(model)
    logits = model.get_output_embeddings()(hidden)
    if head.scale != 1.0:
        logits = logits * head.scale
    if head.softcap:
        logits = torch.tanh(logits / head.softcap) * head.softcap
    return logits


@torch.no_grad()
def check_output_head(model, name: str) -> None:
    """ConfigError (naming `name` and the architecture) when the head of :func:`output_head` on the backbone's hidden
    states does not give the model's own logits, i.e. the architecture does something after its head that alignlab
    does not reproduce: projecting at selected positions would then silently give other numbers."""
    from alignlab.errors import ConfigError

    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.arange(1, 6, device=device_of(model)).remainder(max(vocab, 1))[None]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with eval_mode(model):
        own = logits_of(model, batch).float()
        ours = output_logits(model, backbone(model, batch)).float()
    if not torch.allclose(own, ours, rtol=1e-3, atol=1e-3 * max(1.0, own.abs().max().item())):
        raise ConfigError(f"{name}: the {model.config.model_type} architecture changes its logits after the output "
                          f"head in a way alignlab does not reproduce (max difference "
                          f"{(own - ours).abs().max().item():.3g}), so logits at selected positions would be wrong; "
                          f"supported: plain heads, logit_scale, logits_scaling, final_logit_softcapping")


def _fusable(model) -> bool:
    """Whether the head's parameters can be read directly: not under DeepSpeed ZeRO-3, whose partitioned
    parameters are only gathered inside a module's forward (then the head module is called instead)."""
    return not any(hasattr(p, "ds_id") for p in model.get_output_embeddings().parameters())


# ---- model -> response-level quantities -----------------------------------------------------------------------
def backbone(model, batch: dict) -> torch.Tensor:
    """[B, T, H] hidden states of the model's backbone (everything before the output head)."""
    return model.base_model(**model_inputs(batch)).last_hidden_state


def hidden_at(model, batch: dict, where: Responses) -> torch.Tensor:
    """[N, H] hidden states at the positions that predict the response tokens."""
    return backbone(model, batch)[:, :-1][where.rows, where.cols]


def _token_logps(model, h: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
    if _fusable(model):
        return fused_token_logps(h, output_head(model), targets, chunk_size)
    z = output_logits(model, h).float()  # ZeRO-3: through the head module, [N, V] held for autograd
    return z.gather(1, targets[:, None]).squeeze(1) - z.logsumexp(-1)


def response_logps(model, batch: dict, chunk_size: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_t m_t log model(y_t|s_t), |y|) per sequence of the batch: the summed log-probability of each response.
    Differentiable for a trainable model; call under torch.no_grad() for a frozen one."""
    where = responses(batch)
    lp = _token_logps(model, hidden_at(model, batch, where), where.targets, chunk_size)
    return where.per_sequence(lp), where.n_tokens(lp.dtype)


def response_logps_and_kl(policy, reference, batch: dict,
                          chunk_size: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sequence: (log pi(y), log ref(y), SeqKL(y) = sum_t KL(ref(.|s_t) || pi(.|s_t))), TDPO's terms (METHODS
    section 2). Gradients reach the policy only."""
    where = responses(batch)
    with torch.no_grad():
        h_ref = hidden_at(reference, batch, where)
    h = hidden_at(policy, batch, where)
    if _fusable(policy) and _fusable(reference):
        lp, ref_lp, kl = fused_logps_and_kl(h, output_head(policy), h_ref, output_head(reference), where.targets,
                                            chunk_size)
    else:
        from alignlab.losses import token_logps_and_kl

        logits = output_logits(policy, h)[:, None]
        with torch.no_grad():
            ref_logits = output_logits(reference, h_ref)[:, None]
        lp, ref_lp, kl = token_logps_and_kl(logits, ref_logits, where.targets[:, None], chunk_size=chunk_size)
    return where.per_sequence(lp), where.per_sequence(ref_lp), where.per_sequence(kl)


def distillation_terms(student, dpo_model, other_model, batch: dict, teacher: str, beta: float, beta0: float,
                       r: float, eps: float, chunk_size: int = CHUNK) -> dict[str, torch.Tensor]:
    """AlignDistil's per-sequence terms (METHODS section 3), with the teacher built at each response position from
    the DPO model and the other model (reverse DPO, or the reference for dpo_ref):

    - losses [S]: (1/|y|) sum_t w_t KL(pi || pi*) (the only entry with a gradient, to the student);
    - alpha_mean, weight_mean: mean a_t and w_t over the batch's response positions;
    - kl_teacher, kl_dpo, kl_other [S]: per-token means of KL(pi || pi*), KL(pi || dpo), KL(pi || other);
    - dpo_logps, other_logps [S]: log p_dpo(y) and log p_other(y) (the contrastive reward's terms);
    - n_tokens [S]: |y|."""
    where = responses(batch)
    with torch.no_grad():
        h_dpo, h_other = hidden_at(dpo_model, batch, where), hidden_at(other_model, batch, where)
        dpo_logps = where.per_sequence(_token_logps(dpo_model, h_dpo, where.targets, chunk_size))
        other_logps = where.per_sequence(_token_logps(other_model, h_other, where.targets, chunk_size))
    h = hidden_at(student, batch, where)
    spec = (teacher, beta, beta0, r, eps)
    if _fusable(student) and _fusable(dpo_model) and _fusable(other_model):
        wkl, kl_t, kl_dpo, kl_other, alpha, weight = fused_aligndistil(
            h, output_head(student), h_dpo, output_head(dpo_model), h_other, output_head(other_model), *spec,
            chunk_size=chunk_size)
    else:  # ZeRO-3: logits through the head modules; each position is a one-token "sequence" of aligndistil_loss
        from alignlab.losses import aligndistil_loss

        with torch.no_grad():
            z_dpo, z_other = output_logits(dpo_model, h_dpo), output_logits(other_model, h_other)
        out = aligndistil_loss(output_logits(student, h)[:, None], z_dpo, z_other, where.targets[:, None], *spec,
                               chunk_size=chunk_size, teacher_at_positions=True)
        wkl, kl_t, kl_dpo, kl_other = out["losses"], out["kl_teacher"], out["kl_dpo"], out["kl_other"]
        alpha, weight = out["alpha_mean"].expand(wkl.shape), out["weight_mean"].expand(wkl.shape)
    n_tokens = where.n_tokens(wkl.dtype).clamp(min=1)
    n_positions = max(where.targets.numel(), 1)
    return {"losses": where.per_sequence(wkl) / n_tokens, "alpha_mean": alpha.sum() / n_positions,
            "weight_mean": weight.sum() / n_positions, "kl_teacher": where.per_sequence(kl_t) / n_tokens,
            "kl_dpo": where.per_sequence(kl_dpo) / n_tokens, "kl_other": where.per_sequence(kl_other) / n_tokens,
            "dpo_logps": dpo_logps, "other_logps": other_logps, "n_tokens": where.n_tokens()}


@torch.no_grad()
def packs_correctly(model) -> bool:
    """Whether the model keeps packed sequences apart (its attention builds the block-diagonal mask from
    position_ids, as transformers' create_causal_mask does for eager, sdpa, flex and flash attention): the response
    log-probs of a small batch packed several per row equal those of the same batch padded one per row."""
    from alignlab.data.tokenize import collate_sequences, pack_sequences

    vocab = model.get_output_embeddings().weight.shape[0]
    prompts, answers = [[1, 2, 3], [4], [5, 6]], [[7, 8], [9, 10, 11], [12]]
    prompts, answers = ([[t % vocab for t in s] for s in seqs] for seqs in (prompts, answers))
    device = device_of(model)
    with eval_mode(model):
        padded, _ = response_logps(model, to_device(collate_sequences(prompts, answers, 0), device))
        packed, _ = response_logps(model, to_device(pack_sequences(prompts, answers, 0, width=16), device))
    return bool(torch.allclose(padded.float(), packed.float(), rtol=1e-3, atol=1e-3))


@torch.no_grad()
def logits_at_positions(model, batch: dict, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[N, V] logits of a frozen `model` at the (row, col) positions of the shifted sequence (position t predicts
    token t + 1): the backbone runs on the whole batch, the model's own output head only where it is needed."""
    return output_logits(model, backbone(model, batch)[:, :-1][rows, cols])

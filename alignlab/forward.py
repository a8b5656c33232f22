"""A model run on a batch, reduced to what the losses and metrics use.

Every place that scores responses (the objectives, evaluation, the alignment-tax metrics, HMA's ratio learning,
the token-level inspector) goes through these functions, so there is one definition of "the log-probability of a
response" in alignlab. A batch is a dict with ``input_ids``, ``attention_mask`` and HF-style ``labels`` (prompt and
padding set to -100, as alignlab.data.tokenize builds them), already on the model's device (:func:`to_device`).
``model`` is anything called like a Hugging Face causal LM (``model(input_ids=..., attention_mask=...)`` returning
``.logits``).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from alignlab.losses import sequence_logps, shift_for_next_token


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


def logits_of(model, batch: dict) -> torch.Tensor:
    """[B, T, V] logits of the whole batch."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits


def response_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_t m_t log model(y_t|s_t), |y|) per row of the batch: the summed log-probability of each response."""
    return sequence_logps(*shift_for_next_token(logits_of(model, batch), batch["labels"]))


def output_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The model's own output head on hidden states, as its forward applies it: the LM head, then the
    architecture's logit scaling (Cohere multiplies by logit_scale, Granite divides by logits_scaling) and final
    soft-capping (Gemma 2: cap * tanh(z / cap)). :func:`check_output_head` verifies a model against its forward."""
    logits = model.get_output_embeddings()(hidden)
    config = model.config
    if getattr(config, "logit_scale", None):
        logits = logits * config.logit_scale
    if getattr(config, "logits_scaling", None):
        logits = logits / config.logits_scaling
    if getattr(config, "final_logit_softcapping", None):
        logits = torch.tanh(logits / config.final_logit_softcapping) * config.final_logit_softcapping
    return logits


@torch.no_grad()
def check_output_head(model, name: str) -> None:
    """ConfigError (naming `name` and the architecture) when :func:`output_logits` on the backbone's hidden states
    does not give the model's own logits, i.e. the architecture does something after its head that alignlab does not
    reproduce: then projecting at selected positions would silently give other numbers."""
    from alignlab.errors import ConfigError

    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.arange(1, 6, device=device_of(model)).remainder(vocab)[None]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with eval_mode(model):
        own = logits_of(model, batch).float()
        ours = output_logits(model, model.base_model(**batch, use_cache=False).last_hidden_state).float()
    if not torch.allclose(own, ours, rtol=1e-3, atol=1e-3 * max(1.0, own.abs().max().item())):
        raise ConfigError(f"{name}: the {model.config.model_type} architecture changes its logits after the output "
                          f"head in a way alignlab does not reproduce (max difference "
                          f"{(own - ours).abs().max().item():.3g}), so logits at selected positions would be wrong; "
                          f"supported: plain heads, logit_scale, logits_scaling, final_logit_softcapping")


@torch.no_grad()
def logits_at_positions(model, batch: dict, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[N, V] logits of a frozen `model` at the (row, col) positions of the shifted sequence (position t predicts
    token t + 1): the backbone runs on the whole batch, the model's own output head (:func:`output_logits`) only
    where it is needed."""
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              use_cache=False).last_hidden_state
    return output_logits(model, hidden[:, :-1][rows, cols])

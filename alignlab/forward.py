"""A model run on a batch, reduced to what the losses and metrics use.

Every place that scores responses (the objectives, evaluation, the alignment-tax metrics, HMA's ratio learning,
the token-level inspector) goes through these functions, so there is one definition of "the log-probability of a
response" in alignlab. A batch is a dict with ``input_ids``, ``attention_mask`` and HF-style ``labels`` (prompt and
padding set to -100, as alignlab.data.tokenize builds them), already on the model's device (:func:`to_device`).
``model`` is anything called like a Hugging Face causal LM (``model(input_ids=..., attention_mask=...)`` returning
``.logits``).
"""
from __future__ import annotations

import torch

from alignlab.losses import sequence_logps, shift_for_next_token


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


@torch.no_grad()
def logits_at_positions(model, batch: dict, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[N, V] logits of a frozen `model` at the (row, col) positions of the shifted sequence (position t predicts
    token t + 1): the backbone runs on the whole batch, the vocabulary projection only where it is needed."""
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              use_cache=False).last_hidden_state
    return model.get_output_embeddings()(hidden[:, :-1][rows, cols])

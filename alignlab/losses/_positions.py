"""Helpers shared by the chunked token-level losses.

Token-level quantities (log pi(y_t|s_t), KL_t, H_t, the AlignDistil KL) need a vocabulary-sized row per response
position. Materialising them for the whole [B, T, V] batch costs several copies of the logits in float32, which is
what makes naive TDPO and distillation run out of memory long before DPO does. Instead we select only the
response positions (m_t = 1), walk over them in chunks, and scatter the per-position results back into one value
per sequence; at most one chunk's worth of [chunk, V] float32 temporaries exists at a time.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import torch


class Positions(NamedTuple):
    """The response positions of a batch (m_t = 1), in row-major order."""

    rows: torch.Tensor  # [N] sequence index of each position
    cols: torch.Tensor  # [N] time index of each position
    targets: torch.Tensor  # [N] label y_t at each position
    n_tokens: torch.Tensor  # [B] float, |y| per sequence
    batch_size: int


def select_positions(labels: torch.Tensor, ignore_index: int) -> Positions:
    if labels.dim() != 2:
        raise ValueError(f"labels must be [B, T], got shape {tuple(labels.shape)}")
    mask = labels != ignore_index
    rows, cols = mask.nonzero(as_tuple=True)
    # Row/column indexing (not a flatten) so a non-contiguous view such as logits[:, :-1] is never copied whole.
    return Positions(rows, cols, labels[rows, cols], mask.sum(1).to(torch.float32), labels.shape[0])


def check_logits(logits: torch.Tensor, labels: torch.Tensor, name: str = "logits") -> None:
    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"{name} must be [B, T, V] matching labels [B, T]; got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )


def chunks(n: int, chunk_size: int) -> Iterator[slice]:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, n, chunk_size):
        yield slice(start, min(start + chunk_size, n))


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 for bf16/fp16/fp32 logits (log-probs in half precision are too coarse); float64 stays float64."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def sum_per_sequence(values: torch.Tensor, pos: Positions) -> torch.Tensor:
    """sum_t m_t values_t for each sequence (differentiable scatter-add)."""
    out = values.new_zeros(pos.batch_size)
    return out.index_add(0, pos.rows, values)

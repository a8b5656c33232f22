"""Which ratio each tensor of a checkpoint is merged with: HMA's layer blocks (METHODS.md section 4).

The transformer layers are split into K contiguous blocks, each merged with its own ratio alpha_k (the share of
the ALIGNED model, as everywhere in alignlab). Embeddings take block 1's ratio; the final norm and the LM head take
the mean ratio alpha.

Blocks ("as even as possible", METHODS' example 26 layers, K=3 -> 1-8, 9-17, 18-26): with q, r = divmod(L, K),
the first K - r blocks hold q consecutive layers and the last r blocks q + 1, so the sizes differ by at most one
and the larger blocks come last (26 = 8 + 9 + 9).

Every merge goes through one per-tensor ratio function ``ratio_of(key) -> alpha_key`` (:func:`ratio_function`): a
constant for plain averaging, :func:`block_ratio_function` for HMA. This module sits below both
:mod:`alignlab.merge.average` and :mod:`alignlab.merge.hma`.
"""
from __future__ import annotations

import bisect
import logging
import math
import re
from typing import Callable, Sequence

from alignlab.errors import ConfigError
from alignlab.merge.checks import check_alpha

__all__ = [
    "ARCHITECTURES", "RatioFn", "block_of", "block_ranges", "block_ratio_function", "check_block_ratios",
    "check_num_blocks", "layer_block", "ratio_function",
]

RatioFn = Callable[[str], float]

# name patterns per architecture family, matched at the start of a key or after a "." (a wrapper's prefix)
ARCHITECTURES = {
    "gpt_neox": {"layers": r"gpt_neox\.layers\.(\d+)\.", "embeddings": (r"gpt_neox\.embed_in\.",),
                 "final": (r"gpt_neox\.final_layer_norm\.", r"embed_out\.", r"lm_head\.")},
    "gpt2": {"layers": r"transformer\.h\.(\d+)\.", "embeddings": (r"transformer\.wte\.", r"transformer\.wpe\."),
             "final": (r"transformer\.ln_f\.", r"lm_head\.")},
    "llama": {"layers": r"model\.layers\.(\d+)\.", "embeddings": (r"model\.embed_tokens\.",),
              "final": (r"model\.norm\.", r"lm_head\.")},
}
_ANCHOR = r"(?:^|\.)"
_LAYER_RES = [re.compile(_ANCHOR + a["layers"]) for a in ARCHITECTURES.values()]
_EMBED_RES = [re.compile(_ANCHOR + p) for a in ARCHITECTURES.values() for p in a["embeddings"]]
_FINAL_RES = [re.compile(_ANCHOR + p) for a in ARCHITECTURES.values() for p in a["final"]]
_SUPPORTED = ("GPTNeoX (gpt_neox.layers.{i}., gpt_neox.embed_in, gpt_neox.final_layer_norm, embed_out/lm_head), "
              "GPT-2 (transformer.h.{i}., transformer.wte/wpe, transformer.ln_f, lm_head), "
              "Llama-style (model.layers.{i}., model.embed_tokens, model.norm, lm_head)")

log = logging.getLogger(__name__)


def check_num_blocks(num_blocks, num_layers: int | None = None) -> int:
    """merge.num_blocks as a positive integer, at most the model's number of layers (when known)."""
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise ConfigError(f"merge.num_blocks={num_blocks!r} must be a positive integer")
    if num_layers is not None and num_blocks > num_layers:
        raise ConfigError(f"merge.num_blocks={num_blocks} exceeds the model's {num_layers} layers: a block would be "
                          f"empty")
    return num_blocks


def _block_starts(num_layers: int, num_blocks: int) -> list[int]:
    """0-based first layer of each block, plus num_layers: K-r blocks of q layers then r blocks of q+1
    (q, r = divmod(L, K)), so the sizes differ by at most one and the larger blocks come last."""
    check_num_blocks(num_blocks, num_layers)
    q, r = divmod(num_layers, num_blocks)
    starts = [0]
    for k in range(num_blocks):
        starts.append(starts[-1] + q + (1 if k >= num_blocks - r else 0))
    return starts


def layer_block(layer: int, num_layers: int, num_blocks: int) -> int:
    """0-based block of the 0-based layer (contiguous, as even as possible, larger blocks last)."""
    if not 0 <= layer < num_layers:
        raise ValueError(f"layer {layer} is outside the model's {num_layers} layers")
    return bisect.bisect_right(_block_starts(num_layers, num_blocks), layer) - 1


def block_ranges(num_layers: int, num_blocks: int) -> list[tuple[int, int]]:
    """Each block's first and last layer, 1-based inclusive (26 layers, K=3 -> [(1, 8), (9, 17), (18, 26)])."""
    b = _block_starts(num_layers, num_blocks)
    return [(b[k] + 1, b[k + 1]) for k in range(num_blocks)]


def block_of(key: str, num_layers: int, num_blocks: int) -> int | None:
    """The 0-based block whose ratio tensor `key` takes; None for the final norm and LM head (mean ratio alpha).

    Transformer layer i -> its block; embeddings -> block 0. Raises ValueError for a key of no supported
    architecture (naming the key and the supported ones)."""
    for regex in _LAYER_RES:
        m = regex.search(key)
        if m:
            layer = int(m.group(1))
            if layer >= num_layers:
                raise ValueError(f"HMA: tensor {key!r} belongs to layer {layer} but the model has {num_layers} layers")
            return layer_block(layer, num_layers, num_blocks)
    if any(r.search(key) for r in _EMBED_RES):
        check_num_blocks(num_blocks, num_layers)
        return 0
    if any(r.search(key) for r in _FINAL_RES):
        return None
    raise ValueError(f"HMA cannot place tensor {key!r} in a block: it matches none of the supported architectures: "
                     f"{_SUPPORTED}")


# ---- ratios --------------------------------------------------------------------------------------------------------
def check_block_ratios(block_ratios: Sequence[float], num_blocks: int | None = None,
                       alpha: float | None = None) -> list[float]:
    """Given ratios as floats, or a ConfigError naming merge.block_ratios: K of them (when K is given), each in
    [0, 1], and mean equal to merge.alpha when alpha is given (the mean ratio is alpha by definition)."""
    try:
        ratios = [float(r) for r in block_ratios]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"merge.block_ratios={block_ratios!r} must be a list of numbers in [0, 1]") from err
    if not ratios:
        raise ConfigError("merge.block_ratios is empty: give one ratio per block, e.g. [0.2, 0.4, 0.6]")
    if num_blocks is not None and len(ratios) != num_blocks:
        raise ConfigError(f"merge.block_ratios has {len(ratios)} ratios but merge.num_blocks={num_blocks}: give one "
                          f"ratio per block")
    for k, r in enumerate(ratios):
        if not (math.isfinite(r) and 0.0 <= r <= 1.0):
            raise ConfigError(f"merge.block_ratios[{k}]={r} must be in [0, 1] (the share of the aligned model)")
    if alpha is not None:
        alpha = check_alpha(alpha)
        mean = sum(ratios) / len(ratios)
        if abs(mean - alpha) > 1e-6:
            raise ConfigError(f"merge.block_ratios={ratios} have mean {mean:.6g} but merge.alpha={alpha}: the mean "
                              f"ratio is alpha (it merges the final norm and the LM head); set merge.alpha={mean:.6g} "
                              f"or merge.alpha=null")
    return ratios


def block_ratio_function(block_ratios: Sequence[float], num_layers: int, alpha: float | None = None) -> RatioFn:
    """key -> ratio: its block's ratio, block 1's for embeddings, alpha (default: the mean) for norm and head."""
    ratios = check_block_ratios(block_ratios, alpha=alpha)
    head = float(alpha) if alpha is not None else sum(ratios) / len(ratios)
    check_num_blocks(len(ratios), num_layers)

    def ratio_of(key: str) -> float:
        block = block_of(key, num_layers, len(ratios))
        return head if block is None else ratios[block]

    return ratio_of


def ratio_function(alpha: float | None, block_ratios: Sequence[float] | None, num_layers: int | None,
                   tied_embeddings: bool = False) -> RatioFn:
    """The constant alpha, or (when ``block_ratios`` is given) HMA's per-block ratios of a model with
    ``num_layers`` transformer layers (then alpha, if given, must be their mean).

    With tied input and output embeddings (GPT-2) the LM head is the input embedding tensor, merged once with
    block 1's ratio (METHODS section 4), not the mean ratio an untied head takes: the log says so."""
    if block_ratios is None:
        if alpha is None:
            raise ConfigError("merge.alpha is required (the share of the aligned model, in [0, 1])")
        alpha = check_alpha(alpha)
        return lambda key: alpha
    if num_layers is None:
        raise ConfigError("HMA block ratios need the number of transformer layers")
    ratio_of = block_ratio_function(block_ratios, num_layers, alpha)
    if tied_embeddings:
        head = float(alpha) if alpha is not None else sum(block_ratios) / len(block_ratios)
        log.warning("hma: the model ties its input and output embeddings, so the LM head takes block 1's ratio "
                    "%.4g with the embeddings (an untied head would take the mean ratio %.4g)", float(block_ratios[0]),
                    head)
    return ratio_of

"""Weight averaging of a pre-alignment and an aligned model (METHODS.md section 4).

Convention: alpha is always the share of the ALIGNED model,

    theta(alpha) = alpha * theta_aligned + (1 - alpha) * theta_pre,

so alpha = 1 is the aligned model and alpha = 0 the pre-alignment (SFT) model. Every merge here goes through one
mechanism, :func:`merge_state_dicts` / :func:`merge_checkpoints` with a *per-tensor ratio function*
``ratio_of(key) -> alpha_key`` (:mod:`alignlab.merge.blocks`): plain averaging uses a constant, HMA
(:mod:`alignlab.merge.hma`) a per-block one. Checkpoints are streamed tensor by tensor
(:mod:`alignlab.merge.safetensors_stream`).

Rules shared by every entry point:

* endpoints are exact: a tensor whose ratio is 1 is the aligned tensor itself, ratio 0 the pre tensor itself
  (the same tensor objects in memory, no arithmetic; clone before mutating them in place);
* in between, the merge is computed in float32 at least (float64 stays float64) and cast to the aligned tensor's
  dtype; non-floating tensors (integer / bool buffers) are taken from the aligned model;
* ``scope="linear"`` merges only the weights and biases of linear layers, everything else (embeddings, norms)
  comes from the aligned model, whatever alpha is. Which tensors are "linear" is decided

  - by module type when a model is at hand (:func:`linear_keys`: ``nn.Linear`` and GPT-2's ``Conv1D``), or
  - by a name/shape rule on state dicts and checkpoints (:func:`linear_keys_by_rule`): a 2-D tensor whose key
    ends in ``.weight`` and whose module is not an embedding (module name ``embed_in``, ``embed_tokens``, ``wte``,
    ``wpe``, ``word_embeddings``, ``position_embeddings``, ``token_type_embeddings``, ``embed_positions``,
    ``shared``), plus the ``.bias`` of the same module. GPTNeoX's LM head ``embed_out`` is a linear layer.

  Both rules agree on GPTNeoX, GPT-2 and Llama (tests check it); ``linear_keys=`` overrides either;
* tied tensors (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) are merged once, with the ratio and
  the scope decision of the first key of the tie in state-dict order (the embedding), so that loading the merged
  state dict gives the same result whichever of the tied keys is copied last.

Validation: alpha outside [0, 1] raises :class:`~alignlab.errors.ConfigError` naming ``merge.alpha``; different
keys or shapes raise :class:`~alignlab.merge.checks.MergeMismatchError` naming the first offending tensor with both
shapes (:mod:`alignlab.merge.checks`).
"""
from __future__ import annotations

import json
import re
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable, Mapping

import torch

from alignlab.errors import ConfigError, ModelLoadError
from alignlab.merge.blocks import RatioFn, ratio_function
from alignlab.merge.checks import check_alpha, check_compatible, check_scope, shape_of
from alignlab.merge.safetensors_stream import (INDEX_NAME, SINGLE_NAME, CheckpointReader, StreamingSafetensorsWriter,
                                               itemsize)

__all__ = ["EMBEDDING_MODULES", "average", "linear_keys", "linear_keys_by_rule", "merge_checkpoints", "merge_models",
           "merge_state_dicts", "merge_tensor"]

EMBEDDING_MODULES = ("embed_in", "embed_tokens", "wte", "wpe", "word_embeddings", "position_embeddings",
                     "token_type_embeddings", "embed_positions", "shared")
WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".index.json")
MERGE_INFO_NAME = "merge_config.json"


# ---- which tensors are "linear" ----------------------------------------------------------------------------------
def _module_of(key: str) -> tuple[str, str]:
    module, _, leaf = key.rpartition(".")
    return module, leaf


def _is_embedding_module(module: str) -> bool:
    return module.rpartition(".")[2] in EMBEDDING_MODULES


def linear_keys_by_rule(shapes: Mapping[str, tuple]) -> set[str]:
    """The name/shape rule: 2-D ``*.weight`` tensors of non-embedding modules, and the ``*.bias`` beside them."""
    out = set()
    for key, shape in shapes.items():
        module, leaf = _module_of(key)
        if leaf == "weight" and len(shape_of(shape)) == 2 and not _is_embedding_module(module):
            out.add(key)
            bias = f"{module}.bias" if module else "bias"
            if bias in shapes:
                out.add(bias)
    return out


def linear_keys(model: torch.nn.Module) -> set[str]:
    """State-dict keys of the weights and biases of linear layers, by module type (nn.Linear, GPT-2's Conv1D).

    A linear weight tied to an embedding (GPT-2's LM head) is an embedding, not a linear layer."""
    linear_types: tuple[type, ...] = (torch.nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D
        linear_types += (Conv1D,)
    except ImportError:  # pragma: no cover
        pass
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    out = set()
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, linear_types):
            prefix = f"{name}." if name else ""
            if getattr(module, "weight", None) is not None and id(module.weight) not in embedding_params:
                out.add(prefix + "weight")
                if getattr(module, "bias", None) is not None:
                    out.add(prefix + "bias")
    return out


# ---- one tensor ----------------------------------------------------------------------------------------------------
def merge_tensor(pre: torch.Tensor, aligned: torch.Tensor, ratio: float) -> torch.Tensor:
    """ratio * aligned + (1 - ratio) * pre, in the aligned tensor's dtype. Exact (no arithmetic) at 0 and 1.

    Non-floating tensors are taken from the aligned side. A ratio outside [0, 1] extrapolates (only reachable
    through HMA with `bound=False`)."""
    if ratio == 1.0 or not aligned.is_floating_point():
        return aligned
    if ratio == 0.0:
        return pre if pre.dtype == aligned.dtype else pre.to(aligned.dtype)
    compute = torch.promote_types(torch.promote_types(aligned.dtype, pre.dtype), torch.float32)
    out = aligned.to(compute).mul(ratio)  # a new tensor: the input is never written
    out.add_(pre.to(device=aligned.device, dtype=compute), alpha=1.0 - ratio)
    return out.to(aligned.dtype)


# ---- state dicts ---------------------------------------------------------------------------------------------------
def _tie_groups(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """key -> the first key (state-dict order) of the group of keys that share one tensor."""
    first_of: dict[tuple, str] = {}
    canonical = {}
    for key, t in state_dict.items():
        if t.numel() == 0 or t.device.type == "meta":
            canonical[key] = key
            continue
        ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        canonical[key] = first_of.setdefault(ident, key)
    return canonical


def merge_state_dicts(pre_state_dict: Mapping[str, torch.Tensor], aligned_state_dict: Mapping[str, torch.Tensor],
                      ratio_of: RatioFn, scope: str = "all", linear_keys: Iterable[str] | None = None) -> dict:
    """The general merge: tensor ``key`` becomes ``merge_tensor(pre[key], aligned[key], ratio_of(key))``.

    With scope="linear", tensors outside ``linear_keys`` (default: :func:`linear_keys_by_rule`) are the aligned
    ones. Keys keep the aligned state dict's order; tied keys share one merged tensor."""
    check_scope(scope)
    check_compatible({k: v.shape for k, v in pre_state_dict.items()},
                     {k: v.shape for k, v in aligned_state_dict.items()})
    if scope == "linear":
        linear = set(linear_keys) if linear_keys is not None else \
            linear_keys_by_rule({k: v.shape for k, v in aligned_state_dict.items()})
    canonical = _tie_groups(aligned_state_dict)
    if scope == "linear":  # a tie group is linear only if all of its keys are (a tied LM head is an embedding)
        group_linear: dict[str, bool] = {}
        for key, first in canonical.items():
            group_linear[first] = group_linear.get(first, True) and key in linear
    out, done = {}, {}
    for key, aligned in aligned_state_dict.items():
        first = canonical[key]
        if first in done:
            out[key] = done[first]
            continue
        if scope == "linear" and not group_linear[first]:
            merged = aligned
        else:
            merged = merge_tensor(pre_state_dict[key], aligned, float(ratio_of(first)))
        out[key] = done[first] = merged
    return out


def average(pre_state_dict: Mapping[str, torch.Tensor], aligned_state_dict: Mapping[str, torch.Tensor],
            alpha: float, scope: str = "all", linear_keys: Iterable[str] | None = None) -> dict:
    """theta = alpha * aligned + (1 - alpha) * pre, tensor by tensor (alpha = share of the ALIGNED model).

    scope: "all" tensors, or "linear" (weights and biases of linear layers; the rest from the aligned model).
    ``linear_keys`` overrides the name/shape rule (pass :func:`linear_keys` (model) to decide by module type).
    At alpha 0 and 1 the returned values are the input tensors themselves (bit-exact, no arithmetic)."""
    alpha = check_alpha(alpha)
    return merge_state_dicts(pre_state_dict, aligned_state_dict, lambda key: alpha, scope, linear_keys)


def merge_models(pre_model: torch.nn.Module, aligned_model: torch.nn.Module, alpha: float | None = None,
                 scope: str = "all", block_ratios: list[float] | None = None) -> torch.nn.Module:
    """In memory: load the merge of the two models' weights into ``aligned_model`` (modified in place and
    returned). ``block_ratios`` switches to HMA's per-block ratios (then alpha, if given, must be their mean);
    scope="linear" decides by module type."""
    ratio_of = ratio_function(alpha, block_ratios, aligned_model.config.num_hidden_layers,
                              bool(getattr(aligned_model.config, "tie_word_embeddings", False)))
    keys = linear_keys(aligned_model) if scope == "linear" else None
    with torch.no_grad():
        merged = merge_state_dicts(pre_model.state_dict(), aligned_model.state_dict(), ratio_of, scope, keys)
        aligned_model.load_state_dict(merged)
    return aligned_model


# ---- streaming over safetensors checkpoints -----------------------------------------------------------------------
# keys that old checkpoints store but current transformers does not (non-persistent buffers): ignored on the pre side
_IGNORED_PRE_ONLY = re.compile(r"(\.attn\.(masked_)?bias|\.attention\.(masked_)?bias|rotary_emb\.inv_freq)$")
_BASE_PREFIXES = ("transformer.", "gpt_neox.", "model.")


def _pre_name_for(key: str, pre_keys: set[str]) -> str | None:
    """The pre checkpoint's name for the aligned checkpoint's `key`: identical, or a known rename between
    transformers versions (GPTNeoX `embed_out` <-> `lm_head`, with or without the base model prefix)."""
    candidates = [key]
    if key.startswith("lm_head."):
        candidates.append("embed_out." + key[len("lm_head."):])
    if key.startswith("embed_out."):
        candidates.append("lm_head." + key[len("embed_out."):])
    for prefix in _BASE_PREFIXES:
        if key.startswith(prefix):
            candidates.append(key[len(prefix):])
        candidates.append(prefix + key)
    return next((c for c in candidates if c in pre_keys), None)


def _local_dir(name_or_path, key: str) -> Path:
    """A local checkpoint directory; a hub id is resolved through the local Hugging Face cache (offline-safe)."""
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{key}={str(name_or_path)!r} is a file, not a checkpoint directory")
    try:
        from huggingface_hub import snapshot_download

        from alignlab.models import hub_offline

        return Path(snapshot_download(str(name_or_path), local_files_only=hub_offline(),
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja",
                                                      "tokenizer*"]))
    except Exception as err:  # noqa: BLE001 - any failure means "not available", with the reason attached
        raise ModelLoadError(f"{key}={str(name_or_path)!r} is not a local directory and could not be resolved as a "
                             f"hub checkpoint: {type(err).__name__}: {err}") from err


def merge_checkpoints(pre_dir, aligned_dir, out_dir, alpha: float | None = None, scope: str = "all",
                      block_ratios: list[float] | None = None, linear_keys: Iterable[str] | None = None,
                      ratio_of: RatioFn | None = None, num_layers: int | None = None,
                      copy_files: bool = True) -> Path:
    """Merge two Hugging Face safetensors checkpoints into ``out_dir``, streaming tensor by tensor.

    Each output tensor is read from both sides (``safe_open``, one tensor at a time), merged and appended to the
    output file, so the extra memory is a few tensors, never a whole model. Sharded checkpoints
    (``model.safetensors.index.json``) keep the aligned checkpoint's shard layout. Config, generation config and
    tokenizer files are copied from ``aligned_dir``, plus ``merge_config.json`` recording the merge; the result
    loads with ``AutoModelForCausalLM.from_pretrained(out_dir)``.

    The ratio of each tensor: ``ratio_of(key)`` if given; else HMA's per-block ratios when ``block_ratios`` is
    given (``num_layers`` defaults to the aligned config's ``num_hidden_layers``; ``alpha``, if given, must be
    their mean); else the constant ``alpha``. ``scope`` / ``linear_keys`` as in :func:`average` (name/shape rule).
    Keys are the aligned checkpoint's; a pre checkpoint written by another transformers version may name the
    GPTNeoX head ``embed_out`` or omit the base-model prefix (both are matched).
    """
    check_scope(scope)
    pre_path, aligned_path = _local_dir(pre_dir, "merge.pre"), _local_dir(aligned_dir, "merge.aligned")
    out_path = Path(out_dir).expanduser()
    for src in (pre_path, aligned_path):
        if out_path.resolve() == src.resolve():
            raise ConfigError(f"merge output directory {str(out_path)!r} is one of the inputs; choose another")
    if ratio_of is None:
        tied = False
        if block_ratios is not None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(str(aligned_path))
            num_layers = config.num_hidden_layers if num_layers is None else num_layers
            tied = bool(getattr(config, "tie_word_embeddings", False))
        ratio_of = ratio_function(alpha, block_ratios, num_layers, tied)
    elif alpha is not None:
        check_alpha(alpha)

    out_path.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        pre = CheckpointReader(pre_path, stack, "pre")
        aligned = CheckpointReader(aligned_path, stack, "aligned")
        pre_keys = set(pre.info)
        name_in_pre = {k: _pre_name_for(k, pre_keys) for k in aligned.info}
        renamed_pre = {}
        for key, pre_key in name_in_pre.items():
            if pre_key is not None:
                renamed_pre[key] = pre.info[pre_key][1]
        matched = set(name_in_pre.values())
        for key in pre.info:  # pre-only tensors other than stale buffers are a mismatch
            if key not in matched and not _IGNORED_PRE_ONLY.search(key):
                renamed_pre[key] = pre.info[key][1]
        check_compatible(renamed_pre, aligned.shapes(), f"pre ({pre_path})", f"aligned ({aligned_path})")

        shapes = aligned.shapes()
        linear = (set(linear_keys) if linear_keys is not None else linear_keys_by_rule(shapes)) \
            if scope == "linear" else None
        total = 0
        for f in aligned.files:
            keys = [k for k in aligned.handles[f].keys()]
            plan = [(k, aligned.info[k][0], aligned.info[k][1], itemsize(aligned.info[k][0])) for k in keys]
            metadata = {"format": "pt", **aligned.metadata(f)}
            writer = StreamingSafetensorsWriter(out_path / f, plan, metadata)
            try:
                for key in keys:
                    a = aligned.tensor(key)
                    if scope == "linear" and key not in linear:
                        merged = a
                    else:
                        merged = merge_tensor(pre.tensor(name_in_pre[key]), a, float(ratio_of(key)))
                    writer.write(key, merged)
                    del a, merged
            finally:
                writer.close()
            total += writer.total
        if aligned.index is not None:
            index = dict(aligned.index)
            index["metadata"] = {**index.get("metadata", {}), "total_size": total}
            (out_path / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        # a stale single file / index of another layout left in out_dir would confuse from_pretrained
        stale = SINGLE_NAME if aligned.index is not None else INDEX_NAME
        if (out_path / stale).exists():
            (out_path / stale).unlink()

    if copy_files:
        for item in aligned_path.iterdir():
            if item.is_file() and not item.name.endswith(WEIGHT_FILE_SUFFIXES) and item.name != MERGE_INFO_NAME:
                shutil.copy2(item, out_path / item.name)
    info = {"convention": "theta = alpha * aligned + (1 - alpha) * pre", "scope": scope,
            "alpha": None if alpha is None else float(alpha),
            "block_ratios": None if block_ratios is None else [float(r) for r in block_ratios],
            "pre": str(pre_path), "aligned": str(aligned_path)}
    (out_path / MERGE_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    return out_path

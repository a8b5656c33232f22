"""Loading the models of a run: the trainable policy, frozen copies (reference, teachers), and tokenizers.

A model entry (conf/model/*.yaml) either names weights (`name_or_path`: a hub id or a local directory) or asks
for `random_init: true`, which builds the exact architecture from the numbers in `architecture` without any
download (the embedded tiny model, and real-scale benchmarks on machines with no hub access).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from alignlab.errors import ConfigError, ModelLoadError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_REMOTE_CODE = {"trusted": False}


def trust_remote_code(trusted: bool) -> None:
    """model.trust_remote_code for every model and tokenizer the run loads from now on (policy, frozen models,
    reward models): False (the default) refuses architectures whose code lives in the model's repository."""
    _REMOTE_CODE["trusted"] = bool(trusted)


def remote_code_trusted() -> bool:
    return _REMOTE_CODE["trusted"]


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"model.dtype={name!r} is not one of {sorted(DTYPES)}")
    return DTYPES[name]


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


def _looks_local(name: str) -> bool:
    # a hub id is "name" or "org/name"; anything else with a slash is a filesystem path
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def _explain_missing(key: str, name: str, err: Exception) -> ModelLoadError:
    if Path(name).expanduser().exists():
        return ModelLoadError(f"{key}={name!r}: the directory exists but could not be loaded: {err}")
    where = "it is not a local directory"
    if _looks_local(name):
        return ModelLoadError(f"{key}={name!r}: {where} (no such path)")
    hub = "the Hugging Face hub is unreachable (HF_HUB_OFFLINE=1)" if hub_offline() else \
        "the Hugging Face hub could not provide it (no network, a typo, or a gated model)"
    return ModelLoadError(f"{key}={name!r}: {where}, and {hub}. Original error: {type(err).__name__}: {err}")


def load_pretrained(name_or_path: str, dtype: str = "float32", key: str = "model.name_or_path") -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained` with an error that says which config key and path failed."""
    try:
        return AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=torch_dtype(dtype),
                                                    trust_remote_code=remote_code_trusted())
    except (OSError, ValueError) as err:
        raise _explain_missing(key, str(name_or_path), err) from err
    except Exception as err:  # safetensors' error for a truncated or corrupt file is neither
        if type(err).__name__ != "SafetensorError":
            raise
        raise ModelLoadError(f"{key}={str(name_or_path)!r}: a weights file is truncated or corrupt: {err}") from err


def load_tokenizer(name_or_path: str, key: str = "model.tokenizer"):
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=remote_code_trusted())
    except (OSError, ValueError) as err:
        raise _explain_missing(key, str(name_or_path), err) from err
    if tokenizer.pad_token_id is None:  # GPT-2 / Pythia ship without a pad token; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_random(architecture: dict, tokenizer=None, dtype: str = "float32", seed: int = 0) -> PreTrainedModel:
    """Random-init model of the given architecture. The vocabulary follows the tokenizer when the YAML leaves
    `vocab_size` out (the embedded model, whose tokenizer is trained on the data)."""
    arch = dict(architecture)
    model_type = arch.pop("model_type")
    if "vocab_size" not in arch:
        if tokenizer is None:
            raise ConfigError("model.architecture.vocab_size is missing and there is no tokenizer to take it from")
        arch["vocab_size"] = len(tokenizer)
    if tokenizer is not None:
        arch.setdefault("eos_token_id", tokenizer.eos_token_id)
        arch.setdefault("bos_token_id", tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                        else tokenizer.eos_token_id)
        arch.setdefault("pad_token_id", tokenizer.pad_token_id)
    config = AutoConfig.for_model(model_type, **arch)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(dtype))
    return model


def set_dropout(model: PreTrainedModel, p: float) -> PreTrainedModel:
    """Every dropout of the model at probability p (model.dropout): the nn.Dropout modules, the attention-probability
    dropout that attention modules read from an `attention_dropout` attribute, and the config's *dropout / *pdrop
    values (so the saved config says what training used). Whether it acts is the module's train/eval mode."""
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"model.dropout={p} must be in [0, 1)")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        elif isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = p
    for key, value in model.config.to_dict().items():
        if (key.endswith("dropout") or key.endswith("pdrop")) and isinstance(value, float):
            setattr(model.config, key, p)
    return model


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """A frozen copy: eval mode (no dropout), no gradients. It never enters an optimizer."""
    model.eval()
    model.requires_grad_(False)
    return model


def check_same_vocabulary(a: PreTrainedModel, b: PreTrainedModel, a_name: str, b_name: str) -> None:
    va, vb = a.get_output_embeddings().weight.shape[0], b.get_output_embeddings().weight.shape[0]
    if va != vb:
        raise ConfigError(f"{a_name} has a vocabulary of {va} logits but {b_name} has {vb}: they must share a tokenizer")


def check_same_tokenizer(tokenizer, other_dir, name: str, other_name: str) -> None:
    """When `other_dir` carries a tokenizer, it must be the student's: same vocabulary (ids and tokens)."""
    local = Path(str(other_dir)).expanduser()
    if local.is_dir() and not any((local / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return  # weights without a tokenizer: the logits-size check still applies
    try:
        other = AutoTokenizer.from_pretrained(str(other_dir))
    except (OSError, ValueError):
        return  # weights without a tokenizer: the logits-size check still applies
    if other.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(f"{other_name} has a tokenizer of {len(other)} tokens that differs from {name} "
                          f"({len(tokenizer)} tokens): teacher and student must share one tokenizer")


def save_hf(model: PreTrainedModel, tokenizer, path: str | Path) -> Path:
    """The artifact users load: `AutoModelForCausalLM.from_pretrained(path)` and `AutoTokenizer.from_pretrained`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path

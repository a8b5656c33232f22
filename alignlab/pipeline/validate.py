"""The checks that run before anything is built, so that a wrong setting costs a second, not a model load:

- types: every value of `method`, `merge`, `trainer`, `data.source` and `reward` against the annotations of the
  constructor its `_target_` names (the class the run builds), every other value against SETTINGS below;
- ranges: SETTINGS' bounds, and the method's and the merge's own checks, run by building both on a toy model of a
  few hundred parameters (the constructors the run uses, so no check lives in two places);
- files: a data path that looks local must exist, and a checkpoint to resume from must be intact;
- the trainer (and resuming with it), and the method's and the merge's requirements of it.

Every failure is a ConfigError naming the key (the entry point prints it and exits with code 2).
"""
from __future__ import annotations

import inspect
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable

import torch
from hydra.utils import get_class, get_method
from omegaconf import OmegaConf

from alignlab import strategies
from alignlab.errors import ConfigError, UserError, instantiate

log = logging.getLogger(__name__)
MODES = ("train", "merge")
_ABSENT = object()


# ---- value checks ----------------------------------------------------------------------------------------------
def _fail(key: str, value, what: str) -> None:
    raise ConfigError(f"{key}={value!r} must be {what}")


def integer(lo: int | None = None, null: bool = False) -> Callable:
    def check(key, value):
        if value is None and null:
            return
        if isinstance(value, bool) or not isinstance(value, int) or (lo is not None and value < lo):
            _fail(key, value, "an integer" + (f" >= {lo}" if lo is not None else "") + (" or null" if null else ""))
    return check


def number(lo: float | None = None, hi: float | None = None, above: bool = False, below: bool = False,
           null: bool = False) -> Callable:
    """A number in [lo, hi] (`above`: > lo, `below`: < hi)."""
    def check(key, value):
        if value is None and null:
            return
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value == value
        ok = ok and (lo is None or (value > lo if above else value >= lo))
        ok = ok and (hi is None or (value < hi if below else value <= hi))
        if not ok:
            lo_s = "" if lo is None else f"{'>' if above else '>='} {lo}"
            hi_s = "" if hi is None else f"{'<' if below else '<='} {hi}"
            _fail(key, value, "a number" + (f" {lo_s}" if lo_s else "") + (" and" if lo_s and hi_s else "")
                  + (f" {hi_s}" if hi_s else "") + (" or null" if null else ""))
    return check


def choice(*options) -> Callable:
    def check(key, value):
        if value not in options:
            _fail(key, value, f"one of {list(options)}")
    return check


def boolean(key, value) -> None:
    if not isinstance(value, bool):
        _fail(key, value, "true or false")


SCHEDULERS = ("constant", "cosine", "linear")
# Settings outside the plug-ins' constructors; a key a config does not have is not checked.
SETTINGS: dict[str, Callable] = {
    "seed": integer(0),
    "checkpoint.every_n_train_steps": integer(1),
    "model.dtype": choice("float32", "bfloat16", "float16"),
    "model.random_init": boolean,
    "model.trust_remote_code": boolean,
    "model.activation_checkpointing": boolean,
    "model.tokenizer_vocab_size": integer(2, null=True),
    "model.dropout": number(0, 1, below=True),
    "data.batch_size": integer(1),
    "data.eval_batch_size": integer(1),
    "data.max_length": integer(2),
    "data.max_prompt_length": integer(1),
    "data.val_fraction": number(0, 1, below=True),
    "data.num_workers": integer(0),
    "data.on_bad_row": choice("error", "skip"),
    "data.swap_preferences": boolean,
    "data.pairs.completions_per_prompt": integer(2),
    "data.pairs.max_new_tokens": integer(1),
    "data.pairs.temperature": number(0, above=True),
    "data.pairs.top_p": number(0, 1, above=True),
    "data.pairs.batch_size": integer(1),
    "sft.enabled": boolean,
    "sft.lr": number(0, above=True),
    "sft.weight_decay": number(0),
    "sft.warmup_ratio": number(0, 1),
    "sft.scheduler": choice(*SCHEDULERS),
    "sft.batch_size": integer(1),
    "sft.max_epochs": integer(1),
    "sft.max_length": integer(2),
    "sft.seed": integer(0),
    "method.optim.lr": number(0, above=True),
    "method.optim.weight_decay": number(0),
    "method.optim.warmup_ratio": number(0, 1),
    "method.optim.warmup_steps": integer(0, null=True),
    "method.optim.scheduler": choice(*SCHEDULERS),
    "trainer.max_epochs": integer(-1, null=True),
    "trainer.max_steps": integer(-1),
    "trainer.accumulate_grad_batches": integer(1),
    "trainer.gradient_clip_val": number(0, null=True),
    "trainer.log_every_n_steps": integer(1),
    "trainer.num_sanity_val_steps": integer(-1),
    "trainer.num_nodes": integer(1),
    "trainer.val_check_interval": number(0, above=True, null=True),
    "eval.enabled": boolean,
    "eval.n_prompts": integer(1),
    "eval.max_new_tokens": integer(1),
    "eval.temperature": number(0, above=True),
    "eval.top_p": number(0, 1, above=True),
    "eval.batch_size": integer(1),
    "eval.reward_every_n_steps": integer(0),
    "eval.curve_prompts": integer(1),
}


def check_settings(cfg) -> None:
    for key, check in SETTINGS.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT:
            check(key, value)
    data = cfg.get("data")
    if data is not None and data.get("max_length") is not None and data.get("max_prompt_length") is not None \
            and data.max_length <= data.max_prompt_length:
        raise ConfigError(f"data.max_length={data.max_length} must be greater than data.max_prompt_length="
                          f"{data.max_prompt_length}: a prompt cut to max_prompt_length tokens must leave room for "
                          f"its response")


# ---- types from the constructors' annotations ----------------------------------------------------------------
def _hints(fn) -> dict[str, Any]:
    """fn's parameter annotations, resolved where they can be (unresolvable ones are skipped)."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - a name only imported for type checkers
        out = {}
        for name, param in inspect.signature(fn).parameters.items():
            ann = param.annotation
            if isinstance(ann, str):
                try:
                    ann = eval(ann, getattr(fn, "__globals__", {}))  # noqa: S307 - annotations of our own code
                except Exception:  # noqa: BLE001
                    continue
            if ann is not inspect.Parameter.empty:
                out[name] = ann
        return out


def constructor_hints(target) -> dict[str, Any]:
    """Annotations of the constructor a `_target_` names, through the class's bases (a subclass's win)."""
    if inspect.isclass(target):
        hints: dict[str, Any] = {}
        for klass in reversed(target.__mro__):
            if "__init__" in vars(klass) and klass is not object:
                hints.update(_hints(vars(klass)["__init__"]))
        return hints
    return _hints(target)


def conforms(value, tp) -> bool:
    if tp is Any or tp is object or tp is inspect.Parameter.empty:
        return True
    if isinstance(value, dict) and "_target_" in value:  # an object built from config
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return any(conforms(value, arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    base = origin or tp
    if base in (dict, typing.Mapping) or (inspect.isclass(base) and issubclass(base, dict)):
        return isinstance(value, dict)
    if base in (list, tuple, typing.Sequence, set, frozenset):
        return isinstance(value, (list, tuple))
    return True  # a class a config value cannot be: nothing to check


def _flatten(tp) -> list:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return [x for arg in typing.get_args(tp) for x in _flatten(arg)]
    return [tp]


def _describe(tp) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text", type(None): "null"}
    parts = _flatten(tp)
    literals = [v for p in parts if typing.get_origin(p) is typing.Literal for v in typing.get_args(p)]
    words = [names.get(p, getattr(p, "__name__", str(p))) for p in parts if typing.get_origin(p) is not typing.Literal]
    return " or ".join(dict.fromkeys(([f"one of {literals}"] if literals else []) + words))


def check_types(prefix: str, node, skip: tuple[str, ...] = ()) -> None:
    """Each value of a config node with a `_target_` against the annotations of that target's constructor."""
    if node is None or "_target_" not in node:
        return
    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    try:
        target = get_class(plain["_target_"])
    except Exception:  # noqa: BLE001 - a function target (a logger factory)
        try:
            target = get_method(plain["_target_"])
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"{prefix}._target_={plain['_target_']!r} cannot be imported: {err}") from None
    hints = constructor_hints(target)
    for key, value in plain.items():
        if key.startswith("_") or key in skip or key not in hints:
            continue
        if not conforms(value, hints[key]):
            raise ConfigError(f"{prefix}.{key}={value!r} must be {_describe(hints[key])}")


# ---- the method and the merge, built on a toy model ----------------------------------------------------------
def _toy_model():
    """A GPTNeoX of a few hundred parameters (CPU random state only: nothing touches a GPU here)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("gpt_neox", vocab_size=16, hidden_size=8, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=16, max_position_embeddings=16)
    return AutoModelForCausalLM.from_config(config)


# what a method may read from its tokenizer when it is built (on-policy methods need one to sample)
_TOY_TOKENIZER = types.SimpleNamespace(pad_token_id=0, eos_token_id=0, bos_token_id=0, padding_side="left")


def _placeholder_optimizer(*args, **kwargs):  # pragma: no cover - never called: construction only
    raise AssertionError("validation builds the method, it never trains it")


def check_method(method_cfg, method_cls, merge) -> None:
    """Build the method's module on toy models: its constructor's checks (ranges, combinations) run now."""
    from alignlab.merge.base import Merge
    from alignlab.pipeline.fit import build_module

    check_types("method", method_cfg, skip=method_cls.frozen_settings)
    online = type(merge).optimizer_factory is not Merge.optimizer_factory
    with torch.random.fork_rng(devices=[]):  # the run's random state is not consumed
        try:
            frozen = {key: _toy_model() for key in method_cls.frozen_models(method_cfg)}
            build_module(method_cfg, _toy_model(), frozen, _TOY_TOKENIZER, _placeholder_optimizer if online else None)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - a value the constructor cannot use
            raise ConfigError(f"method={method_cfg.get('name')} ({method_cfg._target_}) rejects its settings: "
                              f"{type(err).__name__}: {err}") from None


def check_source(source_cfg) -> None:
    """Build the data source (its constructor reads nothing): its own checks of its settings run now."""
    try:
        instantiate(source_cfg)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - e.g. a ValueError naming data.source.n_reviews
        cause = err.__cause__ or err
        if "data.source." in str(cause):  # the message names the key already
            raise ConfigError(str(cause)) from None
        raise ConfigError(f"data.source ({source_cfg.get('_target_')}): {type(cause).__name__}: {cause}") from None


# ---- files ---------------------------------------------------------------------------------------------------
def check_data_paths(source_cfg) -> None:
    """Local-looking data paths must exist (a relative one is resolved against the working directory)."""
    from alignlab.data.files import looks_local

    if source_cfg is None:
        return
    for key in ("train", "validation", "path", "data_files"):
        value = source_cfg.get(key)
        if isinstance(value, str) and value and looks_local(value) and not Path(value).expanduser().exists():
            where = "" if Path(value).expanduser().is_absolute() else f" (relative to {Path.cwd()})"
            raise ConfigError(f"data.source.{key}={value!r}: no such file{where}")


def check_resume(ckpt_path, output_dir) -> None:
    from alignlab.checkpoints import check_checkpoint

    if ckpt_path in (None, ""):
        return
    path = Path(output_dir) / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(str(ckpt_path))
    if ckpt_path == "last" and not path.exists():
        return  # a fresh start, with a warning when training begins
    check_checkpoint(path, "ckpt_path" if ckpt_path != "last" else f"ckpt_path=last ({path})")


def warn_devices(trainer_cfg) -> None:
    """More CPU processes than cores only slows each down: say so."""
    accelerator = str(trainer_cfg.get("accelerator", "auto")).lower()
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    devices = trainer_cfg.get("devices", "auto")
    cores = os.cpu_count() or 1
    if on_cpu and isinstance(devices, int) and not isinstance(devices, bool) and devices > cores:
        log.warning("trainer.devices=%d on the CPU starts %d processes on %d cores: they will share cores and run "
                    "slower than trainer.devices=%d", devices, devices, cores, cores)


# ---- the whole config ----------------------------------------------------------------------------------------
def validate(cfg) -> tuple[type, object]:
    """Check the whole run config; returns (the method's class, the merge plug-in)."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r} is not one of {list(MODES)}")
    check_settings(cfg)
    for prefix in ("trainer", "reward"):
        check_types(prefix, cfg.get(prefix))
    check_types("merge", cfg.merge)
    if cfg.get("data") is not None:
        check_types("data.source", cfg.data.get("source"))
        check_data_paths(cfg.data.get("source"))
        check_source(cfg.data.get("source"))
    method_cls = get_class(cfg.method._target_)
    merge = instantiate(cfg.merge)
    if cfg.mode == "train":
        merge.check_trainer(cfg.trainer)
        method_cls.check_trainer(cfg.method, cfg.trainer)
        strategies.check_trainer_config(cfg.trainer, cfg.ckpt_path, cfg.paths.output_dir)
        check_method(cfg.method, method_cls, merge)
        check_resume(cfg.ckpt_path, cfg.paths.output_dir)
        warn_devices(cfg.trainer)
    return method_cls, merge

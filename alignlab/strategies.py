"""Scale-out support for the trainer/ configs (ddp, deepspeed_zero1/2/3 and offload variants).

- :func:`check_trainer_config` rejects, before anything is trained, the combinations that would fail minutes later
  (or hang): more GPUs than the machine has, DeepSpeed without CUDA (Lightning's DeepSpeedStrategy refuses the
  CPU), online merging optimizers under DeepSpeed, on-policy sampling under multi-GPU ZeRO-3, SLURM tasks that do
  not match the devices, resuming a DeepSpeed checkpoint directory with another strategy (or a file with DeepSpeed).
- :func:`adamw`: torch AdamW, or DeepSpeedCPUAdam where DeepSpeed offloads the optimizer (DeepSpeed refuses a
  torch optimizer under ZeRO-Offload).
- :func:`activation_checkpointing`: model.activation_checkpointing=true for the policy.
- :func:`policy_state_dict` / :func:`load_policy` / :func:`convert` / :func:`trained_policy`: the trained policy
  out of a checkpoint, either a Lightning ``.ckpt`` file (single device, DDP) or a DeepSpeed checkpoint directory
  of per-rank ZeRO shards (the fp32 master weights, through DeepSpeed's ``zero_to_fp32``), written as the HF
  directory users load::

    python -m alignlab.strategies convert <run>/checkpoints/last.ckpt <out dir> --like <HF dir with the config>

Frozen models under ZeRO-3: ``deepspeed.initialize`` partitions every parameter of the LightningModule it wraps,
trainable or not (``DeepSpeedZeRoOffload._convert_to_zero_parameters`` runs ``zero.Init(module=...)`` over
``module.parameters(recurse=True)``), so the reference and the teachers are sharded like the policy and gathered
layer by layer for their forwards. Only the policy's parameters are in the optimizer, so only they have fp32
master partitions; with ``exclude_frozen_parameters: true`` (trainer/deepspeed_*.yaml) the frozen parameters are
left out of the module state dict and of the per-rank ``frozen_param_fragments`` of the checkpoint too.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

import torch

from alignlab.errors import ConfigError

POLICY_PREFIX = "policy."
CPU_HINT = ("trainer=ddp trainer.accelerator=cpu trainer.devices=2 trainer.precision=32-true (data parallel over "
            "CPU processes, gloo) or trainer=cpu")


# ---- what a trainer config asks for ----------------------------------------------------------------------------
def _get(node, key: str, default=None):
    try:
        value = node.get(key, default)
    except AttributeError:
        value = getattr(node, key, default)
    return default if value is None else value


def strategy_kind(trainer_cfg) -> str:
    """'deepspeed', 'fsdp', 'ddp' (ddp, ddp_spawn, ...), or the strategy string as given ('auto', ...)."""
    strategy = _get(trainer_cfg, "strategy", "auto")
    if isinstance(strategy, str):
        name = strategy.lower()
    elif hasattr(strategy, "get") and strategy.get("_target_"):
        name = str(strategy.get("_target_")).rsplit(".", 1)[-1].lower()
    else:
        name = type(strategy).__name__.lower()
    for kind in ("deepspeed", "fsdp", "ddp"):
        if kind in name:
            return kind
    return name


def zero_stage(trainer_cfg) -> int | None:
    """The DeepSpeed ZeRO stage a trainer config asks for (None when it is not DeepSpeed)."""
    if strategy_kind(trainer_cfg) != "deepspeed":
        return None
    strategy = _get(trainer_cfg, "strategy", "auto")
    if isinstance(strategy, str):
        digits = [c for c in strategy if c.isdigit()]
        return int(digits[0]) if digits else 2  # Lightning's "deepspeed" alias is stage 2
    return int(_get(strategy, "stage", 2))


def is_deepspeed(strategy) -> bool:
    """A Lightning strategy object (or its config) that is DeepSpeed."""
    if hasattr(strategy, "get") or isinstance(strategy, str):
        return strategy_kind({"strategy": strategy}) == "deepspeed"
    return "deepspeed" in type(strategy).__name__.lower()


def offloads_optimizer(strategy) -> bool:
    """Whether a (DeepSpeed) strategy runs the optimizer on the CPU or NVMe (ZeRO-Offload)."""
    config = getattr(strategy, "config", None)
    if not is_deepspeed(strategy) or not isinstance(config, dict):
        return False
    offload = (config.get("zero_optimization") or {}).get("offload_optimizer") or {}
    return offload.get("device") in ("cpu", "nvme")


def adamw(strategy, param_groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """AdamW for the policy's parameter groups: torch's, or DeepSpeed's CPU AdamW (same update rule, a C++ op
    JIT-compiled on first use) when the strategy offloads the optimizer: DeepSpeed raises for a torch optimizer
    under ZeRO-Offload ('zero_force_ds_cpu_optimizer'). Torch's is the fused kernel where it can be (one kernel
    per step: pythia-70m on 2 CPU cores, 1.05 s -> 0.17 s per optimizer step); DeepSpeed keeps its own."""
    if offloads_optimizer(strategy):
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(param_groups, lr=lr, adamw_mode=True)
    params = [p for group in param_groups for p in group["params"]]
    fused = not is_deepspeed(strategy) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                                               for p in params)
    return torch.optim.AdamW(param_groups, lr=lr, fused=fused)


def activation_checkpointing(model, enabled: bool = True):
    """model.activation_checkpointing=true: recompute each layer's activations in the backward instead of keeping
    them (non-reentrant torch checkpointing: works under DDP and ZeRO and with frozen inputs). Only the policy needs
    it; frozen models run under no_grad and keep no activations anyway. Same gradients (tests/test_scale.py)."""
    if not enabled:
        return model
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; gradient_checkpointing_* deprecated
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def requested_devices(devices) -> int | None:
    """Lightning's `devices` as a count per node; None for 'all available' (auto, -1)."""
    if devices is None:
        return None
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return None
        if "," in text:  # "0,1": device indices
            return len([d for d in text.split(",") if d.strip()])
        try:
            devices = int(text)
        except ValueError as err:
            raise ConfigError(f"trainer.devices={devices!r} is not a number, a list of indices, 'auto' or -1") from err
    if isinstance(devices, int):
        return None if devices == -1 else devices
    return len(list(devices))  # a list of device indices


def _trainer_name(cfg) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return f"trainer={HydraConfig.get().runtime.choices.get('trainer')}"
    except Exception:  # composed without Hydra's runtime (compose API, tests)
        pass
    strategy = _get(cfg.trainer, "strategy", "auto")
    stage = None if isinstance(strategy, str) else _get(strategy, "stage", None)
    return f"trainer.strategy={strategy_kind(cfg.trainer)}" + (f" (ZeRO stage {stage})" if stage is not None else "")


def check_trainer_config(cfg) -> None:
    """Raise a ConfigError naming the keys for trainer settings that cannot work here. Call it first thing in a run,
    before any stage trains (run.py)."""
    trainer = cfg.trainer
    kind = strategy_kind(trainer)
    name = _trainer_name(cfg)
    merge = _get(_get(cfg, "merge", {}), "name", "none")
    from alignlab.merge.online import ONLINE_MERGERS

    if merge in ONLINE_MERGERS and kind in ("deepspeed", "fsdp"):
        raise ConfigError(
            f"merge={merge} (an online merging optimizer) cannot run with {name}: "
            f"{'DeepSpeed ZeRO' if kind == 'deepspeed' else 'FSDP'} hands the optimizer flattened, partitioned copies "
            f"of the parameters, so the per-parameter task vectors cannot be matched to them. Use trainer=ddp, "
            f"trainer=gpu or trainer=cpu, or a post-hoc merge (merge=average / merge=hma)")

    devices = _get(trainer, "devices", "auto")
    count = requested_devices(devices)
    method = _get(cfg, "method", {})
    if zero_stage(trainer) == 3 and _get(method, "mode", None) == "on_policy" and \
            (count != 1 or int(_get(trainer, "num_nodes", 1)) != 1):
        raise ConfigError(
            f"method.mode=on_policy with {name} on several GPUs: sampling from a ZeRO-3 policy all-gathers its "
            f"layers for every generated token on every rank, and ranks whose samples end early would stop taking "
            f"part (the others then wait forever). Use trainer=deepspeed_zero2 or trainer=ddp for on-policy "
            f"training, or mode=off_policy")

    accelerator = str(_get(trainer, "accelerator", "auto")).lower()
    cuda = torch.cuda.is_available()
    n_gpus = torch.cuda.device_count() if cuda else 0
    wants_cuda = accelerator in ("gpu", "cuda")
    uses_cuda = wants_cuda or (accelerator == "auto" and cuda)

    if kind == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(f"{name} needs the deepspeed package: pip install 'alignlab[deepspeed]'")
        if not uses_cuda or not cuda:
            why = ("no CUDA GPU is visible (torch.cuda.is_available() is False)" if not cuda
                   else f"trainer.accelerator={accelerator}")
            raise ConfigError(f"{name}: Lightning's DeepSpeedStrategy runs only on CUDA GPUs, and {why}. "
                              f"On this machine use {CPU_HINT}")
        if str(_get(trainer, "gradient_clip_algorithm", "norm")).lower() == "value":
            raise ConfigError(f"{name}: DeepSpeed clips gradients by norm only; "
                              f"remove trainer.gradient_clip_algorithm=value")

    if wants_cuda and not cuda:
        raise ConfigError(f"trainer.accelerator={accelerator} ({name}) but no CUDA GPU is visible "
                          f"(torch.cuda.is_available() is False). Use {CPU_HINT}")

    if count is not None and count < 1:
        raise ConfigError(f"trainer.devices={devices} must be >= 1, a list of device indices, 'auto' or -1")
    if uses_cuda and count is not None and count > n_gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ConfigError(
            f"trainer.devices={devices} ({name}) asks for {count} GPUs per node but this machine has {n_gpus}"
            + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")
            + ". trainer.devices counts GPUs per node: use trainer.devices=auto (all of them), or more nodes with "
              "trainer.num_nodes=N on a cluster (experiments/slurm/README.md)")
    if uses_cuda and "bf16" in str(_get(trainer, "precision", "32-true")) and cuda \
            and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"trainer.precision={trainer.precision}: this GPU has no bf16 support; "
                          f"use trainer.precision=16-mixed or 32-true")
    num_nodes = int(_get(trainer, "num_nodes", 1))
    if num_nodes < 1:
        raise ConfigError(f"trainer.num_nodes={num_nodes} must be >= 1")
    _check_slurm(count if count is not None else (n_gpus if uses_cuda else 1), num_nodes, name)
    _check_resume(cfg, kind, name)


def _check_slurm(devices: int, num_nodes: int, name: str) -> None:
    """Under a SLURM batch job Lightning runs one process per task: tasks per node must equal the devices."""
    if "SLURM_NTASKS" not in os.environ or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return
    per_node = os.environ.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
    if per_node.isdigit() and int(per_node) != devices:
        raise ConfigError(f"{name}: trainer.devices={devices} but SLURM runs {per_node} tasks per node; they must be "
                          f"equal (one process per GPU): set hydra.launcher.tasks_per_node={devices} or "
                          f"trainer.devices={per_node}")
    nodes = os.environ.get("SLURM_NNODES", "")
    if nodes.isdigit() and int(nodes) != num_nodes:
        raise ConfigError(f"{name}: trainer.num_nodes={num_nodes} but the SLURM job has {nodes} nodes; set "
                          f"trainer.num_nodes={nodes}")


def _check_resume(cfg, kind: str, name: str) -> None:
    ckpt = _get(cfg, "ckpt_path", None)
    if ckpt in (None, ""):
        return
    path = Path(_get(cfg.paths, "output_dir", ".")) / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if not path.exists():
        return  # run.py reports a missing path (or starts from scratch for "last")
    if path.is_dir() and kind != "deepspeed":
        raise ConfigError(f"ckpt_path={ckpt} ({path}) is a DeepSpeed checkpoint directory but {name} is not "
                          f"DeepSpeed: resume with the trainer that wrote it, or start a new run from its weights "
                          f"(python -m alignlab.strategies convert {path} <HF dir> --like <start model dir>)")
    if path.is_file() and kind == "deepspeed":
        raise ConfigError(f"ckpt_path={ckpt} ({path}) is a single-file Lightning checkpoint but {name} resumes "
                          f"from DeepSpeed checkpoint directories: resume with the trainer that wrote it, or add "
                          f"+trainer.strategy.load_full_weights=true (weights only, ZeRO-3)")


# ---- the trained policy out of a checkpoint --------------------------------------------------------------------
def _deepspeed_tag(path: Path, tag: str | None) -> str:
    if tag is not None or (path / "latest").exists():
        return tag or (path / "latest").read_text().strip()
    tags = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob("*optim_states.pt")))
    if len(tags) != 1:
        raise ConfigError(f"{path}: no 'latest' file and {len(tags)} checkpoint tags {tags}: pass --tag")
    return tags[0]


def policy_state_dict(ckpt_path, prefix: str = POLICY_PREFIX, tag: str | None = None) -> dict[str, torch.Tensor]:
    """The policy's tensors (prefix stripped) from a Lightning .ckpt file, or the fp32 master weights from a
    DeepSpeed checkpoint directory (any ZeRO stage, any number of ranks; frozen parameters excluded)."""
    path = Path(ckpt_path)
    if path.is_dir():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=_deepspeed_tag(path, tag),
                                                         exclude_frozen_parameters=True)
    elif path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)
        state = state.get("state_dict", state)
    else:
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    out = {}
    for key, value in state.items():
        key = key.removeprefix("_forward_module.")  # Lightning < 2.1 wrapped the module
        if key.startswith(prefix):
            out[key[len(prefix):]] = value.detach().float() if value.is_floating_point() else value
    if not out:
        raise ConfigError(f"{path} holds no tensors under {prefix!r} (first keys: {list(state)[:3]})")
    return out


def load_policy(ckpt_path, model, tag: str | None = None):
    """Load the checkpoint's policy into `model` (same architecture); every tensor must match."""
    state = policy_state_dict(ckpt_path, tag=tag)
    missing, unexpected = model.load_state_dict(state, strict=False)
    aliases: dict[int, list[str]] = {}  # tied weights (GPT-2's LM head) appear under one name only
    for key, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(key)
    covered = {k for keys in aliases.values() if any(x in state for x in keys) for k in keys}
    missing = [k for k in missing if k not in covered]
    if missing or unexpected:
        raise ConfigError(f"{ckpt_path}: the policy in the checkpoint does not fit the model: missing "
                          f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}")
    return model


def trained_policy(trainer, module, last_ckpt, new_model):
    """The trained policy as a plain HF model, on rank 0 after fit: `module.policy` itself, except under DeepSpeed,
    whose module holds bf16 copies (ZeRO-1/2 with bf16-mixed) or empty partition placeholders (ZeRO-3; the forward
    hooks would also wait for the other ranks): then the fp32 master weights of `last_ckpt` (the directory train()
    writes at the end of fit) loaded into `new_model()`, a fresh copy of the start model, on the strategy's
    device."""
    if not is_deepspeed(trainer.strategy):
        return module.policy
    return load_policy(last_ckpt, new_model()).to(trainer.strategy.root_device)


def convert(ckpt_path, out_dir, like, dtype: str = "float32", tag: str | None = None) -> Path:
    """Write the checkpoint's policy as an HF directory: the architecture (config.json) and the tokenizer come from
    `like` (the run's policy/ dir, its start model dir, or a hub id)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from alignlab.models import torch_dtype

    config = AutoConfig.from_pretrained(str(like))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    load_policy(ckpt_path, model, tag=tag).to(torch_dtype(dtype))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    try:
        AutoTokenizer.from_pretrained(str(like)).save_pretrained(out)
    except (OSError, ValueError):
        print(f"note: {like} has no tokenizer; {out} holds the weights and config only")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alignlab.strategies", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="checkpoint (Lightning .ckpt file or DeepSpeed directory) -> HF directory")
    c.add_argument("checkpoint", help="e.g. <run>/checkpoints/last.ckpt (a directory under DeepSpeed)")
    c.add_argument("out_dir")
    c.add_argument("--like", required=True, help="HF dir or hub id giving config.json and the tokenizer")
    c.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    c.add_argument("--tag", default=None, help="DeepSpeed checkpoint tag (default: the 'latest' file)")
    args = parser.parse_args(argv)
    out = convert(args.checkpoint, args.out_dir, args.like, args.dtype, args.tag)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

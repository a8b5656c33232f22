"""Scale-out support for the trainer/ configs (ddp, deepspeed_zero1/2/3 and offload variants).

- :func:`check_trainer_config` rejects, before anything is trained, the combinations that would fail minutes later
  (or hang): more GPUs than the machine has, DeepSpeed without CUDA (Lightning's DeepSpeedStrategy refuses the
  CPU), SLURM tasks that do not match the devices, resuming a DeepSpeed checkpoint directory with another strategy
  (or a file with DeepSpeed). Methods and merges add their own checks through their `check_trainer` hooks (on-policy
  sampling under multi-GPU ZeRO-3: :func:`check_sampling_during_training`; online merging optimizers under ZeRO).
- :func:`adamw`: torch AdamW, or DeepSpeedCPUAdam where DeepSpeed offloads the optimizer (DeepSpeed refuses a
  torch optimizer under ZeRO-Offload).
- :func:`activation_checkpointing`: model.activation_checkpointing=true for the policy.
- :func:`trained_policy`: the trained policy after fit, from the fp32 master weights under DeepSpeed
  (alignlab.checkpoints reads checkpoints and converts them to HF directories).

Frozen models under ZeRO-3: ``deepspeed.initialize`` partitions every parameter of the LightningModule it wraps,
trainable or not (``DeepSpeedZeRoOffload._convert_to_zero_parameters`` runs ``zero.Init(module=...)`` over
``module.parameters(recurse=True)``), so the reference and the teachers are sharded like the policy and gathered
layer by layer for their forwards. Only the policy's parameters are in the optimizer, so only they have fp32
master partitions; with ``exclude_frozen_parameters: true`` (trainer/deepspeed_*.yaml) the frozen parameters are
left out of the module state dict and of the per-rank ``frozen_param_fragments`` of the checkpoint too.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from alignlab.errors import ConfigError

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


def offloads_optimizer_config(trainer_cfg) -> bool:
    """Whether a trainer config asks DeepSpeed to run the optimizer on the CPU or NVMe (ZeRO-Offload)."""
    strategy = _get(trainer_cfg, "strategy", "auto")
    return strategy_kind(trainer_cfg) == "deepspeed" and not isinstance(strategy, str) and \
        bool(_get(strategy, "offload_optimizer", False))


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


def trainer_name(trainer_cfg) -> str:
    """How the user chose the trainer, for error messages: `trainer=<option>`, or the strategy when composed
    without Hydra's runtime."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return f"trainer={HydraConfig.get().runtime.choices.get('trainer')}"
    except Exception:  # composed without Hydra's runtime (compose API, tests)
        pass
    strategy = _get(trainer_cfg, "strategy", "auto")
    stage = None if isinstance(strategy, str) else _get(strategy, "stage", None)
    return f"trainer.strategy={strategy_kind(trainer_cfg)}" + (f" (ZeRO stage {stage})" if stage is not None else "")


def check_sampling_during_training(trainer_cfg, what: str) -> None:
    """Objectives that sample from the policy while training (`what` names the setting) cannot run on several GPUs
    under ZeRO-3."""
    count = requested_devices(_get(trainer_cfg, "devices", "auto"))
    if zero_stage(trainer_cfg) == 3 and (count != 1 or int(_get(trainer_cfg, "num_nodes", 1)) != 1):
        raise ConfigError(
            f"{what} with {trainer_name(trainer_cfg)} on several GPUs: sampling from a ZeRO-3 policy all-gathers "
            f"its layers for every generated token on every rank, and ranks whose samples end early would stop "
            f"taking part (the others then wait forever). Use trainer=deepspeed_zero2 or trainer=ddp for on-policy "
            f"training, or mode=off_policy")


def check_trainer_config(trainer, ckpt_path=None, output_dir=".") -> None:
    """Raise a ConfigError naming the keys for trainer settings that cannot work here (and for resuming
    `ckpt_path` with this trainer). Called before any stage trains (alignlab.pipeline.validate)."""
    kind = strategy_kind(trainer)
    name = trainer_name(trainer)
    devices = _get(trainer, "devices", "auto")
    count = requested_devices(devices)

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
    _check_resume(ckpt_path, output_dir, kind, name)


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


def _check_resume(ckpt, output_dir, kind: str, name: str) -> None:
    if ckpt in (None, ""):
        return
    path = Path(output_dir) / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if not path.exists():
        return  # run.py reports a missing path (or starts from scratch for "last")
    if path.is_dir() and kind != "deepspeed":
        raise ConfigError(f"ckpt_path={ckpt} ({path}) is a DeepSpeed checkpoint directory but {name} is not "
                          f"DeepSpeed: resume with the trainer that wrote it, or start a new run from its weights "
                          f"(python -m alignlab.checkpoints convert {path} <HF dir> --like <start model dir>)")
    if path.is_file() and kind == "deepspeed":
        raise ConfigError(f"ckpt_path={ckpt} ({path}) is a single-file Lightning checkpoint but {name} resumes "
                          f"from DeepSpeed checkpoint directories: resume with the trainer that wrote it, or add "
                          f"+trainer.strategy.load_full_weights=true (weights only, ZeRO-3)")


def trained_policy(trainer, module, last_ckpt, new_model):
    """The trained policy as a plain HF model, on rank 0 after fit: `module.policy` itself, except under DeepSpeed,
    whose module holds bf16 copies (ZeRO-1/2 with bf16-mixed) or empty partition placeholders (ZeRO-3; the forward
    hooks would also wait for the other ranks): then the fp32 master weights of `last_ckpt` (the directory train()
    writes at the end of fit) loaded into `new_model()`, a fresh copy of the start model, on the strategy's
    device."""
    if not is_deepspeed(trainer.strategy):
        return module.policy
    from alignlab.checkpoints import load_policy

    return load_policy(last_ckpt, new_model()).to(trainer.strategy.root_device)

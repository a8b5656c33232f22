"""Stage: alignment training. The method's LightningModule around the policy and its frozen models, the data module
over the rows it trains on, and the Lightning Trainer from `trainer/`; fit, then the trained policy as a plain HF
model. The SFT stage and the teachers' training use the same trainer and data module builders.

Every training this module builds stops at the first non-finite loss or gradient norm, before that step changes
the weights, and never writes a checkpoint of non-finite weights (StopOnNonFinite: TrainingDiverged). Alignment
training also saves last.ckpt at the end of the current step on Ctrl-C or SIGTERM (CheckpointOnInterrupt:
RunInterrupted) and counts its time across resumed attempts (RunClock)."""
from __future__ import annotations

import logging
import math
import signal
import threading
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import get_class
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from alignlab import checkpoints as ckpt_files
from alignlab import console, models, strategies
from alignlab.data.module import AlignmentDataModule
from alignlab.errors import ConfigError, RunInterrupted, TrainingDiverged, instantiate
from alignlab.loggers import ResumeLoggers

log = logging.getLogger(__name__)


def _train_terms(trainer) -> dict[str, float]:
    """The train/* values the module logged in the current step (the loss and its terms)."""
    try:  # the values of this step: callback_metrics is only refreshed after the step
        values = trainer._results.metrics(True)["callback"]
    except Exception:  # noqa: BLE001 - a Lightning internal; fall back to the previous step's values
        values = trainer.callback_metrics
    return {k: float(v) for k, v in values.items()
            if k.startswith("train/") and torch.is_tensor(v) and v.numel() == 1}


class StopOnNonFinite(L.Callback):
    """Stop at the first non-finite loss (before backward) or gradient norm (before the optimizer step), so the
    weights stay those of the last finite step; refuse to write a checkpoint of non-finite weights, so last.ckpt
    stays the last finite one. Raises TrainingDiverged naming the step and the logged loss terms."""

    def __init__(self, what: str = "training", hint: str = ""):
        self.what, self.hint = what, hint

    def _any_rank(self, trainer, bad: bool) -> bool:
        return trainer.strategy.reduce_boolean_decision(bad, all=False) if trainer.world_size > 1 else bad

    def _stop(self, trainer, problem: str) -> None:
        terms = ", ".join(f"{k}={v:.4g}" for k, v in sorted(_train_terms(trainer).items()))
        kept = ""
        for cb in trainer.checkpoint_callbacks:
            last = Path(cb.dirpath or ".") / "last.ckpt" if getattr(cb, "dirpath", None) else None
            if last is not None and last.exists():
                kept = f"; the last finite checkpoint is kept: {last}"
        raise TrainingDiverged(f"{self.what} diverged at step {trainer.global_step + 1}: {problem}"
                               f"{f' (logged terms: {terms})' if terms else ''}. Stopped before this step changed "
                               f"the weights{kept}.{f' {self.hint}' if self.hint else ''}")

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self._any_rank(trainer, bad):
            self._stop(trainer, f"the loss is {loss.detach().float().mean().item()}")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads).item() if grads else 0.0
        if self._any_rank(trainer, not math.isfinite(norm)):
            self._stop(trainer, f"the gradient norm is {norm}")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict") or {}
        bad = next((k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
                    and not bool(torch.isfinite(v).all())), None)
        if bad is not None:
            self._stop(trainer, f"the weights after step {trainer.global_step} are not finite ({bad}); the "
                                f"checkpoint was not written")


class CheckpointOnInterrupt(L.Callback):
    """Ctrl-C (SIGINT) or SIGTERM during training: finish the current optimizer step, save `path` (the same state
    a periodic last.ckpt holds), and raise RunInterrupted. A second Ctrl-C stops at once (KeyboardInterrupt)."""

    def __init__(self, path: Path):
        self.path, self.received, self.previous = Path(path), None, {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        log.warning("%s: saving a checkpoint at the end of this step (Ctrl-C again to stop at once)",
                    signal.Signals(signum).name)

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _requested(self, trainer) -> bool:
        requested = self.received is not None
        if trainer.world_size > 1:  # every rank stops at the same step
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        return requested

    def _stop(self, trainer) -> None:
        trainer.save_checkpoint(str(self.path), weights_only=False)
        trainer.strategy.barrier("interrupt checkpoint")
        raise RunInterrupted(f"{signal.Signals(self.received or signal.SIGINT).name} after step "
                             f"{trainer.global_step}; saved {self.path}")

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if self._requested(trainer) and not trainer.fit_loop.epoch_loop._should_accumulate():
            self._stop(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()
        if self._requested(trainer):  # the signal came during the last step: the run still stops here
            self._stop(trainer)


class RunClock(L.Callback):
    """The seconds a run has taken over all its attempts: this attempt's (since `started`) plus those the resumed
    checkpoint recorded."""

    def __init__(self, started: float):
        self.started, self.before = started, 0.0

    def seconds(self) -> float:
        return self.before + time.time() - self.started

    def state_dict(self) -> dict:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before = float(state_dict.get("seconds", 0.0))


def make_trainer(trainer_cfg, root_dir: Path, loggers=False, callbacks=(), what: str = "training",
                 **overrides) -> L.Trainer:
    """The Lightning Trainer of `trainer/`, with StopOnNonFinite and alignlab's one-line progress bar."""
    guard = StopOnNonFinite(what, "Lower the learning rate (method.optim.lr, sft.lr) or set trainer.gradient_clip_val.")
    return instantiate(trainer_cfg, default_root_dir=str(root_dir), logger=loggers,
                       callbacks=[*callbacks, guard, *console.progress_bar(trainer_cfg, what)], **overrides)


def make_datamodule(data_cfg, tokenizer, kind: str, rows: dict, seed: int, module=None) -> AlignmentDataModule:
    """rows: {"train": [...], "validation": [...]}; batch sizes, lengths and batching from the data config node.
    data.group_by_length: training batches of similar length; data.packing (auto | true | false): several sequences
    per row without padding, when the module can train on packed batches and its policy keeps packed sequences
    apart (checked on a small batch: alignlab.forward.packs_correctly)."""
    return AlignmentDataModule(tokenizer, rows["train"], rows["validation"], kind, data_cfg.batch_size,
                               data_cfg.eval_batch_size, data_cfg.max_length, data_cfg.max_prompt_length,
                               seed=seed, num_workers=data_cfg.num_workers, name=data_cfg.name,
                               group=data_cfg.get("group_by_length", 0), pack=use_packing(data_cfg, module))


def use_packing(data_cfg, module) -> bool | str:
    """True / False, or "auto" where packing is possible: the data module then packs only if that computes fewer
    tokens than length-grouped padded batches (AlignmentDataModule.packing_pays)."""
    from alignlab.forward import packs_correctly

    setting = data_cfg.get("packing", False)
    if setting not in (True, False, "auto"):
        raise ConfigError(f"data.packing={setting!r} is not one of [auto, true, false]")
    if setting is False or module is None:
        return False
    if module.supports_packing and packs_correctly(module.policy):
        return setting
    if setting is True:
        raise ConfigError(f"data.packing=true but method {module.method_name} cannot train on packed batches or "
                          f"the policy's attention does not keep packed sequences apart; use data.packing=auto")
    log.info("data.packing=auto: padded batches (method %s or its policy cannot use packed ones)",
             module.method_name)
    return False


def build_module(method_cfg, policy, frozen: dict, tokenizer, optimizer_factory=None):
    """The method's module: its config node's settings (without those that describe frozen models, which the
    frozen-model stage served), the policy, the frozen models by name, and the optimizer factory (None: AdamW)."""
    method_cls = get_class(method_cfg["_target_"])
    settings = OmegaConf.to_container(method_cfg, resolve=True) if OmegaConf.is_config(method_cfg) else dict(method_cfg)
    settings = {k: v for k, v in settings.items() if k not in method_cls.frozen_settings}
    for key, model in frozen.items():
        models.check_same_vocabulary(policy, model, "the policy", f"method.{key}")
    return instantiate(settings, policy=policy, tokenizer=tokenizer, optimizer_factory=optimizer_factory, **frozen,
                       _convert_="all")


def resolve_ckpt_path(ckpt_path, out: Path) -> str | None:
    """ckpt_path=last: this run dir's last.ckpt (a fresh start when there is none yet); else the given path."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        last = out / "checkpoints" / "last.ckpt"
        if last.exists():
            return str(last)
        log.warning("ckpt_path=last but %s does not exist: starting from scratch", last)
        return None
    if not Path(ckpt_path).exists():
        raise ConfigError(f"ckpt_path={ckpt_path!r} does not exist")
    return str(ckpt_path)


def fit(module, datamodule, trainer_cfg, out: Path, *, loggers=(), callbacks=(), ckpt_path=None,
        every_n_train_steps: int = 50, clock: RunClock | None = None) -> L.Trainer:
    """Train with a last.ckpt refreshed every `every_n_train_steps` (and at the end, and on Ctrl-C), resuming from
    `ckpt_path` (loaded weights-only)."""
    checkpoints = ModelCheckpoint(dirpath=str(out / "checkpoints"), save_last=True, save_top_k=0,
                                  every_n_train_steps=every_n_train_steps)
    resume = resolve_ckpt_path(ckpt_path, out)
    if resume is not None:
        ckpt_files.check_checkpoint(resume, "ckpt_path")
        log.info("alignment: resuming from %s", resume)
    guards = [CheckpointOnInterrupt(out / "checkpoints" / "last.ckpt"), ResumeLoggers(), *([clock] if clock else [])]
    trainer = make_trainer(trainer_cfg, out, loggers=list(loggers) or False, what="alignment",
                           callbacks=[*callbacks, *guards, checkpoints])
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    # step-based saving may have last happened a few steps before the end: last.ckpt is the final state
    last = checkpoints.format_checkpoint_name({}, checkpoints.CHECKPOINT_NAME_LAST)
    trainer.save_checkpoint(last, weights_only=False)
    trainer.strategy.barrier("last.ckpt")  # DeepSpeed: every rank's shard is on disk before rank 0 reads them
    return trainer


def trained_policy(trainer, module, out: Path, new_start_model):
    """The trained policy as a plain HF model (under DeepSpeed: the fp32 master weights from last.ckpt, in a fresh
    copy of the start model)."""
    return strategies.trained_policy(trainer, module, out / "checkpoints" / "last.ckpt", new_start_model)


def close_loggers(loggers) -> None:
    """Finish external runs so that the next job of a multirun (same process) starts its own."""
    for logger in loggers or []:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()

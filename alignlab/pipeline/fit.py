"""Stage: alignment training. The method's LightningModule around the policy and its frozen models, the data module
over the rows it trains on, and the Lightning Trainer from `trainer/`; fit, then the trained policy as a plain HF
model. The SFT stage and the teachers' training use the same trainer and data module builders."""
from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from hydra.utils import get_class
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from alignlab import models, strategies
from alignlab.data.module import AlignmentDataModule
from alignlab.errors import ConfigError, instantiate

log = logging.getLogger(__name__)


def make_trainer(trainer_cfg, root_dir: Path, loggers=False, callbacks=(), **overrides) -> L.Trainer:
    return instantiate(trainer_cfg, default_root_dir=str(root_dir), logger=loggers, callbacks=list(callbacks),
                       **overrides)


def make_datamodule(data_cfg, tokenizer, kind: str, rows: dict, seed: int) -> AlignmentDataModule:
    """rows: {"train": [...], "validation": [...]}; batch sizes and lengths from the data config node."""
    return AlignmentDataModule(tokenizer, rows["train"], rows["validation"], kind, data_cfg.batch_size,
                               data_cfg.eval_batch_size, data_cfg.max_length, data_cfg.max_prompt_length,
                               seed=seed, num_workers=data_cfg.num_workers, name=data_cfg.name)


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
        every_n_train_steps: int = 50) -> L.Trainer:
    """Train with a last.ckpt refreshed every `every_n_train_steps` (and at the end), resuming from `ckpt_path`."""
    checkpoints = ModelCheckpoint(dirpath=str(out / "checkpoints"), save_last=True, save_top_k=0,
                                  every_n_train_steps=every_n_train_steps)
    trainer = make_trainer(trainer_cfg, out, loggers=list(loggers) or False, callbacks=[*callbacks, checkpoints])
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(ckpt_path, out))
    # step-based saving may have last happened a few steps before the end: last.ckpt is the final state
    trainer.save_checkpoint(checkpoints.format_checkpoint_name({}, checkpoints.CHECKPOINT_NAME_LAST))
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

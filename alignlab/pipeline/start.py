"""Stage: the model alignment starts from (it is also the reference). The base model (`model/`: weights from a hub id
or local path, or the architecture built at random), fine-tuned on the data source's texts first when the source
declares an SFT stage (`sft_rows()`) and `sft.enabled`: that SFT model is a cached stage, so a sweep over the
method's settings or seeds trains it once."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from alignlab import models, strategies
from alignlab.data.module import AlignmentDataModule
from alignlab.errors import ConfigError
from alignlab.pipeline.cache import cached_stage, fingerprint
from alignlab.pipeline.fit import make_trainer


def trainable(model, model_cfg):
    """A model about to be trained: model.dropout applied and in train mode, whatever way it was built (a
    from_pretrained model arrives in eval mode, and Lightning keeps each submodule's mode), with activation
    checkpointing as configured (HF checkpointing acts only in train mode)."""
    models.set_dropout(model, model_cfg.dropout)
    model.train()
    return strategies.activation_checkpointing(model, model_cfg.activation_checkpointing)


@dataclass
class StartModel:
    new: Callable              # a fresh copy of the start model (the policy's initial weights, the reference)
    id: str                    # its identity in later stages' fingerprints
    dir: Path | None           # its HF directory, when it has a local one
    new_base: Callable         # a fresh copy of the model the SFT stage started from (online merges' base)
    model_cfg: object = None   # the model/ node: how a trainable copy is prepared

    def trainable(self):
        """A fresh copy of the start model, ready to be trained (see :func:`trainable`)."""
        return trainable(self.new(), self.model_cfg)


def base_model(model_cfg, tokenizer, seed: int):
    """The model `model/` names: its weights, or (random_init) its architecture initialised from `seed`."""
    if model_cfg.random_init:
        if not model_cfg.architecture:
            raise ConfigError(f"model.random_init=true needs model.architecture (model={model_cfg.name})")
        return models.build_random(OmegaConf.to_container(model_cfg.architecture, resolve=True), tokenizer,
                                   model_cfg.dtype, seed=seed)
    return models.load_pretrained(model_cfg.name_or_path, model_cfg.dtype)


def sft_stage(model_cfg, sft_cfg, trainer_cfg, rows: list[dict], tokenizer, inputs: dict, cache_dir) -> Path:
    """SFT of the base model on the source's texts, as METHODS.md's protocols do before alignment."""
    from alignlab.methods.sft import SFT

    def build(tmp: Path) -> None:
        L.seed_everything(sft_cfg.seed, workers=True)
        start = trainable(base_model(model_cfg, tokenizer, sft_cfg.seed), model_cfg)
        module = SFT(start, name="sft-stage",
                     optim={k: sft_cfg[k] for k in ("lr", "weight_decay", "warmup_ratio", "scheduler")})
        data = AlignmentDataModule(tokenizer, rows, [], "sequences", sft_cfg.batch_size, sft_cfg.batch_size,
                                   sft_cfg.max_length, sft_cfg.max_length, seed=sft_cfg.seed, name="sft")
        trainer = make_trainer(trainer_cfg, tmp, loggers=CSVLogger(str(tmp), name="logs", version=""),
                               max_epochs=sft_cfg.max_epochs, max_steps=-1, enable_checkpointing=False,
                               limit_val_batches=0)
        trainer.fit(module, datamodule=data)
        models.save_hf(module.policy, tokenizer, tmp)

    return cached_stage(cache_dir, "sft", inputs, build)


def prepare_start(model_cfg, sft_cfg, trainer_cfg, source, tokenizer, tokenizer_id: str, source_id: dict,
                  cache_dir) -> StartModel:
    plain = {"model": OmegaConf.to_container(model_cfg, resolve=True)}
    new_base = lambda: base_model(model_cfg, tokenizer, sft_cfg.seed)  # noqa: E731
    sft_rows = source.sft_rows() if sft_cfg.enabled else None
    if sft_rows is not None:
        inputs = {**plain, "tokenizer": tokenizer_id, "data": source_id,
                  "sft": OmegaConf.to_container(sft_cfg, resolve=True)}
        path = sft_stage(model_cfg, sft_cfg, trainer_cfg, sft_rows, tokenizer, inputs, cache_dir)
        return StartModel(lambda: models.load_pretrained(str(path), model_cfg.dtype, key="sft stage"), path.name,
                          path, new_base, model_cfg)
    if model_cfg.random_init:
        init = new_base()
        return StartModel(lambda: copy.deepcopy(init), f"random-{fingerprint(plain['model'])}", None, new_base,
                          model_cfg)
    local = Path(str(model_cfg.name_or_path)).expanduser()
    return StartModel(new_base, str(model_cfg.name_or_path), local if local.is_dir() else None, new_base, model_cfg)

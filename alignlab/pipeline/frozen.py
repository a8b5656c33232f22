"""Stage: the frozen models the method declares (alignlab.methods.frozen). Each is loaded from the path the config
gives, or is a fresh copy of the start model (the reference), or is trained from the start model with the declared
method on the run's pairs (AlignDistil's DPO and reverse-DPO teachers): a cached stage, trained once per sweep."""
from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import get_class
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from alignlab import models
from alignlab.data.rows import swap_preferences
from alignlab.forward import check_output_head
from alignlab.methods.frozen import FrozenModel, Training
from alignlab.pipeline import reference_logps
from alignlab.pipeline.cache import cached_stage
from alignlab.pipeline.fit import build_module, make_datamodule, make_trainer
from alignlab.pipeline.start import StartModel


def train_frozen_model(training: Training, start: StartModel, rows: dict, tokenizer, trainer_cfg, data_cfg,
                       seed: int, cache_dir) -> Path:
    """`training.method` from the start model on the pairs (swapped if asked), saved as an HF directory."""
    def build(tmp: Path) -> None:
        L.seed_everything(seed, workers=True)
        frozen = {key: models.freeze(start.new())
                  for key in get_class(training.method["_target_"]).frozen_models(training.method)}
        module = build_module({**training.method, "name": training.stage}, start.trainable(), frozen, tokenizer)
        split_rows = {k: swap_preferences(v) if training.swap_preferences else v for k, v in rows.items()}
        data = make_datamodule(data_cfg, tokenizer, module.batch_kind,
                               {k: module.training_rows(v) for k, v in split_rows.items()}, seed, module)
        trainer = make_trainer(trainer_cfg, tmp, loggers=CSVLogger(str(tmp), name="logs", version=""),
                               max_epochs=training.max_epochs, max_steps=-1, enable_checkpointing=False)
        trainer.fit(module, datamodule=data)
        models.save_hf(module.policy, tokenizer, tmp)

    inputs = {"start": start.id, "data": OmegaConf.to_container(data_cfg, resolve=True), "method": training.method,
              "max_epochs": training.max_epochs, "swap_preferences": training.swap_preferences, "seed": seed}
    return cached_stage(cache_dir, training.stage, inputs, build)


def prepare_frozen(declared: dict[str, FrozenModel], start: StartModel, rows: dict, tokenizer, dtype: str,
                   trainer_cfg, data_cfg, seed: int, cache_dir) -> tuple[dict, dict, dict]:
    """(the declared frozen models by name, where each came from, the rows). Given and trained models are loaded
    from their directories; a logps_only model is not loaded at all: its log-probs of the pairs are attached to the
    rows (alignlab.pipeline.reference_logps), and `paths` names that stage as "<key>_logps"."""
    loaded, paths = {}, {}
    for key, spec in declared.items():
        path = spec.path or (spec.training and train_frozen_model(spec.training, start, rows, tokenizer,
                                                                   trainer_cfg, data_cfg, seed, cache_dir))
        def new_model(path=path, key=key, spec=spec):
            return models.load_pretrained(str(path), spec.dtype or dtype, key=f"method.{key}") if path \
                else start.new()

        if path:
            models.check_same_tokenizer(tokenizer, path, "the policy's tokenizer", f"method.{key}={str(path)!r}")
            paths[key] = str(path)
        if spec.logps_only:
            rows, stage = reference_logps.precompute(new_model, str(path or start.id), rows, tokenizer, data_cfg,
                                                     spec.dtype or dtype, cache_dir)
            paths[f"{key}_logps"] = str(stage)
            continue
        loaded[key] = models.freeze(new_model())
        check_output_head(loaded[key], f"method.{key}")  # frozen models are projected at selected positions only
    return loaded, paths, rows

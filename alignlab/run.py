"""One run, top to bottom: tokenizer -> start model -> preference pairs -> frozen models -> fit -> save -> [merge]
-> evaluate -> results.json. Each stage is a module of alignlab.pipeline; the method, the merge and the data source
are plug-ins built from their config groups, so nothing here knows which one it runs."""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from alignlab import models
from alignlab.data.rows import swap_preferences
from alignlab.errors import instantiate
from alignlab.pipeline import fit, frozen, merge, pairs, results, reward_curve, start, tokenizer, validate
from alignlab.pipeline.evaluate import evaluate_model


def run(cfg: DictConfig) -> dict:
    started = time.time()
    method_cls, merger = validate.validate(cfg)
    models.trust_remote_code(cfg.model.get("trust_remote_code", False))
    if cfg.mode == "merge":
        return merge.merge_only(merger, cfg.data, cfg.reward, cfg.eval, cfg.model.dtype, cfg.trainer.accelerator,
                                cfg.seed, Path(cfg.paths.output_dir), plain(cfg), started)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    cache, source, source_id = cfg.paths.cache_dir, instantiate(cfg.data.source), plain(cfg.data.source)
    tok, tokenizer_id = tokenizer.prepare_tokenizer(cfg.model, source, source_id, cache)
    source.bind_tokenizer(tok)
    start_model = start.prepare_start(cfg.model, cfg.sft, cfg.trainer, source, tok, tokenizer_id, source_id, cache)
    rows, pairs_id = pairs.preference_rows(source, start_model, tok, cfg.reward, cfg.data, source_id, cfg.sft.seed,
                                           cache)
    frozen_models, frozen_dirs, rows = frozen.prepare_frozen(method_cls.frozen_models(cfg.method), start_model, rows,
                                                             tok, cfg.model.dtype, cfg.trainer, cfg.data, cfg.sft.seed,
                                                             cache)
    if cfg.data.swap_preferences:
        rows = {split: swap_preferences(r) for split, r in rows.items()}

    L.seed_everything(cfg.seed, workers=True)
    module = fit.build_module(cfg.method, start_model.trainable(), frozen_models, tok,
                              merger.optimizer_factory(start_model.new_base))
    data = fit.make_datamodule(cfg.data, tok, module.batch_kind,
                               {split: module.training_rows(r) for split, r in rows.items()}, cfg.seed, module)
    loggers = [instantiate(c) for c in cfg.logger.values()] if cfg.logger else []
    reward = instantiate(cfg.reward)
    clock = fit.RunClock(started)
    try:
        curve = reward_curve.from_config(cfg.eval, reward, tok, source, cfg.seed)
        extra = [instantiate(c) for c in cfg.callbacks.values()] if cfg.get("callbacks") else []
        trainer = fit.fit(module, data, cfg.trainer, out, loggers=loggers, callbacks=[*extra, *curve],
                          ckpt_path=cfg.ckpt_path, every_n_train_steps=cfg.checkpoint.every_n_train_steps,
                          clock=clock)
        if not trainer.is_global_zero:
            return {"status": "ok", "metrics": {}}
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        metrics.update(reward_curve.summary(curve))
        policy = fit.trained_policy(trainer, module, out, start_model.new)
        policy_dir = models.save_hf(policy, tok, out / "policy")
        merged, merge_metrics = merge.merge_after_training(merger, start_model, policy_dir, out, cfg.model.dtype, tok,
                                                           reward, source.prompts("train", tok), policy.device)
        metrics.update(merge_metrics)
        if cfg.eval.enabled:
            # under DeepSpeed module.reference is bf16 or (ZeRO-3) partitioned: evaluate against a fresh copy
            reference = module.reference if module.reference is not None and policy is module.policy \
                else models.freeze(start_model.new())
            metrics.update(evaluate_model(merged or policy, reference, tok, source, rows["validation"],
                                          module.preference_score, reward, cfg.eval, cfg.data, cfg.seed, out,
                                          loggers, trainer.global_step))
    finally:
        fit.close_loggers(loggers)
    metrics["time/seconds"] = clock.seconds()
    return results.write_results(
        {"status": "ok", "metrics": metrics, "policy_dir": str(policy_dir), "started": results.timestamp(started),
         "global_step": trainer.global_step, "resumed_from": trainer.ckpt_path,
         "merged_dir": str(out / "merged") if merged is not None else None,
         "pre_dir": str(start_model.dir) if start_model.dir else None,
         "stages": {"tokenizer": tokenizer_id, "start": start_model.id, "pairs": pairs_id, **frozen_dirs},
         "config": plain(cfg)}, out, title(cfg))


def title(cfg: DictConfig) -> str:
    return f"method={cfg.method.name}  model={cfg.model.name}  data={cfg.data.name}  seed={cfg.seed}"


def plain(node) -> dict | list | None:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None

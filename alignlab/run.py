"""One run, as stages: tokenizer -> [SFT] -> [preference pairs] -> alignment -> save -> evaluate -> results.json.

Stages before alignment are cached under a fingerprint of their inputs (alignlab.stages), so a sweep over the
method's hyperparameters or seeds trains the SFT model and generates the pairs once.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from alignlab import models, strategies
from alignlab.data.module import AlignmentDataModule, tokenize_rows
from alignlab.data.pairs import generate_pairs, read_jsonl, write_jsonl
from alignlab.data.rows import as_sequences, swap_preferences
from alignlab.errors import ConfigError
from alignlab.eval.metrics import evaluate
from alignlab.loggers import log_evaluation
from alignlab.merge.online import ONLINE_MERGERS
from alignlab.merge.stage import POSTHOC, check_merge_config, online_merge_base, posthoc_merge
from alignlab.stages import cached_stage, fingerprint

log = logging.getLogger(__name__)


def plain(cfg) -> dict | list | None:
    return OmegaConf.to_container(cfg, resolve=True) if cfg is not None else None


# ---- stage: tokenizer ------------------------------------------------------------------------------------------
def prepare_tokenizer(cfg: DictConfig, source) -> tuple[object, str]:
    """Returns (tokenizer, its identity for fingerprints)."""
    if cfg.model.tokenizer != "embedded":
        same = cfg.model.tokenizer == cfg.model.get("name_or_path")
        key = "model.tokenizer (= model.name_or_path)" if same else "model.tokenizer"
        return models.load_tokenizer(cfg.model.tokenizer, key=key), str(cfg.model.tokenizer)
    from alignlab.tokenizer import train_bpe_tokenizer

    path = cached_stage(cfg.paths.cache_dir, "tokenizer",
                        {"corpus": plain(cfg.data.source), "vocab_size": cfg.model.tokenizer_vocab_size},
                        lambda tmp: train_bpe_tokenizer(source.corpus(), cfg.model.tokenizer_vocab_size, str(tmp)))
    return models.load_tokenizer(str(path)), path.name


# ---- stage: the model alignment starts from ---------------------------------------------------------------------
def base_model(cfg: DictConfig, tokenizer):
    if cfg.model.random_init:
        if not cfg.model.architecture:
            raise ConfigError(f"model.random_init=true needs model.architecture (model={cfg.model.name})")
        return models.build_random(plain(cfg.model.architecture), tokenizer, cfg.model.dtype, seed=cfg.sft.seed)
    return models.load_pretrained(cfg.model.name_or_path, cfg.model.dtype)


def make_trainer(cfg: DictConfig, root_dir: Path, loggers=False, callbacks=(), **overrides) -> L.Trainer:
    return instantiate(cfg.trainer, default_root_dir=str(root_dir), logger=loggers, callbacks=list(callbacks),
                       **overrides)


def sft_stage(cfg: DictConfig, source, tokenizer, tokenizer_id: str) -> Path:
    """SFT of the base model on the source's texts, as METHODS.md's protocols do before alignment."""
    from alignlab.methods.sft import SFT

    def build(tmp: Path) -> None:
        L.seed_everything(cfg.sft.seed, workers=True)
        start = strategies.activation_checkpointing(base_model(cfg, tokenizer), cfg.model.activation_checkpointing)
        module = SFT(start, name="sft-stage",
                     optim={k: cfg.sft[k] for k in ("lr", "weight_decay", "warmup_ratio", "scheduler")})
        data = AlignmentDataModule(tokenizer, source.sft_rows(), [], "sequences", cfg.sft.batch_size,
                                   cfg.sft.batch_size, cfg.sft.max_length, cfg.sft.max_length, seed=cfg.sft.seed,
                                   name="sft")
        from lightning.pytorch.loggers import CSVLogger
        trainer = make_trainer(cfg, tmp, loggers=CSVLogger(str(tmp), name="logs", version=""),
                               max_epochs=cfg.sft.max_epochs, max_steps=-1, enable_checkpointing=False,
                               limit_val_batches=0)
        trainer.fit(module, datamodule=data)
        models.save_hf(module.policy, tokenizer, tmp)

    inputs = {"model": plain(cfg.model), "tokenizer": tokenizer_id, "data": plain(cfg.data.source),
              "sft": plain(cfg.sft)}
    return cached_stage(cfg.paths.cache_dir, "sft", inputs, build)


def prepare_start(cfg: DictConfig, source, tokenizer, tokenizer_id: str) -> tuple[Callable, str, Path | None]:
    """Returns (a function giving a fresh copy of the start model, its identity for fingerprints, its local HF
    directory when it has one)."""
    if cfg.sft.enabled and source.sft_rows() is not None:
        path = sft_stage(cfg, source, tokenizer, tokenizer_id)
        return (lambda: models.load_pretrained(str(path), cfg.model.dtype, key="sft stage")), path.name, path
    if cfg.model.random_init:
        init = base_model(cfg, tokenizer)
        return (lambda: copy.deepcopy(init)), f"random-{fingerprint(plain(cfg.model))}", None
    local = Path(str(cfg.model.name_or_path)).expanduser()
    return ((lambda: models.load_pretrained(cfg.model.name_or_path, cfg.model.dtype)), str(cfg.model.name_or_path),
            local if local.is_dir() else None)


# ---- stage: preference pairs -----------------------------------------------------------------------------------
def preference_rows(cfg: DictConfig, source, new_start_model, start_id: str, tokenizer) -> tuple[dict, str]:
    """Rows by split, and where they came from (the source, or the pair stage's cache dir)."""
    train = source.preference_rows("train")
    if train is not None:
        return {"train": train, "validation": source.preference_rows("validation")}, cfg.data.name
    else:
        def build(tmp: Path) -> None:
            reward = instantiate(cfg.reward)
            splits = generate_pairs(new_start_model(), tokenizer, reward, source.prompts("train", tokenizer),
                                    cfg.data.pairs, cfg.data.val_fraction, seed=cfg.sft.seed)
            for split, split_rows in splits.items():
                write_jsonl(split_rows, tmp / f"{split}.jsonl")

        inputs = {"start": start_id, "reward": plain(cfg.reward), "pairs": plain(cfg.data.pairs),
                  "data": plain(cfg.data.source), "val_fraction": cfg.data.val_fraction, "seed": cfg.sft.seed}
        path = cached_stage(cfg.paths.cache_dir, "pairs", inputs, build)
        return {split: read_jsonl(path / f"{split}.jsonl") for split in ("train", "validation")}, str(path)


# ---- stage: frozen teachers (AlignDistil's DPO and reverse-DPO models) ----------------------------------------
def teacher_stage(cfg: DictConfig, which: str, rows: dict, new_start_model: Callable, start_id: str,
                  tokenizer) -> Path:
    """DPO with beta0 from the start model on the data's pairs; `reverse` swaps chosen and rejected (the same
    code path as data.swap_preferences=true)."""
    from lightning.pytorch.loggers import CSVLogger

    from alignlab.methods.dpo import DPO

    training = cfg.method.teacher_training

    def build(tmp: Path) -> None:
        L.seed_everything(cfg.sft.seed, workers=True)
        module = DPO(new_start_model(), models.freeze(new_start_model()), beta=cfg.method.beta0,
                     optim=plain(training.optim), name=f"{which}-teacher")
        split_rows = {k: swap_preferences(v) if which == "reverse" else v for k, v in rows.items()}
        data = make_datamodule(cfg, tokenizer, "pairs", split_rows, seed=cfg.sft.seed)
        trainer = make_trainer(cfg, tmp, loggers=CSVLogger(str(tmp), name="logs", version=""),
                               max_epochs=training.max_epochs, max_steps=-1, enable_checkpointing=False)
        trainer.fit(module, datamodule=data)
        models.save_hf(module.policy, tokenizer, tmp)

    inputs = {"start": start_id, "data": plain(cfg.data), "beta0": cfg.method.beta0, "training": plain(training),
              "which": which, "seed": cfg.sft.seed}
    return cached_stage(cfg.paths.cache_dir, f"teacher-{which}", inputs, build)


def load_teachers(cfg: DictConfig, rows: dict, new_start_model: Callable, start_id: str,
                  tokenizer) -> tuple[dict, dict]:
    """The frozen models a method declares in `teachers`: a path or hub id from method.<name>, or trained here as a
    cached stage. Each must share the student's tokenizer. Returns (models, their paths) by config key."""
    method_cls = get_class(cfg.method._target_)
    loaded, paths = {}, {}
    for key, which in getattr(method_cls, "teachers", {}).items():
        if key == "reverse_model" and cfg.method.get("teacher") == "dpo_ref":
            continue  # the dpo_ref teacher uses the reference instead
        path = cfg.method.get(key) or teacher_stage(cfg, which, rows, new_start_model, start_id, tokenizer)
        model = models.load_pretrained(str(path), cfg.method.get("teacher_dtype", cfg.model.dtype),
                                       key=f"method.{key}")
        models.check_same_tokenizer(tokenizer, path, f"the student's tokenizer ({cfg.model.tokenizer})",
                                    f"method.{key}={str(path)!r}")
        loaded[key], paths[key] = models.freeze(model), str(path)
    return loaded, paths


# ---- alignment -------------------------------------------------------------------------------------------------
def build_module(cfg: DictConfig, new_start_model: Callable, tokenizer, teachers: dict):
    method_cls = get_class(cfg.method._target_)
    policy = strategies.activation_checkpointing(new_start_model(), cfg.model.get("activation_checkpointing", False))
    reference = models.freeze(new_start_model()) if method_cls.needs_reference else None
    for key, teacher in teachers.items():
        models.check_same_vocabulary(policy, teacher, f"the student (model={cfg.model.name})", f"method.{key}")
    module = instantiate(cfg.method, policy=policy, reference=reference, tokenizer=tokenizer, **teachers,
                         _convert_="all")
    if cfg.merge.name in ONLINE_MERGERS:
        module.use_online_merging(plain(cfg.merge), online_merge_base(cfg, lambda: base_model(cfg, tokenizer)))
    return module


def make_datamodule(cfg: DictConfig, tokenizer, kind: str, rows: dict, seed: int) -> AlignmentDataModule:
    return AlignmentDataModule(tokenizer, rows["train"], rows["validation"], kind, cfg.data.batch_size,
                               cfg.data.eval_batch_size, cfg.data.max_length, cfg.data.max_prompt_length,
                               seed=seed, num_workers=cfg.data.num_workers, name=cfg.data.name)


def resolve_ckpt_path(cfg: DictConfig, out: Path) -> str | None:
    if cfg.ckpt_path in (None, ""):
        return None
    if cfg.ckpt_path == "last":
        last = out / "checkpoints" / "last.ckpt"
        if last.exists():
            return str(last)
        log.warning("ckpt_path=last but %s does not exist: starting from scratch", last)
        return None
    if not Path(cfg.ckpt_path).exists():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r} does not exist")
    return str(cfg.ckpt_path)


def close_loggers(loggers) -> None:
    """Finish external runs so that the next job of a multirun (same process) starts its own."""
    for logger in loggers or []:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()


def reward_curve_callback(cfg: DictConfig, p: "Prepared"):
    """eval.reward_every_n_steps > 0: log val/reward during training on the first eval.curve_prompts prompts."""
    from alignlab.callbacks import RewardDuringTraining

    every = cfg.eval.get("reward_every_n_steps", 0)
    if not every:
        return None
    prompts = p.source.prompts("test", p.tokenizer)[: cfg.eval.curve_prompts]
    return RewardDuringTraining(instantiate(cfg.reward), p.tokenizer, prompts, every, cfg.eval.max_new_tokens,
                                cfg.eval.temperature, cfg.eval.top_p, cfg.eval.batch_size, seed=cfg.seed)


def train(cfg: DictConfig, module, datamodule, out: Path, loggers, extra_callbacks=()) -> L.Trainer:
    checkpoints = ModelCheckpoint(dirpath=str(out / "checkpoints"), save_last=True, save_top_k=0,
                                  every_n_train_steps=cfg.checkpoint.every_n_train_steps)
    extra = [instantiate(c) for c in cfg.callbacks.values()] if cfg.get("callbacks") else []
    extra += [c for c in extra_callbacks if c is not None]
    trainer = make_trainer(cfg, out, loggers=loggers or False, callbacks=[*extra, checkpoints])
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg, out))
    # step-based saving may have last happened a few steps before the end: last.ckpt is the final state
    trainer.save_checkpoint(checkpoints.format_checkpoint_name({}, checkpoints.CHECKPOINT_NAME_LAST))
    trainer.strategy.barrier("last.ckpt")  # DeepSpeed: every rank's shard is on disk before rank 0 reads them
    return trainer


@dataclass
class Prepared:
    """What the stages before alignment produce."""
    source: object
    tokenizer: object
    tokenizer_id: str
    new_start_model: Callable  # a fresh copy of the model alignment starts from (the reference's weights)
    start_id: str
    start_dir: Path | None     # its HF directory, when it has a local one
    rows: dict                 # preference rows by split ("train", "validation"), already swapped if asked
    teachers: dict             # frozen models a method declares (AlignDistil's DPO and reverse-DPO models)
    stages: dict               # where each stage's output came from (cache dirs, paths, hub ids)


def prepare(cfg: DictConfig) -> Prepared:
    source = instantiate(cfg.data.source)
    tokenizer, tokenizer_id = prepare_tokenizer(cfg, source)
    if hasattr(source, "bind_tokenizer"):  # message-list data renders with the tokenizer's chat template
        source.bind_tokenizer(tokenizer)
    new_start_model, start_id, start_dir = prepare_start(cfg, source, tokenizer, tokenizer_id)
    rows, pairs_id = preference_rows(cfg, source, new_start_model, start_id, tokenizer)
    teachers, teacher_paths = load_teachers(cfg, rows, new_start_model, start_id, tokenizer)
    if cfg.data.swap_preferences:
        rows = {split: swap_preferences(r) for split, r in rows.items()}
    stages = {"tokenizer": tokenizer_id, "start": start_id, "pairs": pairs_id, **teacher_paths}
    return Prepared(source, tokenizer, tokenizer_id, new_start_model, start_id, start_dir, rows, teachers, stages)


def evaluate_model(cfg: DictConfig, policy, reference, tokenizer, source, val_rows: list[dict], preference_score,
                   out: Path, loggers=(), step: int = 0) -> dict:
    """eval/* (and tax/* with eval=tax) of `policy` against `reference`; the samples go to samples.jsonl."""
    reference.to(policy.device)
    val_pairs = tokenize_rows(tokenizer, val_rows, "pairs", cfg.data.max_length, cfg.data.max_prompt_length,
                              f"{cfg.data.name}/eval-pairs") if val_rows else []
    reward = instantiate(cfg.reward)
    metrics, samples = evaluate(policy, reference, tokenizer, reward, source.prompts("test", tokenizer), val_pairs,
                                cfg.eval, preference_score, seed=cfg.seed)
    if hasattr(source, "chosen_responses"):  # datasets with reference responses: win rate against them
        from alignlab.eval.winrate import winrate_vs_chosen

        metrics.update(winrate_vs_chosen(reward, samples, source.chosen_responses("test")))
    if cfg.eval.tax.enabled:
        from alignlab.eval.tax import alignment_tax

        settings = {k: v for k, v in plain(cfg.eval.tax).items() if k != "enabled"}
        metrics.update(alignment_tax(policy, reference, tokenizer, **settings))
    with open(out / "samples.jsonl", "w") as f:
        for s in samples:
            f.write(json.dumps({k: s[k] for k in ("prompt", "completion", "reward")}) + "\n")
    log_evaluation(loggers, metrics, samples, step)
    return metrics


def merge_after_training(cfg: DictConfig, p: Prepared, policy_dir: Path, out: Path, device) -> tuple[object, dict]:
    """merge=average|hma: merge this run's policy (or merge.aligned) with its start model (or merge.pre)."""
    pre_dir = cfg.merge.pre or p.start_dir or models.save_hf(p.new_start_model(), p.tokenizer, out / "pre")
    merged_dir, metrics = posthoc_merge(cfg, pre_dir, cfg.merge.aligned or policy_dir, out / "merged", p.tokenizer,
                                        instantiate(cfg.reward), p.source.prompts("train", p.tokenizer), device)
    merged = models.freeze(models.load_pretrained(str(merged_dir), cfg.model.dtype, key="merged")).to(device)
    return merged, {**metrics, "merge/dir": str(merged_dir)}


def run(cfg: DictConfig) -> dict:
    started = time.time()
    check_merge_config(cfg.merge)
    if cfg.stage == "merge":
        return run_merge_stage(cfg, started)
    if cfg.stage != "all":
        raise ConfigError(f"stage={cfg.stage!r} is not one of ['all', 'merge']")
    strategies.check_trainer_config(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    p = prepare(cfg)

    L.seed_everything(cfg.seed, workers=True)
    module = build_module(cfg, p.new_start_model, p.tokenizer, p.teachers)
    rows = p.rows
    if module.batch_kind == "sequences":
        rows = {split: as_sequences(r, cfg.method.get("responses", "chosen")) for split, r in rows.items()}
    datamodule = make_datamodule(cfg, p.tokenizer, module.batch_kind, rows, seed=cfg.seed)
    loggers = [instantiate(c) for c in cfg.logger.values()] if cfg.logger else []
    try:
        curve = reward_curve_callback(cfg, p)
        trainer = train(cfg, module, datamodule, out, loggers, [curve])
        if not trainer.is_global_zero:
            return {"status": "ok", "metrics": {}}
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        if curve is not None and curve.curve:
            from alignlab.callbacks import steps_to_reach

            metrics["curve/steps_to_final_reward"] = float(steps_to_reach(curve.curve))
            metrics["curve/final_reward"] = curve.curve[-1][1]
        # DeepSpeed: the fp32 master weights from last.ckpt, in a fresh copy of the start model
        policy = strategies.trained_policy(trainer, module, out / "checkpoints" / "last.ckpt", p.new_start_model)
        policy_dir = models.save_hf(policy, p.tokenizer, out / "policy")
        final = policy
        if cfg.merge.name in POSTHOC:
            final, merge_metrics = merge_after_training(cfg, p, policy_dir, out, policy.device)
            metrics.update({k: v for k, v in merge_metrics.items() if k != "merge/dir"})
        if cfg.eval.enabled:
            # under DeepSpeed module.reference is bf16 or (ZeRO-3) partitioned: evaluate against a fresh copy
            reference = module.reference if module.reference is not None and policy is module.policy \
                else models.freeze(p.new_start_model())
            metrics.update(evaluate_model(cfg, final, reference, p.tokenizer, p.source, p.rows["validation"],
                                          type(module).preference_score, out, loggers, trainer.global_step))
    finally:
        close_loggers(loggers)
    metrics["time/seconds"] = time.time() - started
    results = {"status": "ok", "metrics": metrics, "policy_dir": str(policy_dir),
               "merged_dir": str(out / "merged") if cfg.merge.name in POSTHOC else None,
               "pre_dir": str(p.start_dir) if p.start_dir else None, "stages": p.stages, "config": plain(cfg)}
    return write_results(cfg, results, out)


def run_merge_stage(cfg: DictConfig, started: float) -> dict:
    """stage=merge: merge two existing checkpoints (merge.pre, merge.aligned), then evaluate the merged model
    against the pre-alignment model on the configured data's held-out prompts."""
    from alignlab.methods.base import AlignmentModule

    if cfg.merge.name not in POSTHOC or not cfg.merge.aligned or not cfg.merge.pre:
        raise ConfigError("stage=merge needs merge=average or merge=hma with merge.aligned and merge.pre set "
                          f"(got merge={cfg.merge.name}, aligned={cfg.merge.get('aligned')}, pre={cfg.merge.get('pre')})")
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    tokenizer = models.load_tokenizer(cfg.merge.aligned, key="merge.aligned")
    source = instantiate(cfg.data.source)
    if hasattr(source, "bind_tokenizer"):
        source.bind_tokenizer(tokenizer)
    device = "cuda" if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda") else "cpu"
    merged_dir, metrics = posthoc_merge(cfg, cfg.merge.pre, cfg.merge.aligned, out / "merged", tokenizer,
                                        instantiate(cfg.reward), source.prompts("train", tokenizer), device)
    if cfg.eval.enabled:
        merged = models.freeze(models.load_pretrained(str(merged_dir), cfg.model.dtype, key="merged")).to(device)
        pre = models.freeze(models.load_pretrained(str(cfg.merge.pre), cfg.model.dtype, key="merge.pre"))
        val_rows = source.preference_rows("validation") or []
        metrics.update(evaluate_model(cfg, merged, pre, tokenizer, source, val_rows,
                                      AlignmentModule.preference_score, out))
    metrics["time/seconds"] = time.time() - started
    results = {"status": "ok", "metrics": metrics, "policy_dir": None, "merged_dir": str(merged_dir),
               "pre_dir": str(cfg.merge.pre), "stages": {}, "config": plain(cfg)}
    return write_results(cfg, results, out)


def write_results(cfg: DictConfig, results: dict, out: Path) -> dict:
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print_summary(cfg, results["metrics"], out)
    return results


def print_summary(cfg: DictConfig, metrics: dict, out: Path) -> None:
    keys = ["eval/reward", "eval/reward_ref", "eval/kl", "eval/entropy", "eval/pref_accuracy",
            "eval/winrate_vs_chosen", "tax/ppl_ratio", "tax/probe_drop", "val/loss", "val/rewards/accuracies",
            "time/seconds"]
    lines = [f"alignlab  method={cfg.method.name}  model={cfg.model.name}  data={cfg.data.name}  seed={cfg.seed}"]
    lines += [f"  {k:<24} {metrics[k]:>10.4f}" for k in keys if k in metrics]
    lines.append(f"  results: {out / 'results.json'}")
    print("\n".join(lines))

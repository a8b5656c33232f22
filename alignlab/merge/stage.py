"""The post-hoc merge step of a run (merge=average / merge=hma), and the checks of the merge config.

It runs after training in the same job (aligned = this run's policy, pre = its start model), or alone with
`python -m alignlab stage=merge merge=average merge.alpha=0.4 merge.aligned=<dir> merge.pre=<dir>`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from alignlab import models
from alignlab.errors import ConfigError
from alignlab.merge.average import check_alpha, check_scope, merge_checkpoints
from alignlab.merge.hma import check_block_ratios, learn_block_ratios, sample_high_reward_rows
from alignlab.merge.online import ONLINE_MERGERS

log = logging.getLogger(__name__)
POSTHOC = ("average", "hma")
KINDS = ("none", *POSTHOC, *ONLINE_MERGERS)


def check_merge_config(merge: DictConfig) -> None:
    """Reject bad merge settings before anything is trained."""
    if merge.name not in KINDS:
        raise ConfigError(f"merge.name={merge.name!r} is not one of {list(KINDS)}")
    if merge.name in POSTHOC:
        check_alpha(merge.alpha)
        check_scope(merge.scope)
    if merge.name == "hma":
        if merge.block_ratios is not None:
            check_block_ratios(list(merge.block_ratios), merge.num_blocks)
        if not 0.0 <= merge.eps <= 0.9:
            raise ConfigError(f"merge.eps={merge.eps} must be in [0, 0.9]")
    if merge.name in ONLINE_MERGERS:
        if not 0.0 < merge.p <= 1.0:
            raise ConfigError(f"merge.p={merge.p} must be in (0, 1]")
        if not 0.0 <= merge.a <= 1.0:
            raise ConfigError(f"merge.a={merge.a} must be in [0, 1]")
        if merge.step_k < 1:
            raise ConfigError(f"merge.step_k={merge.step_k} must be >= 1")


def posthoc_merge(cfg: DictConfig, pre_dir, aligned_dir, out_dir: Path, tokenizer, reward, train_prompts,
                  device="cpu") -> tuple[Path, dict]:
    """Merge pre and aligned checkpoints into out_dir; for HMA without given ratios, learn them first.
    Returns (merged dir, merge/* metrics)."""
    merge = cfg.merge
    ratios = list(merge.block_ratios) if merge.get("block_ratios") is not None else None
    metrics = {"merge/alpha": float(merge.alpha)}
    if merge.name == "hma" and ratios is None:
        pre = models.freeze(models.load_pretrained(str(pre_dir), cfg.model.dtype, key="merge.pre")).to(device)
        aligned = models.freeze(models.load_pretrained(str(aligned_dir), cfg.model.dtype,
                                                       key="merge.aligned")).to(device)
        rows = sample_high_reward_rows(aligned, tokenizer, reward, train_prompts, top=merge.top, n_keep=merge.n_keep,
                                       max_new_tokens=merge.max_new_tokens, temperature=merge.temperature,
                                       num_return_sequences=merge.samples_per_prompt, seed=cfg.seed)
        ratios = learn_block_ratios(pre, aligned, tokenizer, rows, merge.alpha, merge.num_blocks, merge.eps,
                                    merge.lr, merge.batch_size, merge.epochs, merge.warmup_ratio,
                                    cfg.data.max_length, cfg.data.max_prompt_length, merge.scope, merge.bound,
                                    seed=cfg.seed)
        log.info("hma: learned block ratios %s (mean %.3f)", ratios, sum(ratios) / len(ratios))
    if ratios is not None:
        metrics.update({f"merge/ratio_{k + 1}": float(r) for k, r in enumerate(ratios)})
    merged = merge_checkpoints(pre_dir, aligned_dir, out_dir, alpha=None if ratios else merge.alpha,
                               scope=merge.scope, block_ratios=ratios)
    return merged, metrics


def online_merge_base(cfg: DictConfig, base_model_fn) -> dict:
    """The base weights of tau = theta_sft - theta_base: `sft_init` is the model the SFT stage started from."""
    name = cfg.merge.base_model
    if name in (None, "", "???"):
        raise ConfigError(f"merge={cfg.merge.name} needs merge.base_model (a path, hub id, or sft_init)")
    if name == "sft_init":
        return base_model_fn().state_dict()
    return models.load_pretrained(str(name), cfg.model.dtype, key="merge.base_model").state_dict()


def plain_merge(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg.merge, resolve=True)

"""Stage: evaluation of the final model against the model alignment started from (METHODS.md section 6): samples for
the source's held-out prompts scored by the reward, KL, entropy, preference accuracy on held-out pairs, the win
rate against the dataset's chosen responses where it has them, and the alignment-tax metrics with eval=tax. The
policy's samples go to samples.jsonl; the metrics to every logger."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from alignlab.data.module import tokenize_rows
from alignlab.eval.metrics import evaluate
from alignlab.eval.tax import alignment_tax
from alignlab.eval.winrate import winrate_vs_chosen
from alignlab.loggers import log_evaluation


def evaluate_model(policy, reference, tokenizer, source, val_rows: list[dict], preference_score, reward, eval_cfg,
                   data_cfg, seed: int, out: Path, loggers=(), step: int = 0) -> dict:
    """eval/* (and tax/* when eval.tax.enabled) of `policy` against `reference`."""
    reference.to(policy.device)
    val_pairs = tokenize_rows(tokenizer, val_rows, "pairs", data_cfg.max_length, data_cfg.max_prompt_length,
                              f"{data_cfg.name}/eval-pairs") if val_rows else []
    metrics, samples = evaluate(policy, reference, tokenizer, reward, source.prompts("test", tokenizer), val_pairs,
                                eval_cfg, preference_score, seed=seed)
    metrics.update(winrate_vs_chosen(reward, samples, source.chosen_responses("test")))
    if eval_cfg.tax.enabled:
        settings = {k: v for k, v in OmegaConf.to_container(eval_cfg.tax, resolve=True).items() if k != "enabled"}
        metrics.update(alignment_tax(policy, reference, tokenizer, **settings))
    with open(out / "samples.jsonl", "w") as f:
        for s in samples:
            f.write(json.dumps({k: s[k] for k in ("prompt", "completion", "reward")}) + "\n")
    log_evaluation(loggers, metrics, samples, step)
    return metrics

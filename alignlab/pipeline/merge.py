"""Stage: the post-hoc merge (merge=average|hma, METHODS.md section 4) of the trained policy, or of `merge.aligned`,
with the start model, or `merge.pre`; and the merge-only mode (`mode=merge`) that merges two existing checkpoints
and evaluates the result without training. Online merges (ondare, onties) act through the optimizer instead
(their plug-in's optimizer_factory) and have nothing to do here."""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from alignlab import models
from alignlab.data.pairs import read_jsonl
from alignlab.errors import ConfigError, instantiate
from alignlab.pipeline.evaluate import evaluate_model
from alignlab.pipeline.results import write_results
from alignlab.pipeline.start import StartModel


def merge_after_training(merge, start: StartModel, policy_dir: Path, out: Path, dtype: str, tokenizer, reward,
                         prompts: list[str], device) -> tuple[object | None, dict]:
    """(the merged model, frozen on `device`, and its merge/* metrics), or (None, {}) when the merge is not
    post-hoc."""
    if not merge.posthoc:
        return None, {}
    pre_dir = merge.pre or start.dir or models.save_hf(start.new(), tokenizer, out / "pre")
    metrics = merge.merge(pre_dir, merge.aligned or policy_dir, out / "merged", tokenizer=tokenizer, reward=reward,
                          prompts=prompts, device=device)
    return load_merged(out / "merged", dtype, device), metrics


def merge_only(merge, data_cfg, reward_cfg, eval_cfg, dtype: str, accelerator: str, seed: int, out: Path,
               config: dict, started: float) -> dict:
    """mode=merge: merge merge.pre and merge.aligned, then evaluate the result against merge.pre on the data's
    held-out prompts (and pairs, for preference accuracy)."""
    if not merge.posthoc or not merge.aligned or not merge.pre:
        raise ConfigError("mode=merge needs merge=average or merge=hma with merge.aligned and merge.pre set (got "
                          f"merge={merge.name}, aligned={merge.aligned}, pre={merge.pre})")
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(seed, workers=True)
    tokenizer = models.load_tokenizer(merge.aligned, key="merge.aligned")
    source, reward = instantiate(data_cfg.source), instantiate(reward_cfg)
    source.bind_tokenizer(tokenizer)
    device = "cuda" if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda") else "cpu"
    metrics = merge.merge(merge.pre, merge.aligned, out / "merged", tokenizer=tokenizer, reward=reward,
                          prompts=source.prompts("train", tokenizer), device=device)
    if eval_cfg.enabled:
        pre = models.freeze(models.load_pretrained(str(merge.pre), dtype, key="merge.pre"))
        metrics.update(evaluate_model(load_merged(out / "merged", dtype, device), pre, tokenizer, source,
                                      held_out_pairs(source, eval_cfg), None, reward, eval_cfg, data_cfg,
                                      seed, out))
    metrics["time/seconds"] = time.time() - started
    return write_results({"status": "ok", "metrics": metrics, "policy_dir": None, "merged_dir": str(out / "merged"),
                          "pre_dir": str(merge.pre), "stages": {}, "config": config}, out,
                         f"merge={merge.name}  model={config['model']['name']}  data={data_cfg.name}  seed={seed}")


def load_merged(merged_dir: Path, dtype: str, device):
    return models.freeze(models.load_pretrained(str(merged_dir), dtype, key="merged")).to(device)


def held_out_pairs(source, eval_cfg) -> list[dict]:
    """The pairs preference accuracy is measured on: the data source's validation pairs, or, for sources whose pairs
    are generated (mini-IMDb, IMDb), eval.pairs: the pair stage the aligned run trained on (its results.json
    stages.pairs), or a JSONL file of pairs."""
    rows = source.preference_rows("validation")
    if rows:
        return rows
    given = eval_cfg.get("pairs")
    if not given:
        return []
    path = Path(str(given)).expanduser()
    path = path / "validation.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"eval.pairs={given!r}: no such pair stage directory (with validation.jsonl) or JSONL file")
    return read_jsonl(path)

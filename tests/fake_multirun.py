"""A made-up multirun on disk, laid out as Hydra and alignlab.run write it, for tests and for trying the report
and the notebook without training anything (from the repository root):

    cd tests && python -c "from fake_multirun import make_fake_sweep; print(make_fake_sweep('/tmp/fake_sweep'))"

Sweep `method=dpo,tdpo2 method.beta=0.1,0.5 seed=0,1` (jobs 0-7), then `method=dpo method.beta=1.0 seed=0,1`:
job 8 failed (results.json with status "failed" and an error), job 9 left without results.json ("missing").

Per-seed metrics (seed 0, seed 1) of the ok jobs (also tax/probe_accuracy = 0.9 - tax/probe_drop,
tax/probe_accuracy_pre = 0.9, eval/entropy, val/loss, time/seconds):

    method  beta   eval/reward    eval/kl     tax/probe_drop
    dpo     0.1    0.60, 0.64     4.0, 5.0    0.10, 0.12
    dpo     0.5    0.50, 0.52     1.0, 1.4    0.02, 0.04
    tdpo2   0.1    0.70, 0.74     3.0, 3.4    0.06, 0.08
    tdpo2   0.5    0.55, 0.57     1.2, 1.6    0.01, 0.03
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

FAKE_METRICS = {  # (method, beta) -> {metric: (seed 0, seed 1)}
    ("dpo", 0.1): {"eval/reward": (0.60, 0.64), "eval/kl": (4.0, 5.0), "tax/probe_drop": (0.10, 0.12)},
    ("dpo", 0.5): {"eval/reward": (0.50, 0.52), "eval/kl": (1.0, 1.4), "tax/probe_drop": (0.02, 0.04)},
    ("tdpo2", 0.1): {"eval/reward": (0.70, 0.74), "eval/kl": (3.0, 3.4), "tax/probe_drop": (0.06, 0.08)},
    ("tdpo2", 0.5): {"eval/reward": (0.55, 0.57), "eval/kl": (1.2, 1.6), "tax/probe_drop": (0.01, 0.03)},
}
FAILED_ERROR = "RuntimeError: CUDA out of memory while allocating the reference logits | step 12\nsecond line"


def _job(root: Path, num: int, method: str, beta: float, seed: int) -> Path:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True, exist_ok=True)
    overrides = [f"method={method}", f"method.beta={beta}", f"seed={seed}", "experiment=smoke"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"method": {"name": method, "beta": beta}, "seed": seed,
              "paths": {"output_dir": "${hydra:runtime.output_dir}"}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return job


def _config(method: str, beta: float, seed: int) -> dict:
    return {"method": {"name": method, "beta": beta}, "seed": seed, "merge": {"name": "none"}}


def make_fake_sweep(root: str | os.PathLike) -> Path:
    """Write the sweep described in the module docstring under `root`; returns `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": [
        "method=dpo,tdpo2", "method.beta=0.1,0.5", "seed=0,1"]}}}))
    num = 0
    for (method, beta), metrics in FAKE_METRICS.items():
        for seed in (0, 1):
            job = _job(root, num, method, beta, seed)
            values = {k: v[seed] for k, v in metrics.items()}
            values.update({"eval/entropy": 3.0 + 0.1 * seed, "val/loss": 0.6 - beta / 10, "time/seconds": 10.0,
                           "tax/probe_accuracy": 0.9 - values["tax/probe_drop"], "tax/probe_accuracy_pre": 0.9})
            (job / "results.json").write_text(json.dumps({
                "status": "ok", "metrics": values, "policy_dir": str(job / "policy"),
                "stages": {"tokenizer": "t", "start": "s"}, "config": _config(method, beta, seed)}, indent=2))
            num += 1
    failed = _job(root, num, "dpo", 1.0, 0)
    (failed / "results.json").write_text(json.dumps({
        "status": "failed", "error": FAILED_ERROR, "error_type": "RuntimeError", "traceback": "Traceback ...",
        "metrics": {"train/loss": 0.7}, "policy_dir": None, "stages": {}, "config": _config("dpo", 1.0, 0)},
        indent=2))
    _job(root, num + 1, "dpo", 1.0, 1)  # missing: no results.json
    return root

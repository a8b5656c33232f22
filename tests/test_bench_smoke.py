"""Smoke test of experiments/bench/dpo_step.py on a tiny architecture: every variant (alignlab with precomputed and
with live reference log-probs, TRL with a live and a precomputed reference, bare PyTorch) runs, report positive throughput, and agree on the loss (the benchmark's correctness cross-check).

With the same init and the same pairs at every step, the first-step loss is ln 2 in every correct implementation
(policy == reference), so the test also compares the first-step log-probabilities and the last-step loss, which
does depend on each variant's gradients and optimizer step.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "experiments" / "bench" / "dpo_step.py"
TINY = "hidden_size=64,num_hidden_layers=2,num_attention_heads=2,intermediate_size=128,vocab_size=512"


def test_dpo_step_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false", "HF_HOME": str(tmp_path / "hf"),
           "WANDB_DIR": str(tmp_path / "wandb"), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--arch-override", TINY, "--steps", "3", "--warmup", "1",
           "--pairs", "2", "--seq-len", "32", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout}\n{proc.stderr[-5000:]}"
    assert "tokens/s" in proc.stdout and "alignlab/trl-precomputed" in proc.stdout and "alignlab/bare" in proc.stdout

    data = json.loads(out.read_text())
    variants = data["variants"]
    assert set(variants) == {"alignlab", "alignlab-live", "trl", "trl-precomputed", "bare"}
    for name in ("alignlab", "trl-precomputed"):  # the precompute pass is timed separately
        assert variants[name]["precompute_s"] > 0, name
    assert not data["failures"]
    for name, fig in variants.items():
        assert fig["tokens_per_step"] == 2 * 2 * 32, name
        assert fig["tokens_per_s"] > 0 and fig["median_step_s"] > 0, name
        assert fig["peak_mem_mb"] > 0, name
        assert len(fig["losses"]) == 3 and all(math.isfinite(x) for x in fig["losses"]), name
    for key in ("alignlab/trl", "alignlab/bare"):
        assert data["ratios"][key]["speed"] > 0 and data["ratios"][key]["memory"] > 0

    # the correctness cross-check: identical init and data => identical losses
    first = [fig["first_step_loss"] for fig in variants.values()]
    assert max(first) - min(first) < 1e-3, first
    assert abs(first[0] - math.log(2)) < 1e-5, first   # policy == reference at step 1
    last = [fig["last_step_loss"] for fig in variants.values()]
    assert max(last) - min(last) < 1e-3, last
    assert all(x < math.log(2) - 1e-4 for x in last), last   # the loss moved, so the comparison above means something
    for side in ("chosen", "rejected"):
        logps = [fig["first_step_logps"][side] for fig in variants.values()]
        assert max(logps) - min(logps) < 1e-3 * max(1.0, abs(logps[0])), (side, logps)
    assert data["cross_check_problems"] == []

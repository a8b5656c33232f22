"""Real multiruns: jobs in parallel with the joblib launcher, a failing job that does not stop the others, and the
sweep report written by the Hydra callback."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
FAST = ["experiment=smoke", "trainer.max_steps=4", "eval.n_prompts=8", "eval.max_new_tokens=8"]


def multirun(sweep_dir, *overrides):
    return subprocess.run([sys.executable, "-m", "alignlab", "--multirun", *FAST, *overrides,
                           f"hydra.sweep.dir={sweep_dir}"], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_joblib_launcher_runs_two_jobs_and_reports(tmp_path):
    proc = multirun(tmp_path, "method.beta=0.1,0.5", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert sorted(table["method.beta"]) == [0.1, 0.5] and set(table["status"]) == {"ok"}
    assert (tmp_path / "sweep.md").read_text().count("| dpo") >= 2
    assert any(tmp_path.glob("front_*.png"))


def test_a_failing_job_is_recorded_and_the_others_finish(tmp_path):
    proc = multirun(tmp_path, "method.beta=-1.0,0.1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    failed = json.loads((tmp_path / "0" / "results.json").read_text())
    assert failed["status"] == "failed" and "method.beta=-1.0 must be > 0" in failed["error"]
    assert json.loads((tmp_path / "1" / "results.json").read_text())["status"] == "ok"
    report = (tmp_path / "sweep.md").read_text()
    assert "method.beta=-1.0 must be > 0" in report

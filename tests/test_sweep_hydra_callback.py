"""The Hydra callback in real (tiny, training-free) multiruns: report at the end, failed jobs recorded."""
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from alignlab.sweep.hydra_callback import SweepReport, failed_results

REPO = Path(__file__).resolve().parent.parent
TARGET = "alignlab.sweep.hydra_callback.SweepReport"

APP = '''
import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    if cfg.method.beta >= 1.0:
        raise RuntimeError(f"beta {cfg.method.beta} diverged")
    out = Path(HydraConfig.get().runtime.output_dir)
    metrics = {"eval/reward": 1 - cfg.method.beta / 2 + cfg.seed / 100, "eval/kl": 1 / cfg.method.beta + cfg.seed}
    (out / "results.json").write_text(json.dumps({"status": "ok", "metrics": metrics,
                                                  "config": OmegaConf.to_container(cfg, resolve=True)}))
    return metrics["eval/reward"]


if __name__ == "__main__":
    main()
'''


def multirun(tmp_path, config: str, *overrides):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text(textwrap.dedent(config))
    env = {**os.environ, "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR", str(REPO / ".cache" / "test" / "mpl"))}
    return subprocess.run([sys.executable, "app.py", "--multirun", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                           *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_report_written_when_the_multirun_ends(tmp_path):
    proc = multirun(tmp_path, """
        method: {name: dpo, beta: 0.1}
        seed: 0
    """, "method.beta=0.1,0.5", "seed=0,1", f"+hydra.callbacks.collect._target_={TARGET}",
        "+hydra.callbacks.collect.refresh_each_job=false")
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "sweep"
    assert "alignlab.sweep: 4 jobs (4 ok, 0 failed, 0 missing)" in proc.stdout + proc.stderr
    summary = pd.read_csv(sweep / "sweep_summary.csv")
    assert summary["method.beta"].tolist() == [0.1, 0.5] and summary["n_seeds"].tolist() == [2, 2]
    # beta 0.1: reward 0.95, 0.96 -> 0.955; kl 10, 11 -> 10.5
    assert summary["eval/reward_mean"].tolist()[0] == 0.955 and summary["eval/kl_mean"].tolist()[0] == 10.5
    assert (sweep / "front_eval-reward_vs_eval-kl.png").stat().st_size > 0
    assert "None: all 4 jobs ok." in (sweep / "sweep.md").read_text()


def test_failed_job_recorded_and_reported_although_hydra_skips_multirun_end(tmp_path):
    proc = multirun(tmp_path, f"""
        method: {{name: dpo, beta: 0.1}}
        seed: 0
        hydra:
          callbacks:
            collect:
              _target_: {TARGET}
    """, "method.beta=0.5,1.0")
    # Hydra's basic sweeper re-raises the job's exception once all jobs ran: on_multirun_end is never called
    assert proc.returncode != 0 and "beta 1.0 diverged" in proc.stderr
    sweep = tmp_path / "sweep"
    failed = json.loads((sweep / "1" / "results.json").read_text())
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: beta 1.0 diverged"
    assert failed["error_type"] == "RuntimeError" and "Traceback" in failed["traceback"]
    assert failed["config"]["method"]["beta"] == 1.0
    md = (sweep / "sweep.md").read_text()  # written at the end of each job
    assert "| 1   | failed | method.beta=1.0 | RuntimeError: beta 1.0 diverged |" in md
    assert "1 ok, 1 failed, 0 missing" in md


def test_callback_never_raises(tmp_path, caplog):
    callback = SweepReport(maximize_x="false", refresh_each_job="false")
    assert callback.options["maximize_x"] is False and callback.refresh_each_job is False
    with caplog.at_level(logging.WARNING, logger="alignlab.sweep.hydra_callback"):
        callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "nowhere")}}}))
        callback.on_multirun_end(OmegaConf.create({}))
        callback.on_job_end(OmegaConf.create({}), job_return=object())
    assert "does not exist" in caplog.text and callback.last_report is None


def test_failed_results_schema():
    try:
        raise ValueError("bad beta")
    except ValueError as err:
        results = failed_results(err, config={"seed": 0}, metrics={"train/loss": 1.0})
    assert results["status"] == "failed" and results["error"] == "ValueError: bad beta"
    assert results["error_type"] == "ValueError" and "raise ValueError" in results["traceback"]
    assert results["metrics"] == {"train/loss": 1.0} and results["config"] == {"seed": 0}
    json.dumps(results)

"""What a run leaves and shows: results.json (strict JSON, provenance, metric definitions, never a failure over a
success), the attempts record, loggers that keep history across attempts, safe loading (weights-only checkpoints,
trust_remote_code), make clean-cache, and a console a person can read."""
import csv
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, compose_config


def strict(path):
    def refuse(constant):
        raise ValueError(f"{constant} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


# ---- results.json ----------------------------------------------------------------------------------------------
def test_results_json_is_strict_json_with_non_finite_values_as_null(tmp_path, capsys):
    from alignlab.pipeline.results import write_results

    write_results({"status": "ok", "metrics": {"eval/reward": 0.5, "eval/kl": math.nan, "val/loss": math.inf},
                   "config": {"method": {"beta": 0.1}}}, tmp_path, "title")
    results = strict(tmp_path / "results.json")
    assert results["metrics"]["eval/kl"] is None and results["metrics"]["val/loss"] is None
    assert results["notes"] == ["non-finite values written as null: metrics.eval/kl, metrics.val/loss"]
    assert "eval/kl" in capsys.readouterr().out  # the summary still prints (n/a)


def test_results_json_records_provenance_times_and_metric_definitions(tmp_path):
    import alignlab
    from alignlab.pipeline.results import begin_attempt, write_results

    begin_attempt(tmp_path, "python -m alignlab")
    write_results({"status": "ok", "metrics": {"eval/reward": 0.5, "eval/kl": 3.0, "eval/entropy": 1.0},
                   "started": "2026-01-01T00:00:00+00:00", "global_step": 7, "resumed_from": None}, tmp_path, "t")
    results = strict(tmp_path / "results.json")
    assert results["alignlab"]["version"] == alignlab.__version__
    assert len(results["alignlab"]["commit"]) == 40  # this checkout's commit
    assert results["ended"] >= results["started"] and results["global_step"] == 7
    assert "per sequence" in results["metric_definitions"]["eval/kl"]
    assert "per token" in results["metric_definitions"]["eval/entropy"]
    assert [a["status"] for a in results["attempts"]] == ["ok"]


def test_a_failure_never_replaces_a_successful_result(tmp_path):
    from alignlab.pipeline.results import attempts, begin_attempt, record

    begin_attempt(tmp_path)
    record({"status": "ok", "metrics": {"eval/reward": 0.9}}, tmp_path)
    begin_attempt(tmp_path)
    begin_attempt(tmp_path)  # killed: never ends
    record({"status": "failed", "error": "ConfigError: boom", "metrics": {}}, tmp_path)
    results = strict(tmp_path / "results.json")
    assert results["status"] == "ok" and results["metrics"] == {"eval/reward": 0.9}
    assert [a["status"] for a in attempts(tmp_path)] == ["ok", "killed", "failed"]
    assert attempts(tmp_path)[-1]["error"] == "ConfigError: boom"


def test_a_multirun_job_already_done_is_found_for_the_same_config_only(tmp_path):
    from alignlab.pipeline.results import already_done, record

    config = {"seed": 0, "method": {"beta": 0.1}, "ckpt_path": None}
    assert already_done(tmp_path, config) is None
    record({"status": "ok", "metrics": {"eval/reward": 0.9}, "config": config}, tmp_path)
    assert already_done(tmp_path, {**config, "ckpt_path": "last"})["metrics"] == {"eval/reward": 0.9}
    assert already_done(tmp_path, {**config, "seed": 1}) is None


# ---- loggers ---------------------------------------------------------------------------------------------------
def test_the_csv_logger_keeps_earlier_attempts_and_drops_steps_logged_again(tmp_path):
    from alignlab.loggers import CSVLogger

    first = CSVLogger(str(tmp_path), name="csv", version="")
    for step in range(8):  # an attempt that got to step 7, its last checkpoint at step 5
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.save()
    second = CSVLogger(str(tmp_path), name="csv", version="")
    second.resume_at(5)
    for step in range(5, 10):
        second.log_metrics({"train/loss": float(step), "val/loss": 1.0}, step=step)
    second.save()
    with open(tmp_path / "csv" / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(10))


def test_the_wandb_logger_resumes_the_same_run(tmp_path, monkeypatch):
    from alignlab.loggers import wandb_logger

    monkeypatch.setenv("WANDB_MODE", "offline")
    first = wandb_logger(save_dir=str(tmp_path), project="p")
    again = wandb_logger(save_dir=str(tmp_path), project="p")
    assert first._wandb_init["id"] == again._wandb_init["id"] and again._wandb_init["resume"] == "allow"
    assert wandb_logger(save_dir=str(tmp_path / "other"), project="p")._wandb_init["id"] != first._wandb_init["id"]


# ---- safe loading ----------------------------------------------------------------------------------------------
class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # runs on unpickling: creates the marker file


def test_converting_a_crafted_checkpoint_does_not_run_its_payload(tmp_path, capsys):
    from alignlab import checkpoints

    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": {"policy.w": torch.zeros(2)}, "evil": Payload(str(marker))}, tmp_path / "x.ckpt")
    with pytest.raises(SystemExit) as stop:
        checkpoints.main(["convert", str(tmp_path / "x.ckpt"), str(tmp_path / "out"), "--like", str(tmp_path)])
    assert stop.value.code == 2 and not marker.exists()
    assert "--unsafe-full-unpickle" in capsys.readouterr().err


def test_trust_remote_code_reaches_every_loader(monkeypatch):
    import transformers

    from alignlab import models
    from alignlab.rewards import HFClassifierReward

    seen = {}

    def fake(name):
        def from_pretrained(path, **kwargs):
            seen[name] = kwargs.get("trust_remote_code")
            raise OSError("stop here")
        return from_pretrained

    for cls in ("AutoModelForCausalLM", "AutoTokenizer", "AutoConfig", "AutoModelForSequenceClassification"):
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", fake(cls))
    try:
        models.trust_remote_code(True)
        for load in (lambda: models.load_pretrained("/x/y/z"), lambda: models.load_tokenizer("/x/y/z"),
                     lambda: HFClassifierReward("/x/y/z").load()):
            with pytest.raises(OSError):
                load()
    finally:
        models.trust_remote_code(False)
    assert seen and all(v is True for v in seen.values()), seen
    for name in sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")):
        overrides = [f"model={name}"] + (["model.name_or_path=x"] if name == "hf" else [])
        assert compose_config("/tmp", overrides).model.trust_remote_code is False


# ---- make clean-cache ------------------------------------------------------------------------------------------
def test_make_clean_cache_removes_the_cache_runs_use(tmp_path):
    stages, tests = tmp_path / "stages", tmp_path / "test-cache"
    for d in (stages / "sft-0123456789abcdef", tests / "alignlab"):
        d.mkdir(parents=True)
    env = {**os.environ, "ALIGNLAB_CACHE": str(stages)}
    # run from a scratch dir, so that a rule removing a relative path cannot touch this checkout
    proc = subprocess.run(["make", "-s", "-C", str(tmp_path), "-f", str(REPO / "Makefile"), "clean-cache",
                           f"VENV={REPO / '.venv'}", "STAMP=", f"TEST_CACHE={tests}"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not stages.exists() and not tests.exists()


# ---- the console -----------------------------------------------------------------------------------------------
NOISE = ("Tip:", "litlogger", "GPU available", "TPU available", "weights_only", "module(s) in eval mode",
         "LeafSpec", "Setting accelerator to CPU", "Loading weights", "Writing model shards", "INFO:",
         "val_check_interval", "Trainer.fit` stopped", "Seed set to")


@pytest.mark.slow
def test_the_console_shows_one_line_per_event(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "alignlab", "experiment=smoke", "eval.n_prompts=8",
                           "trainer.max_steps=4", f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert not [line for line in lines if any(n in line for n in NOISE)]
    assert len(lines) == len(set(lines)), "a line printed twice"
    assert "\r" not in proc.stdout + proc.stderr  # no progress bars in a log: nothing glued onto a summary line
    assert "alignlab  method=dpo  model=tiny  data=mini_imdb  seed=0" in proc.stdout.splitlines()
    assert len(lines) <= 25  # one screen
    assert (tmp_path / "__main__.log").read_text().count("Seed set to") >= 1  # the full log keeps everything

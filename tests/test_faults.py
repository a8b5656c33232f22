"""Fault injection: kill -9 and Ctrl-C at exact steps, killed and corrupted stage builds, a corrupted checkpoint, a
failed resume, a NaN run and a killed multirun. Each test checks what the project does and what is lost.

Runs that must die for real (kill -9) run as `python -m alignlab` subprocesses; the rest go through
alignlab.__main__.execute in-process (what the command line runs after Hydra composed the config), which is faster.
Faults land at exact optimizer steps (tests/faults.py), so nothing depends on timing.
"""
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, compose_config

pytestmark = pytest.mark.slow
SMOKE = ["experiment=smoke", "eval.enabled=false", "trainer.max_steps=12", "checkpoint.every_n_train_steps=5",
         "method.optim.warmup_ratio=0.25"]


def fault(step: int, sig: str) -> list[str]:
    return ["+callbacks.fault._target_=faults.SignalAtStep", f"+callbacks.fault.step={step}",
            f"+callbacks.fault.signal={sig}"]


def execute(out, overrides, monkeypatch):
    """`python -m alignlab <overrides>` in this process (the run dir is `out`)."""
    from alignlab import console
    from alignlab.__main__ import execute as run_as_cli

    console.setup()  # as main() does before execute
    monkeypatch.setattr(sys, "argv", ["alignlab", *overrides])
    return run_as_cli(compose_config(out, overrides))


def cli(out, overrides, cache=None, **kwargs):
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if cache is not None:
        env["ALIGNLAB_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "alignlab", *overrides, f"hydra.run.dir={out}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, **kwargs)


def strict_json(path):
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def weights(run_dir):
    return load_file(str(run_dir / "policy" / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=f"{key} differs")


def metric_steps(run_dir, key="train/loss"):
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get(key)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same 12 steps without any fault."""
    from alignlab.run import run

    out = tmp_path_factory.mktemp("uninterrupted")
    run(compose_config(out, SMOKE))
    return out


# ---- Ctrl-C ----------------------------------------------------------------------------------------------------
def test_ctrl_c_saves_the_current_step_and_the_resume_command_finishes_the_run(tmp_path, monkeypatch, capsys,
                                                                               uninterrupted):
    overrides = [*SMOKE, *fault(7, "SIGINT")]
    with pytest.raises(SystemExit) as stop:
        execute(tmp_path, overrides, monkeypatch)
    assert stop.value.code == 130
    err = capsys.readouterr().err
    assert "alignlab: interrupted: SIGINT after step 8" in err and "Traceback" not in err
    interrupted = strict_json(tmp_path / "results.json")
    assert interrupted["status"] == "interrupted"
    # the checkpoint holds step 8, not only the periodic step 5: nothing since the last periodic save is lost
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 8
    clock_before = next(v["seconds"] for k, v in ckpt["callbacks"].items() if k.startswith("RunClock"))

    resume = shlex.split(interrupted["resume_command"])
    assert resume[:3] == ["python", "-m", "alignlab"] and resume[-2:] == [f"hydra.run.dir={tmp_path}",
                                                                        "ckpt_path=last"]
    assert resume[3:-2] == overrides  # the exact command, run dir and ckpt_path=last added
    execute(tmp_path, resume[3:-2] + ["ckpt_path=last"], monkeypatch)

    done = strict_json(tmp_path / "results.json")
    assert done["status"] == "ok" and done["global_step"] == 12 and done["resumed_from"].endswith("last.ckpt")
    assert_same_weights(weights(uninterrupted), weights(tmp_path))
    # every logger keeps the whole history: the train rows of both attempts, each step once
    assert metric_steps(tmp_path) == metric_steps(uninterrupted)
    # time/seconds counts the interrupted attempt too
    assert done["metrics"]["time/seconds"] > clock_before
    assert [a["status"] for a in done["attempts"]] == ["interrupted", "ok"]


# ---- kill -9 ---------------------------------------------------------------------------------------------------
def test_kill_9_during_alignment_loses_only_the_steps_since_the_checkpoint(tmp_path, monkeypatch, uninterrupted):
    proc = cli(tmp_path, [*SMOKE, *fault(7, "SIGKILL")])
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "results.json").exists()
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 5  # steps 6-7 are lost, nothing else

    execute(tmp_path, [*SMOKE, "ckpt_path=last"], monkeypatch)
    done = strict_json(tmp_path / "results.json")
    assert done["status"] == "ok"
    assert [a["status"] for a in done["attempts"]] == ["killed", "ok"]
    assert_same_weights(weights(uninterrupted), weights(tmp_path))
    assert metric_steps(tmp_path) == metric_steps(uninterrupted)

    # a later resume that fails (here: last.ckpt truncated) never replaces the successful result
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(SystemExit) as stop:
        execute(tmp_path, [*SMOKE, "ckpt_path=last"], monkeypatch)
    assert stop.value.code == 2
    kept = strict_json(tmp_path / "results.json")
    assert kept["status"] == "ok" and kept["metrics"] == done["metrics"]
    from alignlab.pipeline.results import attempts

    third = attempts(tmp_path)[-1]
    assert third["status"] == "failed" and "truncated" in third["error"]


def _wait_for(predicate, what, proc, limit=300):
    deadline = time.monotonic() + limit
    while not predicate():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} after {limit} s"
        time.sleep(0.02)


def test_kill_9_during_a_stage_build_then_damaged_stages_are_rebuilt(tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    overrides = ["experiment=smoke", "eval.enabled=false", "trainer.max_steps=2", "data.source.n_reviews=120",
                 "data.source.n_pair_prompts=16", "data.source.n_eval_prompts=16", "data.pairs.max_new_tokens=8",
                 "sft.max_epochs=1"]
    env = {**os.environ, "ALIGNLAB_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "alignlab", *overrides, f"hydra.run.dir={tmp_path / 'a'}"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(cache.glob(".sft-*")), "the SFT build", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        proc.kill()
    assert not any(cache.glob("sft-*/STAGE_DONE.json"))  # it died mid-build: no stage, a temp dir left behind
    assert any(cache.glob(".sft-*"))

    monkeypatch.setenv("ALIGNLAB_CACHE", str(cache))
    execute(tmp_path / "b", overrides, monkeypatch)
    assert not any(cache.glob(".sft-*")), "the killed build's temp dir was not removed"
    results = strict_json(tmp_path / "b" / "results.json")
    stage = cache / results["stages"]["start"]
    pairs = results["stages"]["pairs"]

    # corrupt the cached stages: SFT weights truncated, the pairs file cut at a line boundary
    weights_file = stage / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:1000])
    train = cache / pairs / "train.jsonl"
    rows = train.read_text().splitlines(keepends=True)
    train.write_text("".join(rows[: len(rows) // 2]))
    caplog.clear()
    execute(tmp_path / "c", overrides, monkeypatch)
    assert f"{stage} is damaged" in caplog.text and f"{cache / pairs} is damaged" in caplog.text
    assert len(train.read_text().splitlines()) == len(rows)  # rebuilt with every row
    rebuilt = strict_json(tmp_path / "c" / "results.json")
    assert rebuilt["stages"] == results["stages"] and rebuilt["status"] == "ok"


# ---- NaN -------------------------------------------------------------------------------------------------------
def test_a_nan_run_stops_at_the_first_bad_step_and_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch, capsys):
    overrides = ["experiment=smoke", "eval.enabled=false", "method.optim.lr=1e4", "checkpoint.every_n_train_steps=1"]
    with pytest.raises(SystemExit) as stop:
        execute(tmp_path, overrides, monkeypatch)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "alignlab: error: alignment diverged at step 3: the gradient norm is nan" in err
    assert "train/loss=" in err and "Traceback" not in err  # the loss terms are named
    results = strict_json(tmp_path / "results.json")
    assert results["status"] == "failed" and results["error_type"] == "TrainingDiverged"
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "policy").exists()  # no NaN model is saved for anyone to load


# ---- a killed multirun ---------------------------------------------------------------------------------------
def test_rerunning_a_killed_multirun_skips_the_jobs_that_finished(tmp_path):
    # job 0 finishes; job 1 is killed at step 3 with the whole sweep (kill -9 of the multirun); its fault step is
    # swept so that job 0 has none (the step is never reached)
    sweep = ["--multirun", "experiment=smoke", "eval.enabled=false", "trainer.max_steps=6",
             "checkpoint.every_n_train_steps=3", "+callbacks.fault._target_=faults.SignalAtStep",
             "+callbacks.fault.step=99,3", "+callbacks.fault.signal=SIGKILL", f"hydra.sweep.dir={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    first = subprocess.run([sys.executable, "-m", "alignlab", *sweep], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert strict_json(tmp_path / "0" / "results.json")["status"] == "ok"
    assert not (tmp_path / "1" / "results.json").exists()

    # the README's rerun: the same command in the same sweep dir, ckpt_path=last
    second = subprocess.run([sys.executable, "-m", "alignlab", *sweep, "ckpt_path=last"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout + second.stderr
    assert out.count("already done") == 1 and f"already done: {tmp_path / '0'}" in out
    job0, job1 = (strict_json(tmp_path / j / "results.json") for j in "01")
    assert [a["status"] for a in job0["attempts"]] == ["ok"]  # not run again
    assert job1["status"] == "ok" and job1["resumed_from"].endswith("last.ckpt")  # resumed from step 3
    assert [a["status"] for a in job1["attempts"]] == ["killed", "ok"]

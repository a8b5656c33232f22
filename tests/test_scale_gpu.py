"""Scale-out on NVIDIA GPUs (skipped without CUDA): the DeepSpeed ZeRO-1/2/3 recipes run the smoke experiment
through Lightning's DeepSpeedStrategy, the ZeRO-3 checkpoint converts to an HF directory that reloads, bf16-mixed
and DDP runs complete, a DeepSpeed run resumes exactly, and the GPU benchmark produces its table.

Several of these need the run.py / base.py changes of the scale-out issue (the policy written from DeepSpeed's
fp32 master weights; on_load_checkpoint under DeepSpeed; DeepSpeedCPUAdam for the offload recipes).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO
from test_scale import COMMON, assert_same_training, cli, start_weights, weights

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")]
ONE_GPU = ["trainer.devices=1"]


def results_of(out):
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "ok"
    return results


def run_ok(out, overrides, timeout=600):
    proc = cli(out, overrides, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return results_of(out)


def convert(ckpt, out, like):
    proc = subprocess.run([sys.executable, "-m", "alignlab.strategies", "convert", str(ckpt), str(out), "--like",
                           str(like)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return load_file(str(out / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["deepspeed_zero1", "deepspeed_zero2", "deepspeed_zero3"])
def test_zero_recipes_run_the_smoke_experiment(trainer, tmp_path):
    results = run_ok(tmp_path / "run", [*COMMON, f"trainer={trainer}", *ONE_GPU])
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_dir()  # DeepSpeed's directory of per-rank shards
    start_dir = f"{results['config']['paths']['cache_dir']}/{results['stages']['start']}"
    converted = convert(ckpt, tmp_path / "hf", start_dir)
    saved = weights(tmp_path / "run")
    assert converted.keys() == saved.keys()
    for key in saved:  # the run's policy/ is the fp32 master weights, not the bf16 module copy
        assert saved[key].dtype == torch.float32
        torch.testing.assert_close(saved[key], converted[key], rtol=0, atol=0, msg=key)
    assert max((saved[k] - start_weights(results)[k]).abs().max().item() for k in saved) > 1e-4
    for shard in (ckpt / "checkpoint").glob("*model_states.pt"):
        state = torch.load(shard, map_location="cpu", weights_only=False)
        assert not any(k.startswith("reference.") for k in state["module"])  # exclude_frozen_parameters
        assert not state.get("frozen_param_fragments")


@pytest.mark.slow
def test_zero3_checkpoint_converts_to_an_hf_dir_that_reloads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    results = run_ok(tmp_path / "run", [*COMMON, "trainer=deepspeed_zero3", *ONE_GPU])
    out = tmp_path / "hf"
    convert(tmp_path / "run" / "checkpoints" / "last.ckpt", out, results["policy_dir"])
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("the film was", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    reference = AutoModelForCausalLM.from_pretrained(results["policy_dir"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(reference(ids).logits, logits, rtol=0, atol=0)


@pytest.mark.slow
def test_bf16_mixed_single_gpu_run_completes(tmp_path):
    results = run_ok(tmp_path, ["experiment=smoke", "trainer=gpu", "trainer.max_steps=12"])
    assert results["config"]["trainer"]["precision"] == "bf16-mixed"
    assert all(v.dtype == torch.float32 for v in weights(tmp_path).values())  # fp32 master weights saved
    assert results["metrics"]["eval/reward"] == results["metrics"]["eval/reward"]  # evaluated, not NaN


@pytest.mark.slow
def test_ddp_recipe_runs_on_one_gpu(tmp_path):
    run_ok(tmp_path, [*COMMON, "trainer=ddp", *ONE_GPU])


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_on_two_gpus_matches_one_gpu_with_the_doubled_batch(tmp_path):
    fp32 = ["trainer.precision=32-true"]
    one = run_ok(tmp_path / "one", [*COMMON, "trainer=gpu", *fp32, "data.batch_size=8"])
    run_ok(tmp_path / "two", [*COMMON, "trainer=ddp", "trainer.devices=2", *fp32, "data.batch_size=4"])
    assert_same_training(weights(tmp_path / "one"), weights(tmp_path / "two"), start_weights(one), "2 GPUs x 4")


@pytest.mark.slow
def test_deepspeed_run_resumes_exactly(tmp_path):
    common = [*COMMON, "trainer=deepspeed_zero2", *ONE_GPU, "trainer.precision=32-true"]
    full = run_ok(tmp_path / "full", common)
    stopped = cli(tmp_path / "resumed", [*common, "+callbacks.stop._target_=conftest.InterruptAtStep",
                                         "+callbacks.stop.step=7"])
    assert stopped.returncode != 0 and "simulated interruption" in stopped.stderr
    run_ok(tmp_path / "resumed", [*common, "ckpt_path=last"])
    assert_same_training(weights(tmp_path / "full"), weights(tmp_path / "resumed"), start_weights(full),
                         "ZeRO-2 resumed vs uninterrupted")


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["deepspeed_zero2_offload", "deepspeed_zero3_offload"])
def test_offload_recipes_run(trainer, tmp_path):
    run_ok(tmp_path, [*COMMON, f"trainer={trainer}", *ONE_GPU, "trainer.max_steps=4"], timeout=900)


@pytest.mark.slow
def test_gpu_benchmark_reports_throughput_mfu_and_memory(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "bench" / "gpu_step.py"), "--models",
                           "pythia-1b", "--methods", "dpo,aligndistil", "--trainers", "gpu,deepspeed_zero2",
                           "--arch-override", "num_hidden_layers=2", "--seq-len", "128", "--steps", "4",
                           "--warmup", "1", "--json", str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "ok", row
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1 and row["peak_alloc_gib"] > 0

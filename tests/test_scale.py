"""Scale-out on CPU: DDP (2 gloo processes) trains exactly as one process with the doubled batch and resumes
exactly; gradient accumulation equals the larger batch; activation checkpointing keeps the gradients; frozen models
stay out of optimizers and checkpoints (DDP) and are sharded but not saved under ZeRO-3 (plain DeepSpeed on CPU,
which Lightning's DeepSpeedStrategy refuses); every trainer/ config builds its strategy; impossible settings fail
before training with a clear error; the SLURM/joblib launcher presets compose; the GPU benchmark's dry run works.

The end-to-end runs (marked slow) share module-scoped fixtures: one single-process run with batch 8 and one DDP run
of 2 x 4 serve the DDP, accumulation, resume and checkpoint tests. Each optimizer step's loss over the whole global
batch is recorded by StepLoss (below): the mean over ranks of the sum over accumulated micro-batches of Lightning's
normalised loss, so 1 x 8, 2 ranks x 4 and 2 micro-batches x 4 give comparable trajectories.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file

from alignlab.errors import ConfigError
from conftest import CONF_DIR, REPO, compose_config, one_torch_thread

TRAINERS = sorted(p.stem for p in (Path(CONF_DIR) / "trainer").glob("*.yaml"))
DEEPSPEED = [t for t in TRAINERS if t.startswith("deepspeed")]
# data.packing=false: packing lays out a batch of 8 rows differently from two batches of 4 (same rows, other
# neighbours in a packed row), a float32 rounding difference that 8 AdamW steps grow to ~3e-5 in the loss: more than
# LOSS_ATOL, and whether `auto` packs depends on the sampled pairs' lengths, i.e. on the machine. Packing's own
# equivalence to padding is tested in tests/test_batching.py.
COMMON = ["experiment=smoke", "eval.enabled=false", "trainer.max_steps=10", "checkpoint.every_n_train_steps=5",
          "method.optim.warmup_ratio=0.25", "trainer.log_every_n_steps=1", "data.packing=false"]
SINGLE = ["trainer=cpu"]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
# Tolerances for runs that are mathematically equal but sum in another order (gloo all-reduce; micro-batches padded
# to their own length). Measured on the smoke run (10 AdamW steps, lr 3e-4): step losses differ by ~2e-7, final
# weights by ~2.5e-5 max |dw| and ~1e-4 of the update's norm, while training moves the weights by ~3e-3 (max) and the
# loss by ~0.05 -- a wrong data order or loss scaling gives differences of the size of the update itself.
WEIGHT_ATOL, UPDATE_RTOL, LOSS_ATOL = 1e-4, 2e-3, 1e-5


class StepLoss(L.Callback):
    """Writes {optimizer step: loss over the whole global batch} to `path` (JSON, rank 0), every batch."""

    def __init__(self, path: str):
        self.path, self.losses, self.step = path, {}, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = trainer.global_step  # before this batch's (possible) optimizer step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = trainer.strategy.reduce(outputs["loss"].detach().float(), reduce_op="mean")  # collective: all ranks
        self.losses[self.step] = self.losses.get(self.step, 0.0) + float(loss)
        if trainer.is_global_zero:
            Path(self.path).write_text(json.dumps(self.losses))


def step_loss(out: Path) -> list[str]:
    return [f"+callbacks.steploss._target_=test_scale.StepLoss", f"+callbacks.steploss.path={out / 'steps.json'}"]


def read_steps(out: Path) -> dict[int, float]:
    return {int(k): v for k, v in json.loads((out / "steps.json").read_text()).items()}


def cli(out: Path, overrides: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m alignlab ...` as a user runs it (Lightning starts rank 1 by re-running this command line); tests/
    is on PYTHONPATH so that callbacks from conftest and this module can be instantiated."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"), str(REPO),
                                                                     os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}  # one intra-op thread per process, as in this module's own runs (one_thread)
    env.pop("MASTER_PORT", None)
    return subprocess.run([sys.executable, "-m", "alignlab", *overrides, f"hydra.run.dir={out}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "policy" / "model.safetensors"))


def assert_same_training(a: dict, b: dict, start: dict, what: str) -> None:
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    update = torch.cat([(a[k] - start[k]).flatten() for k in a]).norm()
    gap = torch.cat([(a[k] - b[k]).flatten() for k in a]).norm()
    assert moved > 1e-3, f"training hardly moved the weights ({moved:.2e}): the comparison would mean nothing"
    assert diff < WEIGHT_ATOL and gap < UPDATE_RTOL * update, \
        f"{what}: max |dw| {diff:.2e}, |dw|/|update| {gap / update:.2e} (training moved the weights by {moved:.2e})"


def start_weights(results: dict) -> dict[str, torch.Tensor]:
    return load_file(f"{results['config']['paths']['cache_dir']}/{results['stages']['start']}/model.safetensors")


# ---- shared end-to-end runs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run of this module, in this process or a subprocess (cli), computes with one intra-op thread. Without
    this, Lightning gives each DDP rank cores // ranks threads (1 on 2 cores) while the one-process run has all the
    cores: matmuls then sum in another order, and 10 AdamW steps grow that to ~2e-5 in the loss (measured; 4e-7
    with equal threads), more than LOSS_ATOL, on some machines."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def single8(tmp_path_factory):
    """1 process, batch 8 (also warms the SFT/pairs cache the DDP subprocesses then reuse)."""
    from alignlab.run import run

    out = tmp_path_factory.mktemp("single8")
    return out, run(compose_config(out, [*COMMON, *SINGLE, "data.batch_size=8", *step_loss(out)]))


@pytest.fixture(scope="module")
def ddp_full(single8, tmp_path_factory):
    """2 gloo processes x batch 4, uninterrupted."""
    out = tmp_path_factory.mktemp("ddp_full")
    proc = cli(out, [*COMMON, *DDP, "data.batch_size=4", *step_loss(out)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads((out / "results.json").read_text())


# ---- DDP and gradient accumulation: the same training as one process with the full batch ----------------------
@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_doubled_batch(single8, ddp_full):
    (out1, results1), (out2, results2) = single8, ddp_full
    steps1, steps2 = read_steps(out1), read_steps(out2)
    assert sorted(steps1) == sorted(steps2) == list(range(10))
    for step in steps1:
        assert abs(steps1[step] - steps2[step]) < LOSS_ATOL, (step, steps1[step], steps2[step])
    assert_same_training(weights(out1), weights(out2), start_weights(results1), "DDP 2 x 4 vs 1 x 8")
    assert results2["config"]["trainer"]["devices"] == 2


@pytest.mark.slow
def test_gradient_accumulation_matches_the_larger_batch(single8, tmp_path):
    from alignlab.run import run

    out1, results1 = single8
    run(compose_config(tmp_path, [*COMMON, *SINGLE, "data.batch_size=4", "trainer.accumulate_grad_batches=2",
                                  *step_loss(tmp_path)]))
    steps1, steps2 = read_steps(out1), read_steps(tmp_path)
    assert sorted(steps2) == list(range(10))
    for step in steps1:  # DPO's loss is a mean over pairs: (mean_4 + mean_4) / 2 == mean_8
        assert abs(steps1[step] - steps2[step]) < LOSS_ATOL, (step, steps1[step], steps2[step])
    assert_same_training(weights(out1), weights(tmp_path), start_weights(results1), "2 x 4 accumulated vs 8")


@pytest.mark.slow
def test_ddp_resume_matches_the_uninterrupted_ddp_run(ddp_full, tmp_path):
    full_out, full = ddp_full
    interrupted = cli(tmp_path, [*COMMON, *DDP, "data.batch_size=4", *step_loss(tmp_path),
                                 "+callbacks.stop._target_=conftest.InterruptAtStep", "+callbacks.stop.step=7"])
    assert interrupted.returncode != 0 and "simulated interruption at step 7" in interrupted.stderr
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 5  # steps 6-7 were lost with the interruption

    resumed = cli(tmp_path, [*COMMON, *DDP, "data.batch_size=4", *step_loss(tmp_path), "ckpt_path=last"])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 10
    a, b = weights(full_out), weights(tmp_path)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=f"{key} differs after resume")
    steps_full, steps_resumed = read_steps(full_out), read_steps(tmp_path)
    for step in range(5, 10):  # the resumed run saw the same global batches at the same steps
        assert abs(steps_full[step] - steps_resumed[step]) < 1e-5, (step, steps_full[step], steps_resumed[step])
    assert max((a[k] - start_weights(full)[k]).abs().max().item() for k in a) > 1e-3


@pytest.mark.slow
def test_frozen_reference_is_in_no_optimizer_group_and_no_checkpoint_under_ddp(ddp_full, tmp_path):
    out, results = ddp_full
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = list(state["state_dict"])
    assert keys and all(k.startswith("policy.") for k in keys)
    groups = state["optimizer_states"][0]["param_groups"]
    assert sum(len(g["params"]) for g in groups) == len(keys)  # exactly the policy's tensors
    # the HF directory converted from last.ckpt by the CLI is the run's saved policy, tensor for tensor
    ckpt = out / "checkpoints" / "last.ckpt"
    proc = subprocess.run([sys.executable, "-m", "alignlab.checkpoints", "convert", str(ckpt), str(tmp_path / "hf"),
                           "--like", str(out / "policy")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    converted, saved = load_file(str(tmp_path / "hf" / "model.safetensors")), weights(out)
    assert converted.keys() == saved.keys()
    for key in saved:
        torch.testing.assert_close(converted[key], saved[key], rtol=0, atol=0)


# ---- the sampler design behind the DDP equivalence and resume ---------------------------------------------------
def test_rank_shards_of_a_step_make_up_the_single_process_batch():
    from alignlab.data.module import EpochSeededSampler, ResumableDataLoader

    n, per_rank, world = 43, 3, 2
    for epoch in (0, 1):
        single = EpochSeededSampler(n, seed=7)
        single.set_epoch(epoch)
        shards = [EpochSeededSampler(n, seed=7, rank=r, num_replicas=world) for r in range(world)]
        for s in shards:
            s.set_epoch(epoch)
        big = list(single)
        ranks = [list(s) for s in shards]
        assert len(ranks[0]) == len(ranks[1]) == n // world  # equal batch counts: no rank waits in an all-reduce
        assert not set(ranks[0]) & set(ranks[1])
        for k in range(len(ranks[0]) // per_rank):
            union = sorted(i for r in ranks for i in r[k * per_rank:(k + 1) * per_rank])
            assert union == sorted(big[k * per_rank * world:(k + 1) * per_rank * world]), (epoch, k)
    # resume: rank 1 restored after 4 batches continues with its 5th
    loader = ResumableDataLoader(list(range(n)), batch_size=per_rank, seed=7, rank=1, num_replicas=world)
    seen = [b.tolist() for b in loader]
    restored = ResumableDataLoader(list(range(n)), batch_size=per_rank, seed=7, rank=1, num_replicas=world)
    restored.load_state_dict({"epoch": 0, "batches_seen": 4})
    assert [b.tolist() for b in restored] == seen[4:]
    assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)  # so Lightning leaves it alone


def test_lightning_keeps_our_sampler_under_ddp_and_the_step_count_is_exact():
    """Lightning would otherwise re-instantiate ResumableDataLoader with a DistributedSamplerWrapper (which fails
    on its custom __init__, and would reshuffle the shards and break the resume position)."""
    from alignlab.data.module import AlignmentDataModule
    from alignlab.data.reviews import generate_reviews
    from alignlab.tokenizer import train_bpe_tokenizer

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, max_epochs=3)
    texts = [r["text"] for r in generate_reviews(60, seed=1)]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    rows = [{"prompt": t[:10], "chosen": t[10:40], "rejected": t[40:70]} for t in texts[:45]]
    data = AlignmentDataModule(tokenizer, rows, [], "pairs", 4, 4, 64, 16)
    data.trainer = trainer
    trainer.strategy.cluster_environment._global_rank = 1  # as rank 1 of 2 (set_global_rank would also change
    # the process-wide rank_zero_only.rank; no process group is needed to build the loader)
    loader = data.train_dataloader()
    assert loader.sampler.num_replicas == 2 and loader.sampler.rank == 1
    assert not trainer._data_connector._requires_distributed_sampler(loader)
    batches = len(loader)
    assert data.optimizer_steps(trainer) == batches * 3 == math.ceil((len(data.train) // 2) / 4) * 3


# ---- activation checkpointing ------------------------------------------------------------------------------------
def test_activation_checkpointing_keeps_the_gradients():
    """model.activation_checkpointing=true (alignlab.strategies.activation_checkpointing on the policy, which
    run.py's build_module calls): the DPO loss's gradients must not change."""
    from alignlab.data.tokenize import PreferenceCollator
    from alignlab.methods.dpo import DPO
    from alignlab.models import build_random, freeze
    from alignlab.strategies import activation_checkpointing

    arch = {"model_type": "gpt_neox", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 64, "vocab_size": 97, "hidden_dropout": 0.0,
            "attention_dropout": 0.0}
    gen = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(1, 97, (n,), generator=gen).tolist()  # noqa: E731
    batch = PreferenceCollator(0)([{"prompt_ids": ids(5), "chosen_ids": ids(7), "rejected_ids": ids(4)}
                                   for _ in range(3)])
    grads, calls = {}, {}
    for checkpointing in (False, True):
        policy = build_random(arch, seed=1)
        module = DPO(policy, freeze(build_random(arch, seed=2)), beta=0.1)
        activation_checkpointing(policy, checkpointing)
        assert all(layer.gradient_checkpointing == checkpointing for layer in policy.gpt_neox.layers)
        counter = []
        policy.gpt_neox.layers[0].mlp.dense_h_to_4h.register_forward_hook(lambda *args: counter.append(1))
        module.train()
        assert policy.training and not module.reference.training
        loss, _ = module.loss_and_metrics(batch)
        loss.backward()
        grads[checkpointing] = {n: p.grad.clone() for n, p in policy.named_parameters()}
        calls[checkpointing] = len(counter)
    assert calls[True] == 2 * calls[False] > 0  # the layers really were recomputed in the backward
    assert grads[False].keys() == grads[True].keys()
    for name, g in grads[False].items():
        assert g.abs().max() > 0 or "embed" in name
        torch.testing.assert_close(grads[True][name], g, rtol=1e-5, atol=1e-7, msg=name)


# ---- trainer configs, strategies and the checks before training --------------------------------------------------
@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_config_composes_and_builds_its_strategy(trainer, tmp_path):
    """DeepSpeed recipes: the DeepSpeedStrategy object is built (Lightning only refuses the CPU in setup, so a
    Trainer is not built here); the others: a whole Trainer, on the CPU."""
    cfg = compose_config(tmp_path, [f"trainer={trainer}"])
    OmegaConf.to_container(cfg.trainer, resolve=True, throw_on_missing=True)
    if trainer in DEEPSPEED:
        from lightning.pytorch.strategies import DeepSpeedStrategy

        strategy = instantiate(cfg.trainer.strategy)
        assert isinstance(strategy, DeepSpeedStrategy)
        zero = strategy.config["zero_optimization"]
        assert zero["stage"] == int(trainer[len("deepspeed_zero")])
        assert ("offload_optimizer" in zero) == trainer.endswith("offload")
        assert ("offload_param" in zero) == (trainer == "deepspeed_zero3_offload")
        assert strategy.exclude_frozen_parameters is True
        assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
        return
    devices = 2 if trainer == "ddp" else 1
    built = instantiate(cfg.trainer, accelerator="cpu", devices=devices, logger=False, enable_checkpointing=False)
    assert isinstance(built, L.Trainer) and built.num_devices == devices
    if trainer == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        assert isinstance(built.strategy, DDPStrategy) and built.world_size == 2


def test_offloading_recipes_get_deepspeeds_cpu_adam(tmp_path):
    from lightning.pytorch.strategies import DDPStrategy

    from alignlab.strategies import offloads_optimizer

    for trainer in DEEPSPEED:
        strategy = instantiate(compose_config(tmp_path, [f"trainer={trainer}"]).trainer.strategy)
        assert offloads_optimizer(strategy) == trainer.endswith("offload"), trainer
    assert not offloads_optimizer(DDPStrategy())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("trainer", DEEPSPEED)
def test_deepspeed_without_cuda_is_refused_with_a_way_out(trainer, tmp_path):
    from alignlab.pipeline.validate import validate as check_trainer_config

    with pytest.raises(ConfigError, match="DeepSpeedStrategy runs only on CUDA GPUs") as err:
        check_trainer_config(compose_config(tmp_path, [f"trainer={trainer}"]))
    assert "trainer=ddp trainer.accelerator=cpu" in str(err.value) and "trainer=cpu" in str(err.value)


@pytest.mark.parametrize("merge", ["ondare", "onties"])
@pytest.mark.parametrize("trainer", ["deepspeed_zero1", "deepspeed_zero3_offload"])
def test_online_merging_with_deepspeed_is_refused(merge, trainer, tmp_path):
    from alignlab.pipeline.validate import validate as check_trainer_config

    with pytest.raises(ConfigError, match=f"merge={merge}.*cannot run with") as err:
        check_trainer_config(compose_config(tmp_path, [f"trainer={trainer}", f"merge={merge}"]))
    assert "trainer=ddp" in str(err.value) and "merge=average" in str(err.value)


def test_on_policy_sampling_under_multi_gpu_zero3_is_refused(tmp_path, monkeypatch):
    """HF generate stops when every sequence of *this* rank hit EOS; under ZeRO-3 each forward all-gathers the
    layers with the other ranks, so ranks that stop early would leave the others waiting."""
    from alignlab.pipeline.validate import validate as check_trainer_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    on_policy = ["method=aligndistil", "method.mode=on_policy"]
    with pytest.raises(ConfigError, match="method.mode=on_policy with .*ZeRO stage 3"):
        check_trainer_config(compose_config(tmp_path, [*on_policy, "trainer=deepspeed_zero3"]))
    check_trainer_config(compose_config(tmp_path, [*on_policy, "trainer=deepspeed_zero3", "trainer.devices=1"]))
    check_trainer_config(compose_config(tmp_path, [*on_policy, "trainer=deepspeed_zero2"]))
    check_trainer_config(compose_config(tmp_path, ["method=aligndistil", "trainer=deepspeed_zero3_offload"]))


def test_more_devices_than_the_machine_has_is_refused(tmp_path, monkeypatch):
    from alignlab.pipeline.validate import validate as check_trainer_config

    def check(*overrides):
        check_trainer_config(compose_config(tmp_path, list(overrides)))

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
            check("trainer=ddp", "trainer.devices=4")
        with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
            check("trainer=gpu")
    check("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=4")  # CPU devices are processes: any number
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with pytest.raises(ConfigError, match=r"trainer.devices=4 .* asks for 4 GPUs per node but this machine has 1"):
        check("trainer=gpu", "trainer.devices=4")
    with pytest.raises(ConfigError, match="asks for 2 GPUs"):
        check("trainer=deepspeed_zero2", "trainer.devices=[0,1]")
    check("trainer=deepspeed_zero3", "trainer.devices=1")
    check("trainer=ddp")  # auto: all visible GPUs
    with pytest.raises(ConfigError, match="must be >= 1"):
        check("trainer=gpu", "trainer.devices=0")


def test_slurm_tasks_per_node_must_equal_devices(tmp_path, monkeypatch):
    from alignlab.pipeline.validate import validate as check_trainer_config

    for key, value in {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2",
                       "SLURM_JOB_NAME": "sweep"}.items():
        monkeypatch.setenv(key, value)
    base = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true"]
    with pytest.raises(ConfigError, match="SLURM runs 4 tasks per node"):
        check_trainer_config(compose_config(tmp_path, [*base, "trainer.devices=2", "trainer.num_nodes=2"]))
    with pytest.raises(ConfigError, match="the SLURM job has 2 nodes"):
        check_trainer_config(compose_config(tmp_path, [*base, "trainer.devices=4"]))
    check_trainer_config(compose_config(tmp_path, [*base, "trainer.devices=4", "trainer.num_nodes=2"]))


def test_resuming_a_checkpoint_of_the_other_kind_is_refused(tmp_path):
    from alignlab.pipeline.validate import validate as check_trainer_config

    (tmp_path / "checkpoints" / "last.ckpt").mkdir(parents=True)  # what DeepSpeed writes: a directory of shards
    with pytest.raises(ConfigError, match="is a DeepSpeed checkpoint directory"):
        check_trainer_config(compose_config(tmp_path, ["trainer=cpu", "ckpt_path=last"]))
    check_trainer_config(compose_config(tmp_path, ["trainer=cpu"]))


def test_the_entry_point_reports_trainer_errors_before_training(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    proc = cli(tmp_path, ["trainer=deepspeed_zero2"], timeout=120)
    assert proc.returncode == 2
    assert "DeepSpeedStrategy runs only on CUDA GPUs" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "csv").exists()


# ---- ZeRO-3 on CPU with plain DeepSpeed: frozen models sharded, not saved; the checkpoint converts -------------
ZERO3_SCRIPT = r'''
import json, math, os, sys
from pathlib import Path
os.environ["DS_ACCELERATOR"] = "cpu"
import torch, deepspeed
sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None  # gloo only: skip JIT-compiling the shm comm op
from transformers import AutoModelForCausalLM
from alignlab.data.tokenize import PreferenceCollator
from alignlab.methods.dpo import DPO
from alignlab.models import freeze

out, hf = Path(sys.argv[1]), sys.argv[2]
deepspeed.init_distributed("gloo")
rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
policy = AutoModelForCausalLM.from_pretrained(hf)
module = DPO(policy, freeze(AutoModelForCausalLM.from_pretrained(hf)), beta=0.1)
module.forward = lambda batch: module.loss_and_metrics(batch)[0]  # what Lightning's forward redirection does
optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
config = {"train_micro_batch_size_per_gpu": 2, "gradient_clipping": 1.0, "zero_allow_untested_optimizer": True,
          # tiny tensors would otherwise all stay unpartitioned (default threshold 1e5 elements)
          "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
# as Lightning's DeepSpeedStrategy._setup_model_and_optimizer calls it
engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=config, dist_init_required=False,
                                  model_parameters=filter(lambda p: p.requires_grad, module.parameters()))
frozen = list(module.reference.parameters())
facts = {"frozen_partitioned": all(hasattr(p, "ds_id") and p.numel() == 0 and
                                   p.ds_tensor.numel() == math.ceil(p.ds_numel / world) for p in frozen),
         "frozen_numel": sum(p.ds_numel for p in frozen),
         "policy_numel": sum(p.ds_numel for p in policy.parameters())}
gen = torch.Generator().manual_seed(rank)
ids = lambda n: torch.randint(1, policy.config.vocab_size, (n,), generator=gen).tolist()
for _ in range(3):
    batch = PreferenceCollator(0)([{"prompt_ids": ids(5), "chosen_ids": ids(6), "rejected_ids": ids(6)}
                                   for _ in range(2)])
    loss = engine(batch)
    engine.backward(loss)
    engine.step()
# as Lightning's DeepSpeedStrategy.save_checkpoint does with exclude_frozen_parameters: true
engine.save_checkpoint(str(out / "last.ckpt"), client_state={"global_step": 3, "epoch": 0}, tag="checkpoint",
                       exclude_frozen_parameters=True)
with deepspeed.zero.GatheredParameters(list(policy.parameters()), modifier_rank=None):
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in policy.state_dict().items()}, out / "gathered.pt")
(out / f"facts{rank}.json").write_text(json.dumps(facts))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_zero3_shards_frozen_models_saves_only_the_policy_and_converts_to_hf(tmp_path):
    pytest.importorskip("deepspeed")
    from transformers import AutoModelForCausalLM

    from alignlab.models import build_random

    hf = tmp_path / "start"
    build_random({"model_type": "gpt_neox", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 64, "max_position_embeddings": 64, "vocab_size": 101, "hidden_dropout": 0.0,
                  "attention_dropout": 0.0}, seed=3).save_pretrained(hf)
    script = tmp_path / "zero3.py"
    script.write_text(ZERO3_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu",
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch_extensions"))}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), str(script), str(tmp_path), str(hf)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    facts = [json.loads((tmp_path / f"facts{r}.json").read_text()) for r in range(2)]
    assert all(f["frozen_partitioned"] for f in facts)  # each rank holds half of every reference tensor

    shards = tmp_path / "last.ckpt" / "checkpoint"
    model_states = sorted(shards.glob("*model_states.pt"))
    optim_states = sorted(shards.glob("*optim_states.pt"))
    assert len(model_states) == len(optim_states) == 2
    for f in model_states:
        state = torch.load(f, map_location="cpu", weights_only=False)
        assert not any(k.startswith("reference.") for k in state["module"])
        assert not state.get("frozen_param_fragments") and not state.get("frozen_param_shapes")
        assert state["global_step"] == 3  # Lightning's client state travels in the same file
    fp32 = 0
    for f in optim_states:
        groups = torch.load(f, map_location="cpu", weights_only=False)["optimizer_state_dict"]["fp32_flat_groups"]
        fp32 += sum(g.numel() for g in groups)
    policy_numel, frozen_numel = facts[0]["policy_numel"], facts[0]["frozen_numel"]
    assert policy_numel <= fp32 < policy_numel + frozen_numel // 2  # master weights of the policy only (+ padding)

    convert = subprocess.run([sys.executable, "-m", "alignlab.checkpoints", "convert", str(tmp_path / "last.ckpt"),
                              str(tmp_path / "hf"), "--like", str(hf)], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120)
    assert convert.returncode == 0, convert.stderr[-3000:]
    converted = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()
    gathered = torch.load(tmp_path / "gathered.pt", map_location="cpu")
    start = AutoModelForCausalLM.from_pretrained(hf).state_dict()
    assert converted.keys() == gathered.keys()
    for key in gathered:
        torch.testing.assert_close(converted[key], gathered[key], rtol=0, atol=0, msg=key)
    assert max((converted[k] - start[k]).abs().max().item() for k in start) > 1e-3  # it trained


def test_converting_a_checkpoint_without_the_policy_says_so(tmp_path):
    from alignlab.checkpoints import policy_state_dict

    torch.save({"state_dict": {"reference.w": torch.zeros(2)}}, tmp_path / "x.ckpt")
    with pytest.raises(ConfigError, match="no tensors under 'policy.'"):
        policy_state_dict(tmp_path / "x.ckpt")
    with pytest.raises(ConfigError, match="does not exist"):
        policy_state_dict(tmp_path / "missing.ckpt")


# ---- launchers ---------------------------------------------------------------------------------------------------
def compose_with_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_slurm_launcher_preset_composes_and_builds(tmp_path):
    cfg = compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.nodes=2",
                              "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=30",
                              "trainer=deepspeed_zero2", "trainer.devices=4", "trainer.num_nodes=2",
                              f"hydra.sweep.dir={tmp_path}"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 2, 4, 4)
    assert launcher.tasks_per_node == cfg.trainer.devices and launcher.nodes == cfg.trainer.num_nodes
    built = instantiate(launcher)
    assert type(built).__name__ == "SlurmLauncher"
    joblib = compose_with_hydra(["hydra/launcher=joblib_local"]).hydra.launcher
    assert joblib.n_jobs == 2 and type(instantiate(joblib)).__name__ == "JoblibLauncher"


def test_slurm_sweep_command_composes_on_the_command_line(tmp_path):
    """The README's command, with --cfg hydra in place of --multirun (Hydra takes one of the two)."""
    proc = subprocess.run([sys.executable, "-m", "alignlab", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                           "trainer=deepspeed_zero2", "trainer.devices=8", "method=tdpo2", "--cfg", "hydra"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SlurmLauncher" in proc.stdout and "partition: gpu" in proc.stdout


# ---- the GPU benchmark is not dead code ----------------------------------------------------------------------------
@pytest.mark.slow
def test_gpu_bench_dry_run(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "bench" / "gpu_step.py"), "--dry-run", "--json",
                           str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tokens/s" in proc.stdout and "MFU" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {(r["model"], r["method"]) for r in rows} == {(m, x) for m in ("pythia-1b", "pythia-2.8b")
                                                        for x in ("dpo", "tdpo2", "aligndistil")}
    ran = [r for r in rows if r["trainer"] == "gpu"]
    assert len(ran) == 6 and all(r["status"] == "ok" and r["tokens_per_s"] > 0 for r in ran)
    for r in ran:
        frozen = 2 if r["method"] == "aligndistil" else 1
        assert len(r["flop_params_frozen"]) == frozen
        tokens = r["tokens_per_step"]
        assert tokens == (2 if r["method"] != "aligndistil" else 1) * 2 * 32
        assert r["model_flops_per_step"] == 6 * r["flop_params_policy"] * tokens + \
            sum(2 * n * tokens for n in r["flop_params_frozen"])
    assert all(r["status"].startswith("built") for r in rows if r["trainer"].startswith("deepspeed"))

#!/usr/bin/env python
"""GPU step benchmark of the alignment objectives under the trainer/ recipes: tokens/s, MFU and peak memory.

For every (model, method, trainer) it trains --steps optimizer steps of the method's LightningModule
(alignlab.methods: DPO, TDPO2, AlignDistil) with the Lightning Trainer that `trainer=<name>` builds in a real run
(alignlab.pipeline.fit.make_trainer on the composed config, devices=1), on random-init models of the exact architecture of
conf/model/<model>.yaml (alignlab.models.build_random): the policy, a frozen reference, and for AlignDistil two
frozen random-init teachers (the DPO and reverse-DPO models). Batches are random token ids: --pairs pairs per
device of --seq-len tokens each (prompt T//2, response T - T//2), i.e. 2P sequences for DPO/TDPO2 and P sequences
(the chosen responses) for AlignDistil, so the tokens per step are stated with every row.

Figures (timed steps = those after --warmup; each combination runs in a fresh spawned process, one at a time):
  tokens/s      tokens per step / median step time; a step = Lightning's on_train_batch_start -> _end, with
                torch.cuda.synchronize(), so forward, backward, optimizer step (and DeepSpeed's communication).
  MFU           model FLOPs per step / median step time / (devices x --peak-tflops), with
                  model FLOPs = 6 * N_policy * tokens            (policy forward + backward)
                              + 2 * N_frozen * tokens per frozen forward (DPO/TDPO2: the reference;
                                AlignDistil: its DPO and reverse-DPO teachers)
                N = parameters without the input embedding (a lookup: no FLOPs); tokens = rows x seq-len (random
                batches have no padding). Not counted: attention-score FLOPs (12 * layers * hidden * seq-len per
                token, ~4% of 6N at 512 tokens on pythia-1b), AlignDistil's teacher LM heads applied to response
                positions only (counted on all: an upper bound), and activation-checkpointing recompute (MFU, not HFU).
                --peak-tflops: dense bf16 peak per device, default 989 (H100 SXM); H100 PCIe 756, A100 312.
  peak memory   torch.cuda.max_memory_allocated (and _reserved) from just before trainer.fit to the end, GiB,
                and the allocated peak over the timed steps alone ("step peak").

DeepSpeed stages on one GPU show each stage's overhead and the offload variants' savings; the partitioning savings
of ZeRO-1/2/3 (optimizer states, gradients, parameters / N) need N GPUs, which this single-process script does not
launch.

    python experiments/bench/gpu_step.py                                   # 2 models x 3 methods x 4 trainers
    python experiments/bench/gpu_step.py --models pythia-1b --methods dpo --trainers gpu,deepspeed_zero2 --json b.json
    python experiments/bench/gpu_step.py --dry-run                         # tiny models, one CPU step each
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from common import parse_overrides  # noqa: E402  (this folder is on sys.path)

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODELS = ("pythia-1b", "pythia-2.8b")
METHODS = ("dpo", "tdpo2", "aligndistil")
TRAINERS = ("gpu", "deepspeed_zero1", "deepspeed_zero2", "deepspeed_zero3")
ALL_TRAINERS = TRAINERS + ("ddp", "deepspeed_zero2_offload", "deepspeed_zero3_offload")
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
        "vocab_size": 512, "max_position_embeddings": 128}
H100_SXM_BF16_DENSE_TFLOPS = 989.0
EOS_ID = 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="conf/model names (default: %(default)s)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"among {','.join(METHODS)} (default: all)")
    p.add_argument("--trainers", default=",".join(TRAINERS),
                   help=f"conf/trainer names among {','.join(ALL_TRAINERS)} (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per sequence (default 512)")
    p.add_argument("--pairs", type=int, default=4, help="pairs (AlignDistil: sequences) per device and step (4)")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per combination (default 8)")
    p.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing (default 3)")
    p.add_argument("--peak-tflops", type=float, default=H100_SXM_BF16_DENSE_TFLOPS,
                   help="dense bf16 peak TFLOP/s per device for MFU (default 989: H100 SXM)")
    p.add_argument("--frozen-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="dtype of the frozen models under trainer=gpu/ddp (run.py's default model.dtype is float32; "
                        "DeepSpeed's bf16 mode casts them to bf16 anyway)")
    p.add_argument("--activation-checkpointing", action="store_true", help="checkpoint the policy's layers")
    p.add_argument("--arch-override", default="", help="comma list key=value applied to every architecture")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dry-run", action="store_true",
                   help="tiny architectures, seq 32, 2 pairs, 2 steps, on CPU in this process; DeepSpeed trainers "
                        "are composed and their strategy built but not run (they need CUDA)")
    args = p.parse_args(argv)
    args.models = [m for m in (s.strip() for s in args.models.split(",")) if m]
    args.methods = [m for m in (s.strip() for s in args.methods.split(",")) if m]
    args.trainers = [t for t in (s.strip() for s in args.trainers.split(",")) if t]
    for name, values, known in (("--methods", args.methods, METHODS), ("--trainers", args.trainers, ALL_TRAINERS)):
        bad = [v for v in values if v not in known]
        if bad or not values:
            p.error(f"{name}: unknown {bad}; choose among {','.join(known)}")
    for m in args.models:
        if not (REPO / "conf" / "model" / f"{m}.yaml").exists():
            p.error(f"--models: no conf/model/{m}.yaml")
    args.arch_override = parse_overrides(args.arch_override)
    if args.dry_run:
        args.seq_len, args.pairs, args.steps, args.warmup = 32, 2, 2, 1
        args.arch_override = {**TINY, **args.arch_override}
    if args.steps <= args.warmup:
        p.error("--steps must be larger than --warmup")
    if args.seq_len < 4:
        p.error("--seq-len must be at least 4")
    return args


# ---- configuration and models ---------------------------------------------------------------------------------
def compose(model: str, method: str, trainer: str, args, cpu_stand_in: bool = False):
    """The run config a user would get from `model=.. method=.. trainer=..` with one device."""
    from hydra import compose as hydra_compose, initialize_config_dir

    overrides = [f"model={model}", f"method={method}", f"trainer={trainer}", "trainer.devices=1",
                 "trainer.num_nodes=1", f"trainer.max_steps={args.steps}", "trainer.max_epochs=1",
                 "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
                 f"data.batch_size={args.pairs}", "paths.output_dir=/tmp/alignlab-gpu-bench", "paths.cache_dir=/tmp"]
    if cpu_stand_in:
        overrides += ["trainer.accelerator=cpu", "trainer.precision=32-true"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def architecture(cfg, overrides: dict) -> dict:
    from omegaconf import OmegaConf

    arch = OmegaConf.to_container(cfg.model.architecture, resolve=True)
    arch.update(overrides)
    if "vocab_size" not in arch:
        raise SystemExit(f"model={cfg.model.name} has no architecture.vocab_size; add --arch-override vocab_size=N")
    arch.setdefault("hidden_dropout", 0.0)
    arch.setdefault("attention_dropout", 0.0)
    return arch


def flop_params(model) -> int:
    """Parameters that take part in matmuls: all but the input embedding (unless it is tied to the LM head)."""
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embed
    return total if tied else total - embed.numel()


def build_module(cfg, args, device):
    """(module, frozen models that run a forward each step, rows per step)."""
    import copy

    import torch
    from hydra.utils import get_class

    from alignlab import models, strategies
    from alignlab.pipeline.fit import build_module as method_module

    arch = architecture(cfg, args.arch_override)
    with torch.device(device):  # random init directly on the device: minutes faster for billions of parameters
        policy = models.build_random(arch, dtype="float32", seed=args.seed)
    frozen_dtype = models.torch_dtype(args.frozen_dtype)

    def frozen_copy(noise_seed: int | None):
        model = copy.deepcopy(policy).to(frozen_dtype)
        if noise_seed is not None:  # distinct teachers (their values do not change the cost)
            gen = torch.Generator(device=device).manual_seed(noise_seed)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=gen, device=device, dtype=p.dtype), alpha=1e-3)
        return models.freeze(model)

    # the frozen models the method declares, each a distinct random copy (their values do not change the cost)
    declared = get_class(cfg.method._target_).frozen_models(cfg.method)
    frozen = {key: frozen_copy(None if key == "reference" else i + 1) for i, key in enumerate(declared)}
    strategies.activation_checkpointing(policy, args.activation_checkpointing)  # as run.py does for the policy
    module = method_module(cfg.method, policy, frozen, tokenizer=None)
    forwards = [getattr(module, key) for key in frozen]
    rows = args.pairs * (2 if module.batch_kind == "pairs" else 1)
    return module, forwards, rows, arch


def random_datamodule(kind: str, args, vocab: int):
    import random

    import lightning as L
    from torch.utils.data import DataLoader

    from alignlab.data.tokenize import PreferenceCollator, SequenceCollator

    rng = random.Random(args.seed)
    p_len, r_len = args.seq_len // 2, args.seq_len - args.seq_len // 2

    def ids(n: int, eos: bool) -> list[int]:
        return [rng.randrange(1, vocab) for _ in range(n - int(eos))] + ([EOS_ID] if eos else [])

    n = args.pairs * args.steps
    if kind == "pairs":
        rows = [{"prompt_ids": ids(p_len, False), "chosen_ids": ids(r_len, True), "rejected_ids": ids(r_len, True)}
                for _ in range(n)]
        collate = PreferenceCollator(EOS_ID)
    else:
        rows = [{"prompt_ids": ids(p_len, False), "response_ids": ids(r_len, True)} for _ in range(n)]
        collate = SequenceCollator(EOS_ID)

    class RandomBatches(L.LightningDataModule):
        def optimizer_steps(self, trainer) -> int:  # AlignmentModule.configure_optimizers asks for the LR schedule
            return trainer.max_steps

        def train_dataloader(self):
            return DataLoader(rows, batch_size=args.pairs, shuffle=False, collate_fn=collate)

    return RandomBatches()


# ---- one combination ------------------------------------------------------------------------------------------
def run_one(job: dict, args) -> dict:
    """Build, train --steps steps, measure. Returns one row of the table."""
    warnings.filterwarnings("ignore")
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers", "DeepSpeed", "deepspeed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import lightning as L
    import torch

    from alignlab.pipeline.fit import make_trainer
    from alignlab.strategies import is_deepspeed

    model, method, trainer_name = job["model"], job["method"], job["trainer"]
    row = {"model": model, "method": method, "trainer": trainer_name, "status": "ok"}
    cuda = torch.cuda.is_available() and not args.dry_run
    deepspeed = trainer_name.startswith("deepspeed")
    if deepspeed and not cuda:
        from hydra.utils import instantiate

        strategy = instantiate(compose(model, method, trainer_name, args).trainer.strategy)
        row.update(status="built, not run (DeepSpeed needs CUDA)", zero_stage=strategy.config["zero_optimization"]
                   ["stage"])
        return row
    cfg = compose(model, method, trainer_name, args, cpu_stand_in=not cuda)
    device = torch.device("cuda" if cuda else "cpu")
    L.seed_everything(args.seed, workers=False, verbose=False)
    module, forwards, rows, arch = build_module(cfg, args, device)
    n_policy, n_frozen = flop_params(module.policy), [flop_params(m) for m in forwards]
    tokens = rows * args.seq_len
    flops = 6 * n_policy * tokens + sum(2 * n * tokens for n in n_frozen)
    row.update(precision=str(cfg.trainer.precision), params_policy=sum(p.numel() for p in module.policy.parameters()),
               flop_params_policy=n_policy, flop_params_frozen=n_frozen, rows_per_step=rows, tokens_per_step=tokens,
               model_flops_per_step=flops, peak_tflops=args.peak_tflops)

    class StepTimer(L.Callback):
        def __init__(self):
            self.times, self.losses, self.step_peak = [], [], 0

        def _sync(self):
            if cuda:
                torch.cuda.synchronize()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._sync()
            if cuda and len(self.times) == args.warmup:
                torch.cuda.reset_peak_memory_stats()
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self._sync()
            self.times.append(time.perf_counter() - self.t0)
            self.losses.append(float(outputs["loss"]))
            if cuda and len(self.times) > args.warmup:
                self.step_peak = max(self.step_peak, torch.cuda.max_memory_allocated())

    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        trainer = make_trainer(cfg.trainer, Path(tmp), loggers=False, callbacks=[timer], enable_checkpointing=False,
                               limit_val_batches=0, num_sanity_val_steps=0, enable_model_summary=False)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        peak = reserved = 0
        try:
            trainer.fit(module, datamodule=random_datamodule(module.batch_kind, args, arch["vocab_size"]))
        except torch.cuda.OutOfMemoryError as err:
            row["status"] = f"OOM: {str(err).splitlines()[0][:120]}"
        if cuda:
            peak, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        row["deepspeed"] = is_deepspeed(trainer.strategy)
    timed = timer.times[args.warmup:]
    gib = 2 ** 30
    row.update(steps_timed=len(timed), losses=timer.losses,
               peak_alloc_gib=peak / gib if cuda else None, peak_reserved_gib=reserved / gib if cuda else None,
               step_peak_alloc_gib=timer.step_peak / gib if cuda else None)
    if timed and row["status"] == "ok":
        median = statistics.median(timed)
        row.update(median_step_s=median, tokens_per_s=tokens / median,
                   mfu=flops / median / (args.peak_tflops * 1e12) if cuda else None,
                   achieved_tflops=flops / median / 1e12)
        if not all(math.isfinite(x) for x in timer.losses):
            row["status"] = "non-finite loss"
    elif row["status"] == "ok":
        row["status"] = "no timed steps"
    return row


def _child(job: dict, args, queue) -> None:
    try:
        queue.put(run_one(job, args))
    except BaseException as err:  # report, never hang the parent
        queue.put({**job, "status": f"failed: {type(err).__name__}: {str(err)[:300]}",
                   "traceback": traceback.format_exc()[-3000:]})


def run_isolated(job: dict, args) -> dict:
    """One combination in a fresh process, so its peak memory and DeepSpeed's global state are its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(job, args, queue))
    proc.start()
    row = None
    while row is None:
        try:
            row = queue.get(timeout=5)
        except Exception:
            if not proc.is_alive():
                row = {**job, "status": f"failed: child exited with code {proc.exitcode}"}
    proc.join(timeout=60)
    return row


# ---- report ---------------------------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    def fmt(v, spec):
        width = int("".join(c for c in spec.split(".")[0] if c.isdigit()) or 0)
        return format(v, spec) if isinstance(v, (int, float)) else format("-", f">{width}")

    head = (f"{'model':<12} {'method':<12} {'trainer':<24} {'tok/step':>8} {'step s':>8} {'tokens/s':>10} "
            f"{'MFU':>6} {'peak GiB':>9} {'step GiB':>9}  status")
    lines = [head, "-" * len(head)]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        lines.append(f"{r['model']:<12} {r['method']:<12} {r['trainer']:<24} {fmt(r.get('tokens_per_step'), '>8d')} "
                     f"{fmt(r.get('median_step_s'), '>8.3f')} {fmt(r.get('tokens_per_s'), '>10.0f')} {mfu:>6} "
                     f"{fmt(r.get('peak_alloc_gib'), '>9.2f')} {fmt(r.get('step_peak_alloc_gib'), '>9.2f')}  "
                     f"{r['status']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    jobs = [{"model": m, "method": meth, "trainer": t} for m in args.models for meth in args.methods
            for t in args.trainers]
    rows = []
    for job in jobs:
        row = run_one(job, args) if args.dry_run else run_isolated(job, args)
        rows.append(row)
        print(f"[{len(rows)}/{len(jobs)}] {job['model']} {job['method']} {job['trainer']}: {row['status']}",
              flush=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print()
    print(f"seq {args.seq_len}, {args.pairs} pairs/device/step, {args.steps} steps ({args.warmup} warm-up), "
          f"MFU against {args.peak_tflops:g} TFLOP/s; model FLOPs = 6 N_policy T + 2 N_frozen T per frozen forward")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2, default=str))
        print(f"wrote {args.json}")
    failed = [r for r in rows if r["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

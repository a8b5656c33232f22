#!/usr/bin/env python
"""DPO training-step benchmark: alignlab (LightningModule + lightning.Trainer) vs TRL's DPOTrainer vs a bare loop.

Variants: `alignlab` as a user gets it by default (method.reference=precomputed: the reference's log-probs of the
pairs computed once before training, that pass timed separately; the vocabulary projection fused and only at
response positions), `alignlab-live` (the reference runs every step, still fused), `trl` (DPOTrainer with a live
reference), `trl-precomputed` (precompute_ref_log_probs=True; its precompute pass happens in DPOTrainer.__init__
and is timed separately) and `bare` (the naive loop: full logits of policy and reference every step).

All three train the same random-init model (the architecture of conf/model/<--model>.yaml, built with
alignlab.models.build_random, seed 0) against a frozen copy of itself, on the same random preference pairs, with
the same objective (sigmoid DPO, beta 0.1, summed response log-probs), optimizer (torch AdamW, lr 1e-6, no weight
decay, constant LR), gradient clipping (norm 1.0), batch (P pairs = 2P sequences of T tokens) and precision.

Each variant runs in its own fresh process (multiprocessing "spawn"), one after the other, never in parallel, so
that each one's peak memory is its own:
  - CPU: ru_maxrss of the child minus its RSS after the imports (the same imports in every child), i.e. the
    memory the variant adds: weights, frozen copy, optimizer state, gradients, activations, framework buffers.
  - GPU: torch.cuda.max_memory_allocated after a reset that follows the imports.

Step time: from "batch in hand" to "optimizer step and zero_grad done", measured with each framework's own hooks
(Lightning Callback on_train_batch_start/_end; transformers TrainerCallback on_step_begin/_end; perf_counter around
the body of the bare loop), with torch.cuda.synchronize() on GPU. The first --warmup steps are excluded; the table
shows the median of the rest. "period" is the median start-to-start interval, i.e. the step plus what the framework
does between steps (data loading, logging).

Correctness cross-check: with the same init and data the first-step losses must agree (at step 1 the policy equals
the reference, so every correct implementation gives ln 2 there; the check is cheap but weak), and so must the
first-step policy log-probabilities (checks masking/shifting) and the last-step loss. By default every step reuses
the same P pairs, so the loss trajectory actually moves and the last-step loss checks gradients + optimizer too
(--fresh-data draws new pairs for every step instead; the token count per step is the same either way).

    python experiments/bench/dpo_step.py                      # defaults: pythia-70m, P=4, T=128, 12 steps, 3 warm-up
    python experiments/bench/dpo_step.py --device cuda --precision bf16 --json bench.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from common import parse_overrides  # noqa: E402  (this folder is on sys.path)

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("alignlab", "alignlab-live", "trl", "trl-precomputed", "bare")
EOS_ID = 0  # token 0 is EOS and padding (as in Pythia's tokenizer); random tokens are drawn from [1, V)
EOS_TEXT = "<|endoftext|>"


# ---------------------------------------------------------------------------------------------------------------------
# configuration (parent process: no torch import here, so the children's memory figures start from a small parent)
# ---------------------------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per variant (default 12)")
    p.add_argument("--warmup", type=int, default=3, help="first steps excluded from the timing (default 3)")
    p.add_argument("--pairs", type=int, default=4, help="preference pairs per step, P (default 4)")
    p.add_argument("--seq-len", type=int, default=128,
                   help="tokens per sequence, T: prompt T//2 + response T-T//2 (ending in EOS) (default 128)")
    p.add_argument("--model", default="pythia-70m", help="a conf/model/*.yaml name with a full architecture")
    p.add_argument("--arch-override", default="",
                   help="comma list key=value applied to the architecture, e.g. hidden_size=64,vocab_size=512")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("32", "bf16"), default="32",
                   help="32: fp32; bf16: bf16 autocast with fp32 weights (GPU)")
    p.add_argument("--only", default=",".join(VARIANTS), help=f"comma list of variants among {','.join(VARIANTS)}")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping in all variants (0: off)")
    p.add_argument("--fresh-data", action="store_true",
                   help="new random pairs every step (default: the same P pairs every step, see the docstring)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trl-optim", default="adamw_torch",
                   help="TrainingArguments.optim for the TRL variant; the default matches the other two variants "
                        "(torch.optim.AdamW, not fused); TRL's own default is adamw_torch_fused")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the variants this many times, round-robin (a, b, c, a, b, c, ...), and pool the timed "
                        "steps: evens out background load on a shared machine (default 1)")
    args = p.parse_args(argv)
    args.only = [v.strip() for v in args.only.split(",") if v.strip()]
    unknown = [v for v in args.only if v not in VARIANTS]
    if unknown or not args.only:
        p.error(f"--only: unknown variant(s) {unknown}; choose among {VARIANTS}")
    if args.steps <= args.warmup:
        p.error("--steps must be larger than --warmup")
    if args.seq_len < 4:
        p.error("--seq-len must be at least 4")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def load_architecture(model: str, overrides: dict) -> dict:
    from omegaconf import OmegaConf

    path = REPO / "conf" / "model" / f"{model}.yaml"
    if not path.exists():
        raise SystemExit(f"--model {model}: no {path}")
    arch = OmegaConf.to_container(OmegaConf.load(path).architecture, resolve=True)
    arch.update(overrides)
    if "vocab_size" not in arch:
        raise SystemExit(f"--model {model} has no architecture.vocab_size (its vocabulary comes from a trained "
                         "tokenizer); add one with --arch-override vocab_size=N")
    # training-mode dropout would make the three variants' losses differ (TRL disables it; Lightning does not)
    arch.setdefault("hidden_dropout", 0.0)
    arch.setdefault("attention_dropout", 0.0)
    return arch


def make_pairs(n: int, seq_len: int, vocab: int, seed: int) -> list[dict]:
    """n pairs of token ids: prompt T//2 tokens, chosen/rejected T - T//2 tokens each, the last one EOS."""
    import random

    rng = random.Random(seed)
    p_len, r_len = seq_len // 2, seq_len - seq_len // 2
    rows = []
    for _ in range(n):
        prompt = [rng.randrange(1, vocab) for _ in range(p_len)]
        chosen = [rng.randrange(1, vocab) for _ in range(r_len - 1)] + [EOS_ID]
        rejected = [rng.randrange(1, vocab) for _ in range(r_len - 1)] + [EOS_ID]
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# child-process helpers
# ---------------------------------------------------------------------------------------------------------------------
def _quiet():
    warnings.filterwarnings("ignore")
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers", "trl", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _import_everything():
    """The same imports in every child, so that the post-import RSS baseline is comparable."""
    import datasets  # noqa: F401
    import lightning  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import alignlab.methods.dpo  # noqa: F401


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build_models(cfg):
    import copy

    from alignlab.models import build_random, freeze

    policy = build_random(cfg["arch"], seed=cfg["seed"])   # fp32 weights in every variant (bf16 = autocast)
    reference = freeze(copy.deepcopy(policy))
    return policy, reference


def _pairs_per_step(cfg) -> list[list[dict]]:
    P, steps = cfg["pairs"], cfg["steps"]
    if cfg["fresh_data"]:
        rows = make_pairs(P * steps, cfg["seq_len"], cfg["arch"]["vocab_size"], cfg["seed"])
        return [rows[i * P:(i + 1) * P] for i in range(steps)]
    rows = make_pairs(P, cfg["seq_len"], cfg["arch"]["vocab_size"], cfg["seed"])
    return [rows] * steps


# ---- 1. alignlab ----------------------------------------------------------------------------------------------------
def run_alignlab(cfg, device, rec, live: bool = False):
    import lightning as L
    from torch.utils.data import DataLoader

    from alignlab.data.tokenize import PreferenceCollator
    from alignlab.methods.dpo import DPO

    collate = PreferenceCollator(pad_token_id=EOS_ID)
    batches = [collate(rows) for rows in _pairs_per_step(cfg)]   # exactly what alignlab's data module yields

    class BenchData(L.LightningDataModule):
        """Pre-collated batches, in order. AlignmentModule.configure_optimizers asks the *datamodule* for the
        number of optimizer steps (for its LR schedule), so we provide a datamodule with that method rather than
        overriding configure_optimizers: the module's own optimizer/scheduler code is what gets measured."""

        def train_dataloader(self):
            return DataLoader(batches, batch_size=None, shuffle=False)   # batch_size=None: items are batches

        def optimizer_steps(self, trainer) -> int:
            return trainer.max_steps   # what AlignmentDataModule.optimizer_steps returns when max_steps is set

    class StepTimer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.grab_first_logps(trainer)
            _sync(device)
            self.t0 = time.perf_counter()
            rec["starts"].append(self.t0)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            _sync(device)
            rec["step_s"].append(time.perf_counter() - self.t0)
            rec["_loss"].append(outputs["loss"].detach())
            self.grab_first_logps(trainer)

        def grab_first_logps(self, trainer):
            # step 1's logged values reach callback_metrics at the end of step 1 or just after it, depending on
            # Lightning's ordering; take the first ones seen (no step logged anything else before step 2)
            m = trainer.callback_metrics
            if "_logps" not in rec and "train/logps/chosen" in m:
                rec["_logps"] = (m["train/logps/chosen"].detach().clone(), m["train/logps/rejected"].detach().clone())

        def on_train_end(self, trainer, pl_module):
            self.grab_first_logps(trainer)

    policy, reference = _build_models(cfg)
    if not live:  # what method.reference=precomputed does before training: one no-grad pass of the reference
        from alignlab.pipeline.reference_logps import score_pairs

        steps = _pairs_per_step(cfg)
        distinct = list({id(r): r for rows in steps for r in rows}.values())  # each pair once
        reference.to(device)
        _sync(device)
        t0 = time.perf_counter()
        scores = dict(zip(map(id, distinct), score_pairs(reference, distinct, EOS_ID, batch_size=cfg["pairs"])))
        _sync(device)
        rec["precompute_s"] = time.perf_counter() - t0
        batches[:] = [collate([{**r, "ref_logps": tuple(scores[id(r)])} for r in rows]) for rows in steps]
        reference = None  # not loaded for training at all
    module = DPO(policy, reference, beta=cfg["beta"], label_smoothing=0.0,
                 optim={"lr": cfg["lr"], "weight_decay": 0.0, "warmup_ratio": 0.0, "scheduler": "constant"})
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, strategy="auto",
        precision="bf16-mixed" if cfg["precision"] == "bf16" else "32-true",
        max_steps=cfg["steps"], max_epochs=1, gradient_clip_val=cfg["max_grad_norm"] or None,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[StepTimer()],
        default_root_dir=cfg["tmpdir"],
    )
    trainer.fit(module, datamodule=BenchData())


# ---- 2. TRL ---------------------------------------------------------------------------------------------------------
def _word_tokenizer(vocab: int):
    """A word-level tokenizer with token i spelled "t{i}" (0 = EOS), so that TRL's own text pipeline (it tokenises
    prompt / prompt+chosen / prompt+rejected itself) reproduces our random token ids exactly."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {EOS_TEXT: EOS_ID, **{f"t{i}": i for i in range(1, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token=EOS_TEXT))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([EOS_TEXT])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TEXT, pad_token=EOS_TEXT, unk_token=EOS_TEXT)


def _text(ids: list[int]) -> str:
    return " ".join(EOS_TEXT if i == EOS_ID else f"t{i}" for i in ids)


def run_trl(cfg, device, rec, precompute: bool = False):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    steps_rows = _pairs_per_step(cfg)
    flat = [r for rows in steps_rows for r in rows]
    # TRL 1.16 takes text rows ({prompt, chosen, rejected}) and tokenises them in _prepare_dataset (at __init__,
    # outside the timing); a dataset of pre-tokenised ids is not accepted (it would go through extract_prompt).
    # The response texts start with a space so that prompt + chosen splits on the boundary, and end with EOS so
    # that TRL adds none.
    dataset = Dataset.from_list([{"prompt": _text(r["prompt_ids"]), "chosen": " " + _text(r["chosen_ids"]),
                                  "rejected": " " + _text(r["rejected_ids"])} for r in flat])

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            _sync(device)
            self.t0 = time.perf_counter()
            rec["starts"].append(self.t0)

        def on_step_end(self, args, state, control, **kw):
            _sync(device)
            rec["step_s"].append(time.perf_counter() - self.t0)

    class BenchDPOTrainer(DPOTrainer):
        """Only records the loss tensor of each step (a detach; no sync). The math is TRL's."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            rec["_loss"].append((loss[0] if return_outputs else loss).detach())
            if "_logps" not in rec:   # TRL's own per-step metric (mean over the pairs), already a float
                m = self._metrics["train"]
                rec["_logps"] = (m["logps/chosen"][-1], m["logps/rejected"][-1])
            return loss

    bf16 = cfg["precision"] == "bf16"
    args = DPOConfig(
        output_dir=cfg["tmpdir"], seed=cfg["seed"],
        per_device_train_batch_size=cfg["pairs"], gradient_accumulation_steps=1, max_steps=cfg["steps"],
        learning_rate=cfg["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        # --trl-optim, default "adamw_torch": the same torch AdamW as the other two (TRL defaults to the fused one)
        optim=cfg["trl_optim"], max_grad_norm=cfg["max_grad_norm"],
        beta=cfg["beta"], loss_type=["sigmoid"], label_smoothing=0.0,
        max_length=cfg["seq_len"], precompute_ref_log_probs=precompute,
        gradient_checkpointing=False,            # DPOConfig defaults to True; the others do not checkpoint
        bf16=bf16, fp16=False, use_cpu=device.type == "cpu",
        train_sampling_strategy="sequential",    # the same pairs in the same order as the other variants
        report_to="none", logging_strategy="no", save_strategy="no", eval_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0,
    )
    policy, reference = _build_models(cfg)
    if precompute:  # TRL scores the train set with the (initial) policy in __init__ and keeps no reference model
        reference = None
    _sync(device)
    t0 = time.perf_counter()
    trainer = BenchDPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset,
                              processing_class=_word_tokenizer(cfg["arch"]["vocab_size"]), callbacks=[StepTimer()])
    _sync(device)
    if precompute:
        rec["precompute_s"] = time.perf_counter() - t0  # DPOTrainer.__init__: tokenisation + the reference pass
    first = trainer.train_dataset[0]   # TRL's tokenisation must reproduce our ids (same tokens per step)
    if (first["prompt_ids"], first["chosen_ids"], first["rejected_ids"]) != \
            (flat[0]["prompt_ids"], flat[0]["chosen_ids"], flat[0]["rejected_ids"]):
        raise RuntimeError("TRL's tokenisation of the benchmark rows does not reproduce the token ids")
    trainer.train()


# ---- 3. bare PyTorch ------------------------------------------------------------------------------------------------
def run_bare(cfg, device, rec):
    import contextlib

    import torch
    import torch.nn.functional as F

    from alignlab.data.tokenize import PreferenceCollator

    collate = PreferenceCollator(pad_token_id=EOS_ID)
    batches = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in collate(rows).items()}
               for rows in _pairs_per_step(cfg)]
    policy, reference = _build_models(cfg)
    policy.to(device).train()
    reference.to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg["lr"], weight_decay=0.0)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg["precision"] == "bf16"
                else contextlib.nullcontext())
    beta, clip = cfg["beta"], cfg["max_grad_norm"]

    def summed_logps(logits, labels):   # the reference DPO code's _get_batch_logps
        logits, labels = logits[:, :-1].float(), labels[:, 1:]
        mask = labels != -100
        lp = logits.log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (lp * mask).sum(-1)

    for step, batch in enumerate(batches):
        _sync(device)
        t0 = time.perf_counter()
        rec["starts"].append(t0)
        b = batch["num_pairs"]
        with autocast:
            with torch.no_grad():
                ref = summed_logps(reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                             use_cache=False).logits, batch["labels"])
            pol = summed_logps(policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      use_cache=False).logits, batch["labels"])
        h = (pol[:b] - ref[:b]) - (pol[b:] - ref[b:])
        loss = -F.logsigmoid(beta * h).mean()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        rec["step_s"].append(time.perf_counter() - t0)
        rec["_loss"].append(loss.detach())
        if step == 0:
            rec["_logps"] = (pol[:b].detach().mean(), pol[b:].detach().mean())


RUNNERS = {"alignlab": run_alignlab, "alignlab-live": lambda c, d, r: run_alignlab(c, d, r, live=True),
           "trl": run_trl, "trl-precomputed": lambda c, d, r: run_trl(c, d, r, precompute=True), "bare": run_bare}


def child_main(variant: str, cfg: dict, queue) -> None:
    try:
        _quiet()
        _import_everything()
        import resource

        import torch

        device = torch.device(cfg["device"])
        rec = {"step_s": [], "starts": [], "_loss": []}
        with tempfile.TemporaryDirectory() as tmp:
            cfg = {**cfg, "tmpdir": tmp}
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            rss0 = _rss_bytes()
            t_start = time.perf_counter()
            RUNNERS[variant](cfg, device, rec)
            wall = time.perf_counter() - t_start
        if device.type == "cuda":
            peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        else:
            peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0) / 2**20
        losses = [float(x) for x in rec.pop("_loss")]
        logps = [float(x) for x in rec.pop("_logps")]
        if len(rec["step_s"]) != cfg["steps"]:
            raise RuntimeError(f"{variant}: timed {len(rec['step_s'])} steps, expected {cfg['steps']}")
        queue.put({"ok": True, "variant": variant, "step_s": rec["step_s"], "starts": rec["starts"],
                   "losses": losses, "first_logps": {"chosen": logps[0], "rejected": logps[1]},
                   "peak_mem_mb": peak_mb, "baseline_rss_mb": rss0 / 2**20, "wall_s": wall,
                   "precompute_s": rec.get("precompute_s"),
                   "threads": torch.get_num_threads(), "device_name": _device_name(device)})
    except BaseException as err:  # report, do not hang the parent
        import traceback

        queue.put({"ok": False, "variant": variant, "error": f"{type(err).__name__}: {err}",
                   "traceback": traceback.format_exc()})


def _device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# ---------------------------------------------------------------------------------------------------------------------
# parent: run the variants one after the other, then summarise
# ---------------------------------------------------------------------------------------------------------------------
def run_variant(variant: str, cfg: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=child_main, args=(variant, cfg, queue), name=f"bench-{variant}")
    proc.start()
    result = None
    while result is None:
        try:
            result = queue.get(timeout=5)
        except Exception:  # queue.Empty
            if not proc.is_alive():
                result = {"ok": False, "variant": variant, "error": f"child exited with code {proc.exitcode}"}
    proc.join()
    return result


def summarise(runs: list[dict], cfg: dict) -> dict:
    """Figures of one variant from its runs (one per --repeat): timed steps pooled over the runs."""
    w = cfg["warmup"]
    timed = [t for r in runs for t in r["step_s"][w:]]
    periods = [b - a for r in runs for a, b in zip(r["starts"][w:], r["starts"][w + 1:])]
    median = statistics.median(timed)
    tokens = 2 * cfg["pairs"] * cfg["seq_len"]
    first = runs[0]
    return {
        "median_step_s": median, "min_step_s": min(timed), "max_step_s": max(timed),
        "median_period_s": statistics.median(periods) if periods else None,
        "tokens_per_step": tokens, "tokens_per_s": tokens / median,
        "peak_mem_mb": max(r["peak_mem_mb"] for r in runs), "baseline_rss_mb": first["baseline_rss_mb"],
        "first_step_loss": first["losses"][0], "last_step_loss": first["losses"][-1],
        "first_step_logps": first["first_logps"], "losses": first["losses"],
        "step_s": [r["step_s"] for r in runs] if len(runs) > 1 else first["step_s"],
        "wall_s": sum(r["wall_s"] for r in runs), "threads": first["threads"], "device_name": first["device_name"],
        "runs": len(runs), "precompute_s": first.get("precompute_s"),
    }


def cross_check(figs: dict, precision: str) -> list[str]:
    """Messages for every disagreement: losses within 1e-3 (first and last step), log-probs relatively within
    1e-4 (fp32) or 2e-2 (bf16)."""
    names = list(figs)
    problems = []
    lp_tol = 1e-4 if precision == "32" else 2e-2
    for a, b in zip(names, names[1:]):
        for key in ("first_step_loss", "last_step_loss"):
            d = abs(figs[a][key] - figs[b][key])
            if d > 1e-3:
                problems.append(f"{key}: {a} {figs[a][key]:.6f} vs {b} {figs[b][key]:.6f} (|diff| {d:.2e} > 1e-3)")
        for side in ("chosen", "rejected"):
            x, y = figs[a]["first_step_logps"][side], figs[b]["first_step_logps"][side]
            rel = abs(x - y) / max(1.0, abs(x), abs(y))
            if rel > lp_tol:
                problems.append(f"first-step logps/{side}: {a} {x:.4f} vs {b} {y:.4f} (rel diff {rel:.1e} > {lp_tol})")
    return problems


def ratios(figs: dict) -> dict:
    out = {}
    for ours in ("alignlab", "alignlab-live"):
        for other in ("bare", "trl", "trl-precomputed"):
            if ours in figs and other in figs:
                out[f"{ours}/{other}"] = {
                    "speed": figs[ours]["tokens_per_s"] / figs[other]["tokens_per_s"],   # >1: alignlab faster
                    "memory": figs[ours]["peak_mem_mb"] / figs[other]["peak_mem_mb"],    # <1: alignlab smaller
                }
    return out


def print_report(cfg, figs, rat, problems, load_before, load_after):
    dev = next(iter(figs.values()))["device_name"]
    mem_kind = "peak CUDA MB" if cfg["device"].startswith("cuda") else "peak RSS+ MB"
    print()
    print(f"DPO step benchmark: model {cfg['model_label']} ({cfg['n_params'] / 1e6:.1f}M params), {cfg['pairs']} pairs x "
          f"{cfg['seq_len']} tokens = {2 * cfg['pairs'] * cfg['seq_len']} tokens/step, precision {cfg['precision']}, "
          f"{cfg['steps']} steps ({cfg['warmup']} warm-up), device {dev}, "
          f"torch threads {next(iter(figs.values()))['threads']}")
    print(f"load average before/after: {load_before:.2f} / {load_after:.2f}" + (
        f"; timed steps pooled over {cfg['repeat']} round-robin runs per variant" if cfg["repeat"] > 1 else ""))
    if max(load_before, load_after) > 0.5 * (os.cpu_count() or 1):
        print("WARNING: other processes were using the CPU during the benchmark: step times are noisy "
              "(compare the min column, or use --repeat)", file=sys.stderr)
    header = f"{'variant':<16} {'median step s':>14} {'min step s':>11} {'period s':>9} {'tokens/s':>10} " \
             f"{mem_kind:>13} {'loss step 1':>12} {'loss last':>10} {'precompute s':>13}"
    print(header)
    print("-" * len(header))
    for name, f in figs.items():
        period = f"{f['median_period_s']:.3f}" if f["median_period_s"] is not None else "-"
        pre = f"{f['precompute_s']:.3f}" if f.get("precompute_s") is not None else "-"
        print(f"{name:<16} {f['median_step_s']:>14.3f} {f['min_step_s']:>11.3f} {period:>9} {f['tokens_per_s']:>10.1f} "
              f"{f['peak_mem_mb']:>13.0f} {f['first_step_loss']:>12.6f} {f['last_step_loss']:>10.6f} {pre:>13}")
    for key, r in rat.items():
        print(f"{key}: speed x{r['speed']:.3f} (tokens/s ratio, >1 = alignlab faster), "
              f"memory x{r['memory']:.3f} (<1 = alignlab smaller)")
    print("first-step policy logps (chosen / rejected): " + "; ".join(
        f"{n} {f['first_step_logps']['chosen']:.4f} / {f['first_step_logps']['rejected']:.4f}" for n, f in figs.items()))
    if problems:
        bar = "!" * 100
        print(f"\n{bar}\nWARNING: THE VARIANTS DISAGREE (same init and data, so they should not):", file=sys.stderr)
        for msg in problems:
            print(f"  {msg}", file=sys.stderr)
        print(bar, file=sys.stderr)
    else:
        print("cross-check: first-step loss, last-step loss and first-step log-probs agree across variants")


def main(argv=None) -> int:
    args = parse_args(argv)
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(key, value)
    sys.path.insert(0, str(REPO))
    arch = load_architecture(args.model, parse_overrides(args.arch_override))
    device = args.device
    if device == "auto":
        device = "cuda" if _cuda_available() else "cpu"
    if args.precision == "bf16" and device == "cpu":
        print("note: bf16 autocast on CPU is slow on most CPUs; the intended use is --device cuda", file=sys.stderr)
    cfg = {"arch": arch, "model": args.model, "steps": args.steps, "warmup": args.warmup, "pairs": args.pairs,
           "seq_len": args.seq_len, "device": device, "precision": args.precision, "beta": args.beta, "lr": args.lr,
           "max_grad_norm": args.max_grad_norm, "fresh_data": args.fresh_data, "seed": args.seed,
           "repeat": args.repeat, "trl_optim": args.trl_optim,
           "model_label": args.model + (f" + {args.arch_override}" if args.arch_override else "")}
    cfg["n_params"] = _count_params(arch)

    load_before = os.getloadavg()[0]
    runs, failures = {v: [] for v in args.only}, {}
    for rep in range(args.repeat):
        for variant in args.only:   # sequentially, each in a fresh process
            if variant in failures:
                continue
            print(f"[bench] running {variant} ({rep + 1}/{args.repeat}) ...", file=sys.stderr, flush=True)
            result = run_variant(variant, cfg)
            if not result["ok"]:
                failures[variant] = result["error"]
                print(f"[bench] {variant} FAILED: {result['error']}\n{result.get('traceback', '')}", file=sys.stderr)
                continue
            runs[variant].append(result)
            timed = result["step_s"][args.warmup:]
            print(f"[bench] {variant}: median step {statistics.median(timed):.3f} s (min {min(timed):.3f}), "
                  f"wall {result['wall_s']:.1f} s, load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]
    figs = {v: summarise(r, cfg) for v, r in runs.items() if r and v not in failures}
    if not figs:
        return 1
    rat = ratios(figs)
    problems = cross_check(figs, args.precision)
    print_report(cfg, figs, rat, problems, load_before, load_after)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"config": {k: v for k, v in cfg.items()}, "variants": figs, "ratios": rat,
                   "cross_check_problems": problems, "failures": failures,
                   "load_average": {"before": load_before, "after": load_after}}
        args.json.write_text(json.dumps(payload, indent=2))
    return 1 if failures else 0


def _cuda_available() -> bool:
    # ask a throwaway child so the parent stays torch-free (keeps the children's memory figures clean)
    import subprocess

    code = "import torch; print(int(torch.cuda.is_available()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() == "1"


def _count_params(arch: dict) -> int:
    """GPTNeoX parameter count from the architecture numbers (for the header only)."""
    h, n, v, i = arch["hidden_size"], arch["num_hidden_layers"], arch["vocab_size"], arch["intermediate_size"]
    per_layer = 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h   # qkv+dense (+biases), mlp (+biases), two layernorms
    head = v * h if arch.get("tie_word_embeddings") else 2 * v * h
    return n * per_layer + head + 2 * h


if __name__ == "__main__":
    sys.exit(main())

"""What TDPO's full-vocabulary token KL costs over DPO: peak memory and step time (METHODS.md section 2, "Cost").

One step = module.loss_and_metrics(batch) + backward + AdamW step, on a random-init pythia-70m (the exact
architecture of conf/model/pythia-70m.yaml, vocabulary 50304) with a frozen copy as the reference. Each variant
runs in a fresh process (multiprocessing spawn), so its peak memory is its own: peak RSS (getrusage ru_maxrss) on
CPU, torch.cuda.max_memory_allocated on GPU. "setup" is the memory before the first step (interpreter, libraries,
both models, the batch); "step" = peak - setup is what the training step itself adds (gradients, AdamW state,
activations, logits and the loss's temporaries). Time is the median over the timed steps after warm-up, as wall
clock and as this process's CPU time (the CPU time is the steadier number on a shared machine, with --threads 1).

    python experiments/bench/token_kl.py                              # 4 pairs x 128 tokens on the CPU
    python experiments/bench/token_kl.py --chunk-size 256 1024        # TDPO at several KL chunk sizes
    python experiments/bench/token_kl.py --device cuda --pairs 16 --seq-len 512 --json results.json

Targets: TDPO peak memory <= 1.05x DPO's (live reference), step time <= 1.4x DPO's.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL_YAML = REPO / "conf" / "model" / "pythia-70m.yaml"
VARIANTS = ("dpo", "tdpo1", "tdpo2")
TARGETS = {"memory": 1.05, "time": 1.4}  # peak memory vs DPO with a live reference (issue 14), step time
MiB = 2 ** 20


def current_rss() -> int:
    """Resident set size now, in bytes (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def peak_rss() -> int:
    """Peak resident set size of this process, in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024


def make_batch(pairs: int, seq_len: int, prompt_len: int, vocab: int, seed: int = 0) -> dict:
    """`pairs` pairs of full-length sequences (no padding): a shared random prompt of prompt_len tokens, then
    random chosen / rejected responses filling the rest; labels HF-style (prompt = -100), chosen rows first."""
    import torch

    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab, (pairs, prompt_len), generator=g)
    responses = torch.randint(0, vocab, (2 * pairs, seq_len - prompt_len), generator=g)
    input_ids = torch.cat([prompt.repeat(2, 1), responses], dim=1)
    labels = input_ids.clone()
    labels[:, :prompt_len] = -100
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
            "num_pairs": pairs}


def measure(spec: dict) -> dict:
    """Runs in a fresh spawned process: build, warm up, time the steps, report memory."""
    import copy

    import torch
    from omegaconf import OmegaConf

    sys.path.insert(0, str(REPO))
    from alignlab.methods.dpo import DPO
    from alignlab.methods.tdpo import TDPO
    from alignlab.models import build_random, freeze

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    arch = OmegaConf.to_container(OmegaConf.load(MODEL_YAML).architecture, resolve=True)
    policy = build_random(arch, None, "float32", seed=0).to(device)
    reference = freeze(copy.deepcopy(policy))
    if spec["variant"] == "dpo":
        module = DPO(policy, reference, beta=0.1)
    else:
        module = TDPO(policy, reference, beta=0.1, variant=spec["variant"], chunk_size=spec["chunk_size"])
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=1e-6)
    batch = make_batch(spec["pairs"], spec["seq_len"], spec["prompt_len"], arch["vocab_size"])
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        setup = torch.cuda.memory_allocated(device)
    else:
        setup = current_rss()
    times, cpu_times, losses = [], [], []
    for _ in range(spec["warmup"] + spec["steps"]):
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        loss, _ = module.loss_and_metrics(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        losses.append(loss.item())
    peak = torch.cuda.max_memory_allocated(device) if cuda else peak_rss()
    timed, cpu_timed = times[spec["warmup"]:], cpu_times[spec["warmup"]:]
    return {**spec, "median_s": statistics.median(timed), "min_s": min(timed), "times_s": timed,
            "median_cpu_s": statistics.median(cpu_timed),
            "peak_bytes": peak, "setup_bytes": setup, "step_bytes": peak - setup, "losses": losses,
            "memory_kind": "cuda max_memory_allocated" if cuda else "peak RSS (ru_maxrss)",
            "torch_threads": torch.get_num_threads()}


def run_isolated(spec: dict) -> dict:
    with mp.get_context("spawn").Pool(processes=1, maxtasksperchild=1) as pool:
        return pool.apply(measure, (spec,))


def table(results: list[dict]) -> str:
    dpo = next(r for r in results if r["variant"] == "dpo")
    head = (f"{'variant':<8} {'chunk':>6} {'peak MiB':>9} {'step MiB':>9} {'median s':>9} {'cpu s':>7} "
            f"{'peak/DPO':>9} {'step mem/DPO':>12} {'time/DPO':>9} {'cpu/DPO':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        chunk = "-" if r["variant"] == "dpo" else str(r["chunk_size"])
        lines.append(f"{r['variant']:<8} {chunk:>6} {r['peak_bytes'] / MiB:>9.0f} {r['step_bytes'] / MiB:>9.0f} "
                     f"{r['median_s']:>9.3f} {r['median_cpu_s']:>7.3f} {r['peak_bytes'] / dpo['peak_bytes']:>8.2f}x "
                     f"{r['step_bytes'] / dpo['step_bytes']:>11.2f}x {r['median_s'] / dpo['median_s']:>8.2f}x "
                     f"{r['median_cpu_s'] / dpo['median_cpu_s']:>7.2f}x")
    return "\n".join(lines)


def verdict(results: list[dict]) -> list[str]:
    dpo = next(r for r in results if r["variant"] == "dpo")
    out = []
    for r in results:
        if r["variant"] == "dpo":
            continue
        mem, t = r["peak_bytes"] / dpo["peak_bytes"], r["median_s"] / dpo["median_s"]
        ok = mem <= TARGETS["memory"] and t <= TARGETS["time"]
        out.append(f"{r['variant']} chunk {r['chunk_size']}: memory {mem:.2f}x (target <= {TARGETS['memory']}), "
                   f"time {t:.2f}x (target <= {TARGETS['time']}): {'OK' if ok else 'MISSES TARGET'}")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=4, help="preference pairs per step (2x sequences)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (prompt + response)")
    parser.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default: seq-len // 4)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (AdamW state, allocator)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--chunk-size", type=int, nargs="+", default=[256],
                        help="TDPO's KL chunk size(s), response positions per chunk; each is measured "
                             "(default: conf/method/tdpo*.yaml's)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="also write the results as JSON to PATH (no PATH: print them to stdout)")
    args = parser.parse_args(argv)
    prompt_len = args.seq_len // 4 if args.prompt_len is None else args.prompt_len
    if not 0 <= prompt_len < args.seq_len:
        parser.error(f"--prompt-len {prompt_len} must be in [0, --seq-len)")
    variants = ["dpo", *[v for v in args.variants if v != "dpo"]]  # DPO is the baseline of every ratio
    base = {"pairs": args.pairs, "seq_len": args.seq_len, "prompt_len": prompt_len, "steps": args.steps,
            "warmup": args.warmup, "device": args.device, "threads": args.threads, "chunk_size": None}
    specs = [{**base, "variant": "dpo"}]
    specs += [{**base, "variant": v, "chunk_size": c} for c in args.chunk_size for v in variants if v != "dpo"]

    results = []
    for spec in specs:
        print(f"measuring {spec['variant']} (chunk {spec['chunk_size']}) ...", file=sys.stderr, flush=True)
        results.append(run_isolated(spec))
    setting = (f"random-init pythia-70m (vocab 50304), {args.pairs} pairs x {args.seq_len} tokens "
               f"({prompt_len} prompt), device {args.device}, torch threads {results[0]['torch_threads']}, "
               f"median of {args.steps} steps after {args.warmup} warm-up; memory: {results[0]['memory_kind']}")
    print(setting)
    print(table(results))
    print("\n".join(verdict(results)))
    if args.json:
        text = json.dumps({"setting": setting, "results": results}, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text)


if __name__ == "__main__":
    main()

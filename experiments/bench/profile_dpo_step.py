#!/usr/bin/env python
"""Where does a DPO step's time go? A breakdown companion to dpo_step.py (same model, data and settings).

Runs, in one process, the pieces of one DPO step the way alignlab does them (AlignmentModule / DPO functions,
no Lightning) and the way the bare loop does them, timing each piece with perf_counter (+ cuda sync):

    ref fwd      reference forward to logits, no_grad
    ref logps    summed response log-probs of those logits (alignlab: chunked sequence_logps; bare: log_softmax+gather)
    pol fwd      policy forward to logits
    pol logps    as ref logps, with autograd
    loss+metrics dpo_loss (+ alignlab: preference_metrics and the detach/float/mean of _step's metric dict)
    backward     loss.backward()
    clip+opt     clip_grad_norm_(1.0) + AdamW step + zero_grad

and a micro-benchmark of the log-prob function alone (forward + backward on a fixed logits tensor). Compare the
"module total" with dpo_step.py's Lightning step time to get the Lightning overhead.

    python experiments/bench/profile_dpo_step.py --steps 6 --warmup 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dpo_step as bench  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--model", default="pythia-70m")
    p.add_argument("--arch-override", default="")
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", default="alignlab,bare")
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from alignlab.data.tokenize import PreferenceCollator
    from alignlab.losses import dpo_loss, sequence_logps, shift_for_next_token
    from alignlab.forward import logits_of
    from alignlab.methods.base import preference_metrics

    device = torch.device(args.device)
    arch = bench.load_architecture(args.model, bench.parse_overrides(args.arch_override))
    cfg = {"arch": arch, "seed": 0, "pairs": args.pairs, "steps": args.steps, "seq_len": args.seq_len,
           "fresh_data": False}
    batch = PreferenceCollator(pad_token_id=bench.EOS_ID)(bench._pairs_per_step(cfg)[0])
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    b = batch["num_pairs"]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def bare_logps(logits, labels):
        logits, labels = logits[:, :-1].float(), labels[:, 1:]
        mask = labels != -100
        return (logits.log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask).sum(-1)

    def alignlab_logps(logits, labels):
        return sequence_logps(*shift_for_next_token(logits, labels))[0]

    impls = {"alignlab": alignlab_logps, "bare": bare_logps}
    names = args.only.split(",")
    keys = ("ref fwd", "ref logps", "pol fwd", "pol logps", "loss+metrics", "backward", "clip+opt", "total")
    state, parts = {}, {n: {k: [] for k in keys} for n in names}
    for name in names:
        policy, reference = bench._build_models(cfg)
        policy.to(device).train()
        reference.to(device)
        state[name] = (policy, reference, torch.optim.AdamW(policy.parameters(), lr=1e-6, weight_decay=0.0))

    def one_step(name):
        policy, reference, opt = state[name]
        logps_fn = impls[name]
        t = [time.perf_counter()]

        def mark():
            sync()
            t.append(time.perf_counter())

        with torch.no_grad():
            ref_logits = logits_of(reference, batch)
            mark()
            ref = logps_fn(ref_logits, batch["labels"])
            del ref_logits
            mark()
        logits = logits_of(policy, batch)
        mark()
        pol = logps_fn(logits, batch["labels"])
        mark()
        losses, cr, rr = dpo_loss(pol[:b], pol[b:], ref[:b], ref[b:], 0.1)
        loss = losses.mean()
        if name == "alignlab":   # what DPO.loss_and_metrics + AlignmentModule._step add before log_dict
            metrics = preference_metrics(losses, cr, rr, pol[:b], pol[b:])
            {k: v.detach().float().mean() for k, v in {"loss": loss, **metrics}.items()}
        mark()
        loss.backward()
        del logits
        mark()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        mark()
        return [z - a for a, z in zip(t, t[1:])] + [t[-1] - t[0]]

    # interleaved (alignlab step, bare step, alignlab step, ...) so that background load hits both alike
    for step in range(args.steps):
        for name in names:
            times = one_step(name)
            if step >= args.warmup:
                for key, x in zip(keys, times):
                    parts[name][key].append(x)
    results = {n: {k: statistics.median(v) for k, v in parts[n].items()} for n in names}
    mins = {n: {k: min(v) for k, v in parts[n].items()} for n in names}
    del state

    print(f"\nmedian seconds per piece over {args.steps - args.warmup} steps ({args.pairs} pairs x {args.seq_len} "
          f"tokens, {args.model}, {device}, torch threads {torch.get_num_threads()})")
    import resource

    print(f"process peak RSS so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(both variants' models and optimizer states live together here; run --only alignlab / --only bare "
          f"in separate processes to compare)")
    print(f"{'piece':<14}" + "".join(f"{n + ' med':>14}{n + ' min':>14}" for n in names))
    for key in keys:
        print(f"{key:<14}" + "".join(f"{results[n][key]:>14.3f}{mins[n][key]:>14.3f}" for n in names))

    # micro-benchmark: the log-prob function alone on fixed logits, forward and backward
    V = arch["vocab_size"]
    logits0 = torch.randn(2 * args.pairs, args.seq_len, V, device=device)
    print(f"\nlog-prob function alone on [{2 * args.pairs}, {args.seq_len}, {V}] fp32 logits (median of 5):")
    for n in names:
        fwd, bwd = [], []
        for _ in range(6):
            x = logits0.clone().requires_grad_(True)
            sync()
            a = time.perf_counter()
            y = impls[n](x, batch["labels"]).sum()
            sync()
            m = time.perf_counter()
            y.backward()
            sync()
            z = time.perf_counter()
            fwd.append(m - a)
            bwd.append(z - m)
        print(f"  {n:<10} forward {statistics.median(fwd[1:]):.3f} s (min {min(fwd[1:]):.3f})   "
              f"backward {statistics.median(bwd[1:]):.3f} s (min {min(bwd[1:]):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

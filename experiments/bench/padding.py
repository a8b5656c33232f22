#!/usr/bin/env python
"""Padding share of training batches: random order, length-grouped, and packed (alignlab.data.module).

The share of the tokens a step computes that are padding, over one epoch of batches built exactly as the data module
builds them (seeded sampler, the preference or sequence collator). Two length distributions:

  --pairs DIR   the pairs of a pair stage (<cache>/pairs-*/train.jsonl, token ids as sampled), e.g. the default run's;
  --hh-like     synthetic pairs with HH-RLHF-like lengths: prompts ~ lognormal(median 100 tokens, sigma 0.8), each
                response ~ lognormal(median 60, sigma 0.9), cut like data=hh_rlhf (max_prompt_length 256,
                max_length 512).

    python experiments/bench/padding.py --pairs ~/.cache/alignlab/pairs-<fingerprint> --max-length 64 --batch 16
    python experiments/bench/padding.py --hh-like --max-length 512 --batch 8
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def hh_like_rows(n: int, seed: int, max_prompt: int, max_length: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        p = min(max_prompt, max(4, int(rng.lognormvariate(4.6, 0.8))))
        room = max_length - p
        c, r = (min(room, max(2, int(rng.lognormvariate(4.1, 0.9)))) for _ in range(2))
        rows.append({"prompt_ids": [1] * p, "chosen_ids": [2] * c, "rejected_ids": [3] * r})
    return rows


def stage_rows(directory: Path, max_prompt: int, max_length: int) -> list[dict]:
    from alignlab.data.tokenize import TruncationStats, fit_lengths

    rows = []
    for line in (directory / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        prompt, (c, r) = fit_lengths(row["prompt_ids"], [row["chosen_ids"], row["rejected_ids"]], max_length,
                                     max_prompt, TruncationStats())
        if c != r:
            rows.append({"prompt_ids": prompt, "chosen_ids": c, "rejected_ids": r})
    return rows


def padding_share(rows: list[dict], batch: int, group: int, pack_width: int | None, seed: int) -> dict:
    from alignlab.data.module import computed_tokens
    from alignlab.data.tokenize import PreferenceCollator

    fig = computed_tokens(rows, PreferenceCollator(0, pack_width=pack_width), batch, group, seed,
                          max_batches=len(rows))
    return {"padding_share": fig["padding_share"], "computed_tokens": fig["computed"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", type=Path, help="a pair stage directory (train.jsonl with token ids)")
    src.add_argument("--hh-like", action="store_true", help="synthetic HH-RLHF-like lengths")
    p.add_argument("--n", type=int, default=4000, help="--hh-like: number of pairs")
    p.add_argument("--batch", type=int, default=16, help="pairs per batch (data.batch_size)")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--max-prompt-length", type=int, default=16)
    p.add_argument("--group", type=int, default=50, help="data.group_by_length (batches per sorted window)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = hh_like_rows(args.n, args.seed, args.max_prompt_length, args.max_length) if args.hh_like else \
        stage_rows(args.pairs.expanduser(), args.max_prompt_length, args.max_length)
    print(f"{len(rows)} pairs, batch {args.batch} pairs (= {2 * args.batch} sequences), max_length {args.max_length}")
    print(f"{'batching':<34} {'padding share':>14} {'tokens computed':>16}")
    for name, group, width in (("random order, padded (before)", 0, None),
                               (f"length-grouped (group={args.group})", args.group, None),
                               ("random order, packed", 0, args.max_length),
                               ("length-grouped + packed", args.group, args.max_length)):
        fig = padding_share(rows, args.batch, group, width, args.seed)
        print(f"{name:<34} {fig['padding_share']:>13.1%} {fig['computed_tokens']:>16,d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

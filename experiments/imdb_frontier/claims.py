"""The TDPO paper's IMDb claim on a finished frontier sweep: TDPO2's reward-vs-KL front lies above DPO's and above
TDPO1's, each front over the method's own hyperparameters (beta; alpha for TDPO2), points as means over seeds.

    python experiments/imdb_frontier/claims.py <sweep dir> [--profile mini|full]

Writes `<sweep dir>/claims.json` (alignlab.sweep.claims) and prints each verdict with its rule.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alignlab.sweep.claims import front_claim, write_claims
from alignlab.sweep.collect import aggregate, collect

METRICS, MAXIMIZE = ["eval/kl", "eval/reward"], [False, True]
PAPER = ("TDPO paper (Zeng et al., ICML 2024), IMDb reward-vs-KL frontier (GPT-2 large): TDPO2's front lies above "
         "DPO's and TDPO1's")
PLOT = "front_eval-reward_vs_eval-kl.png"  # written by `python -m alignlab.sweep <dir> --x eval/kl --y eval/reward`


def claims(sweep_dir: Path) -> tuple[list[dict], list[int]]:
    jobs = collect(sweep_dir)
    keys = [k for k in ("method", "method.beta", "method.alpha") if k in jobs.columns]
    summary = aggregate(jobs, by=keys, metrics=METRICS)
    method = summary["method"].astype(str)
    seeds = sorted({int(s) for s in jobs.loc[jobs["status"] == "ok", "seed"].dropna()}) if "seed" in jobs else []
    out = []
    for other in ("dpo", "tdpo1"):
        out.append(front_claim(f"tdpo2_above_{other}", f"TDPO2's reward-vs-KL front lies above {other.upper()}'s",
                               PAPER, summary, method == "tdpo2", method == other, METRICS, MAXIMIZE, "TDPO2",
                               other.upper(), label_keys=keys[1:], plots=[PLOT]))
    return out, seeds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--profile", default="mini")
    args = parser.parse_args(argv)
    found, seeds = claims(args.sweep_dir)
    write_claims(args.sweep_dir, "imdb_frontier", args.profile, seeds, found)
    for c in found:
        print(f"{c['claim']}: {c['verdict'].upper()}\n  {c['ours']}")
    print(f"written: {args.sweep_dir / 'claims.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

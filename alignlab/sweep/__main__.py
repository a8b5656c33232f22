"""`python -m alignlab.sweep <multirun dir>`: write sweep.csv, sweep_summary.csv, sweep.md and the front PNG."""
from __future__ import annotations

import argparse
import sys

from alignlab.sweep.report import DEFAULT_X, DEFAULT_Y


def parse_reference(text: str) -> tuple[float, float]:
    try:
        rx, ry = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--reference wants 'x,y' (two numbers), got {text!r}") from None
    return rx, ry


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m alignlab.sweep",
        description="Collect a Hydra multirun of alignlab: a table per job and per setting (mean ± std over "
                    "seeds), the Pareto front of y against x with per-group hypervolumes, and its plot. Writes "
                    "<dir>/sweep.csv, <dir>/sweep_summary.csv, <dir>/sweep.md, <dir>/front_<y>_vs_<x>.png.")
    p.add_argument("sweep_dir", help="the multirun dir (e.g. multirun/2026-11-23/16-25-29)")
    p.add_argument("--x", default=DEFAULT_X, help=f"x-axis metric (default {DEFAULT_X})")
    p.add_argument("--y", default=DEFAULT_Y, help=f"y-axis metric (default {DEFAULT_Y})")
    gx = p.add_mutually_exclusive_group()
    gx.add_argument("--minimize-x", dest="maximize_x", action="store_false", help="lower x is better (default)")
    gx.add_argument("--maximize-x", dest="maximize_x", action="store_true", help="higher x is better")
    gy = p.add_mutually_exclusive_group()
    gy.add_argument("--maximize-y", dest="maximize_y", action="store_true", help="higher y is better (default)")
    gy.add_argument("--minimize-y", dest="maximize_y", action="store_false", help="lower y is better")
    p.set_defaults(maximize_x=False, maximize_y=True)
    p.add_argument("--reference", type=parse_reference, default=None, metavar="X,Y",
                   help="hypervolume reference point (write --reference=-1,0 for a negative x); default: the "
                        "worst value of each objective over all settings, moved out by --margin x its range")
    p.add_argument("--margin", type=float, default=0.1, help="see --reference (default 0.1)")
    p.add_argument("--by", default="method",
                   help="column that splits fronts, colours and hypervolumes (default method; 'none': one group)")
    p.add_argument("--keys", default=None,
                   help="comma-separated keys that define a setting (default: method and every override key "
                        "except seed); seeds of a setting are averaged")
    p.add_argument("--out", default=None, help="write the files here instead of the sweep dir")
    p.add_argument("--tax", action="append", default=None, metavar="METRIC",
                   help="plot y against this tax metric too (minimised; repeatable); default: every tax/..._drop "
                        "and tax/..._ratio metric present")
    p.add_argument("--no-tax", dest="tax_fronts", action="store_false",
                   help="skip the extra reward-vs-tax fronts")
    p.add_argument("--wandb", action="store_true", help="also log the summary as a wandb run (offline by default)")
    p.add_argument("--wandb-project", default="alignlab")
    p.add_argument("--wandb-online", action="store_true", help="let wandb sync online (WANDB_MODE still applies)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from alignlab.sweep.report import report

    try:
        result = report(args.sweep_dir, x=args.x, y=args.y, maximize_x=args.maximize_x, maximize_y=args.maximize_y,
                        reference=args.reference, by=None if args.by.lower() == "none" else args.by,
                        keys=args.keys.split(",") if args.keys else None, out_dir=args.out,
                        tax_fronts=(args.tax or True) if args.tax_fronts else False, margin=args.margin, wandb=args.wandb,
                        wandb_project=args.wandb_project, wandb_offline=not args.wandb_online)
    except (FileNotFoundError, KeyError) as err:
        print(f"alignlab.sweep: error: {err}", file=sys.stderr)
        return 2
    print(f"{result['name']}: {result['n_jobs']} jobs, {result['n_ok']} ok, {result['n_failed']} failed, "
          f"{result['n_missing']} missing")
    for key, value in result["hypervolume"].items():
        print(f"  hypervolume[{key}] = {value:.6g}")
    for bad in result["failed"]:
        print(f"  job {bad['job']}: {bad['status']}: {(str(bad['error']).splitlines() or [''])[0][:160]}")
    for key in ("csv", "summary_csv", "markdown", "front_png", "wandb_run_dir"):
        if result.get(key):
            print(f"  {key}: {result[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

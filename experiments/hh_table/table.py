"""The TDPO paper's HH-RLHF table (METHODS.md section 6) from a sweep: our preference accuracy, response entropy and
win rate against the dataset's chosen responses per method (mean and sample std over seeds), beside the published
numbers, and a verdict on the paper's claim computed by a stated rule.

    python experiments/hh_table/table.py <sweep dir> [--profile mini|full]

prints the table and the verdict, and writes `<sweep dir>/hh_table.md` and `<sweep dir>/hh_table.json` (the
machine-readable summary: means, stds, seeds, the published numbers, each comparison and the verdict).

The claim: TDPO2 is above DPO in both preference accuracy and entropy (paper: 67.33% / 4.915 vs 59.43% / 3.196).
The rule (RULE below): per metric, TDPO2's mean minus DPO's mean is "above" when it exceeds the larger of the two
stds, "below" when it is under minus that, else "within". Reproduced: above in both metrics; not reproduced: below
in either; otherwise inconclusive (also when the sweep ran several seeds and either method has fewer than 2
successful ones; a one-seed sweep compares its single runs with margin 0).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from alignlab.sweep.claims import seeds_needed

# TDPO paper, Table (Pythia-2.8B on Anthropic HH): preference accuracy (%) and response entropy
PUBLISHED = {"tdpo2": (67.33, 4.915), "dpo": (59.43, 3.196), "f-dpo": (54.71, 4.708)}
METRICS = {"accuracy": ("eval/pref_accuracy", 100.0), "entropy": ("eval/entropy", 1.0),
           "winrate_vs_chosen": ("eval/winrate_vs_chosen", 100.0),
           # context for reading the others: how far each policy moved from the SFT model, and its mean reward
           "kl": ("eval/kl", 1.0), "reward": ("eval/reward", 1.0)}
CLAIM = {"better": "tdpo2", "worse": "dpo", "metrics": ["accuracy", "entropy"],
         "text": "TDPO2 is above DPO in both preference accuracy and entropy "
                 "(TDPO paper, HH-RLHF: 67.33% / 4.915 vs 59.43% / 3.196)"}
RULE = ("per metric, d = mean(TDPO2) - mean(DPO) over seeds and m = max(std(TDPO2), std(DPO)) (sample stds): "
        "'above' if d > m, 'below' if d < -m, else 'within'. Reproduced if above in both accuracy and entropy; "
        "not reproduced if below in either; otherwise inconclusive. Seeds: where the sweep ran several, a method "
        "with fewer than 2 successful seeds makes the claim inconclusive (its std is unknown); where it ran one (a "
        "paper-scale run), the single runs are compared with margin 0.")


def _num(x) -> float | None:
    """A JSON-safe number (None for NaN)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def summarize(sweep_dir: Path) -> dict:
    """{method: {"n_seeds", "seeds", "n_failed", metric: {"mean", "std"}}} over the ok jobs of the sweep for each
    metric of METRICS, on the table's scale (accuracy and win rate in %)."""
    from alignlab.sweep.collect import aggregate, collect

    df = collect(sweep_dir)
    keys = [key for key, _ in METRICS.values()]
    for key in keys:
        if key not in df.columns:
            df[key] = math.nan
    out = {}
    for _, row in aggregate(df, by=["method"], metrics=keys).iterrows():
        entry = {"n_seeds": int(row["n_seeds"]), "seeds": str(row["seeds"]), "n_failed": int(row["n_failed"])}
        for name, (key, scale) in METRICS.items():
            entry[name] = {"mean": scale * row[f"{key}_mean"], "std": scale * row[f"{key}_std"]}
        out[str(row["method"])] = entry
    return out


def compare(better: dict, worse: dict) -> dict:
    """One metric of the claim: {"difference", "margin", "outcome"} for better/worse = {"mean", "std"}."""
    d = better["mean"] - worse["mean"]
    m = max(0.0 if math.isnan(s) else s for s in (better["std"], worse["std"]))  # one run: no spread known
    if math.isnan(d):
        return {"difference": d, "margin": m, "outcome": "unknown"}
    return {"difference": d, "margin": m, "outcome": "above" if d > m else "below" if d < -m else "within"}


def verdict(methods: dict) -> dict:
    """The claim's verdict by RULE: {"verdict", "reason", "comparisons": {metric: compare(...)}}."""
    better, worse = (methods.get(CLAIM[k]) for k in ("better", "worse"))
    need = seeds_needed(max((m["n_seeds"] for m in methods.values()), default=0))  # RULE's seed clause
    if better is None or worse is None or min(better["n_seeds"], worse["n_seeds"]) < need:
        seeds = {CLAIM[k]: (methods.get(CLAIM[k]) or {}).get("n_seeds", 0) for k in ("better", "worse")}
        return {"verdict": "inconclusive", "reason": f"needs >= {need} successful seeds of each method, got {seeds}",
                "comparisons": {}}
    comparisons = {name: compare(better[name], worse[name]) for name in CLAIM["metrics"]}
    outcomes = {name: c["outcome"] for name, c in comparisons.items()}
    if "unknown" in outcomes.values():
        result = "inconclusive"
    elif all(o == "above" for o in outcomes.values()):
        result = "reproduced"
    elif any(o == "below" for o in outcomes.values()):
        result = "not reproduced"
    else:
        result = "inconclusive"
    reason = ", ".join(f"{name}: {c['outcome']} (d = {c['difference']:+.3f}, margin {c['margin']:.3f})"
                       for name, c in comparisons.items())
    return {"verdict": result, "reason": reason, "comparisons": comparisons}


def _cell(x: float, digits: int) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def render(methods: dict, result: dict) -> str:
    """The markdown table (ours beside the paper's) and the verdict lines."""
    header = ("| method | accuracy % (ours) | ± | entropy (ours) | ± | win rate vs chosen % (ours) | ± | "
              "accuracy % (paper) | entropy (paper) | seeds | KL(policy‖SFT) (ours) | reward (ours) |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = [m for m in ("dpo", "tdpo1", "tdpo2") if m in methods] + sorted(m for m in methods
                                                                           if m not in ("dpo", "tdpo1", "tdpo2"))
    for method in order:
        row = methods[method]
        paper = PUBLISHED.get(method, (math.nan, math.nan))
        cells = [_cell(row["accuracy"]["mean"], 2), _cell(row["accuracy"]["std"], 2),
                 _cell(row["entropy"]["mean"], 3), _cell(row["entropy"]["std"], 3),
                 _cell(row["winrate_vs_chosen"]["mean"], 1), _cell(row["winrate_vs_chosen"]["std"], 1),
                 _cell(paper[0], 2), _cell(paper[1], 3), str(row["n_seeds"]),
                 f"{_cell(row['kl']['mean'], 2)} ± {_cell(row['kl']['std'], 2)}",
                 f"{_cell(row['reward']['mean'], 3)} ± {_cell(row['reward']['std'], 3)}"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    for method, (acc, ent) in PUBLISHED.items():
        if method not in methods:
            lines.append(f"| {method} | - | - | - | - | - | - | {acc:.2f} | {ent:.3f} | 0 | - | - |")
    lines += ["", f"Claim: {CLAIM['text']}.", f"Rule: {RULE}",
              f"Verdict: {result['verdict'].upper()} ({result['reason']})"]
    return "\n".join(lines)


def summary_json(methods: dict, result: dict, sweep_dir: Path, profile: str | None) -> dict:
    """The machine-readable summary (NaN as null)."""
    def clean(obj):
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        return _num(obj) if isinstance(obj, float) else obj

    timing = Path(sweep_dir) / "timing.json"  # written by run.sh: wall time and load averages of the sweep
    return clean({"recipe": "hh_table", "profile": profile, "sweep_dir": str(sweep_dir), "claim": CLAIM["text"],
                  "rule": RULE, "verdict": result["verdict"], "reason": result["reason"],
                  "comparisons": result["comparisons"], "methods": methods,
                  "published": {m: {"accuracy": a, "entropy": e} for m, (a, e) in PUBLISHED.items()},
                  "timing": json.loads(timing.read_text()) if timing.exists() else None})


def table(sweep_dir: Path, profile: str | None = None) -> str:
    """Summarize the sweep, write hh_table.md and hh_table.json into it, return the printed text."""
    sweep_dir = Path(sweep_dir)
    methods = summarize(sweep_dir)
    result = verdict(methods)
    text = render(methods, result)
    (sweep_dir / "hh_table.md").write_text(text + "\n")
    (sweep_dir / "hh_table.json").write_text(json.dumps(summary_json(methods, result, sweep_dir, profile),
                                                        indent=2) + "\n")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", nargs="?", default="multirun/hh_table")
    parser.add_argument("--profile", default=None, help="recorded in hh_table.json (mini | full)")
    args = parser.parse_args(argv)
    print(table(Path(args.sweep_dir), args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())

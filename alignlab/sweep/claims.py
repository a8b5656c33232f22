"""A paper's claim checked on a sweep: two groups of settings (say TDPO2's and DPO's) compared as fronts over seeds,
and the outcome turned into a verdict that a reproduction report can print.

Each recipe under experiments/ writes its claims as `<out>/claims.json` (`write_claims`); `experiments/reproduce`
gathers them into one report. A claim is a dict:

    {"id", "claim" (what the paper says), "paper" (its figure or number), "ours" (mean +- std over seeds),
     "verdict" ("reproduced" | "not reproduced" | "inconclusive"), "rule" (how the verdict was computed),
     "plots" (paths relative to the recipe's out dir)}
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from alignlab.sweep import pareto

VERDICTS = ("reproduced", "not reproduced", "inconclusive")
# compare_fronts' outcome for "A's front is above B's" -> the claim's verdict
FRONT_VERDICT = {"above": "reproduced", "below": "not reproduced", "crossing": "inconclusive", "tied": "inconclusive",
                 "empty": "inconclusive"}
SEED_RULE = ("Where the sweep ran several seeds, a setting with fewer than 2 successful seeds takes no part (its std "
             "is unknown); where it ran one seed (a paper-scale run), every finished setting takes part with its std "
             "counted as 0, i.e. single runs compare by plain Pareto dominance.")
FRONT_VERDICT_RULE = (f"{pareto.FRONT_RULE} {pareto.NOISE_RULE} {SEED_RULE} Verdict: 'above' -> reproduced, 'below' "
                      "-> not reproduced, 'crossing', 'tied' or a group without a setting that takes part -> "
                      "inconclusive.")


def front_verdict(outcome: str) -> str:
    """compare_fronts' outcome for "A's front is above B's" -> the claim's verdict (FRONT_VERDICT)."""
    if outcome not in FRONT_VERDICT:
        raise ValueError(f"unknown compare_fronts outcome {outcome!r}; expected one of {sorted(FRONT_VERDICT)}")
    return FRONT_VERDICT[outcome]


def _fmt(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if not math.isfinite(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def group_points(summary: pd.DataFrame, rows: pd.Series, metrics: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(means, stds) as (n, d) arrays of the aggregated settings selected by the boolean mask `rows`."""
    part = summary[rows]
    means = np.array([[float(v) for v in part[f"{m}_mean"]] for m in metrics]).T.reshape(len(part), len(metrics))
    stds = np.array([[float(v) for v in part[f"{m}_std"]] for m in metrics]).T.reshape(len(part), len(metrics))
    return means, stds


def seeds_needed(most_seeds: int) -> int:
    """SEED_RULE: the successful seeds a setting needs to take part, given the most any setting of the sweep has."""
    return 2 if most_seeds >= 2 else 1


def taking_part(summary: pd.DataFrame, rows: pd.Series) -> pd.Series:
    """The settings among `rows` that take part in a front comparison (SEED_RULE): >= 2 successful seeds where the
    sweep ran several, every finished setting where it ran one."""
    need = seeds_needed(summary["n_seeds"].max() if len(summary) else 0)
    return rows & (summary["n_seeds"] >= need)


def compare_groups(summary: pd.DataFrame, a_rows: pd.Series, b_rows: pd.Series, metrics: Sequence[str],
                   maximize: Sequence[bool]) -> dict:
    """`pareto.compare_fronts` on the settings of two groups of an `aggregate`d sweep that take part (SEED_RULE), with
    its verdict. Every setting in the result is a label of summary's index: "a_front", "b_front", "a_over_b"
    ((a, b) pairs), "b_over_a" ((b, a) pairs), plus "a_index" / "b_index" (the settings that took part)."""
    a_part, b_part = taking_part(summary, a_rows), taking_part(summary, b_rows)
    a_index, b_index = list(summary.index[a_part]), list(summary.index[b_part])
    a_means, a_stds = group_points(summary, a_part, metrics)
    b_means, b_stds = group_points(summary, b_part, metrics)
    result = pareto.compare_fronts(a_means, a_stds, b_means, b_stds, maximize)
    return {"outcome": result["outcome"], "verdict": front_verdict(result["outcome"]),
            "a_front": [a_index[i] for i in result["a_front"]], "b_front": [b_index[j] for j in result["b_front"]],
            "a_over_b": [(a_index[i], b_index[j]) for i, j in result["a_over_b"]],
            "b_over_a": [(b_index[j], a_index[i]) for j, i in result["b_over_a"]],
            "a_index": a_index, "b_index": b_index}


def describe(summary: pd.DataFrame, rows: pd.Series, metrics: Sequence[str], label_keys: Sequence[str]) -> str:
    """'beta=0.1: reward 0.85 ± 0.01, kl 20.1 ± 1.2; ...' for the selected settings (what a report shows)."""
    parts = []
    for _, row in summary[rows].iterrows():
        name = ", ".join(f"{k}={row[k]}" for k in label_keys if k in row and pd.notna(row[k])) or "-"
        values = ", ".join(f"{m.split('/')[-1]} {_fmt(row[f'{m}_mean'], row[f'{m}_std'])}" for m in metrics)
        parts.append(f"{name}: {values} (n={int(row['n_seeds'])})")
    return "; ".join(parts) if parts else "no finished setting"


def front_claim(claim_id: str, claim: str, paper: str, summary: pd.DataFrame, a_rows: pd.Series, b_rows: pd.Series,
                metrics: Sequence[str], maximize: Sequence[bool], a_name: str, b_name: str,
                label_keys: Sequence[str] = (), plots: Sequence[str] = ()) -> dict:
    """The claim "group A's front lies above group B's" over `metrics` (e.g. [eval/kl, eval/reward] with maximize
    [False, True]), checked by `pareto.compare_fronts` on the seed means and stds of an `aggregate`d sweep."""
    result = compare_groups(summary, a_rows, b_rows, metrics, maximize)
    ours = (f"{a_name}: {describe(summary, a_rows, metrics, label_keys)}. {b_name}: "
            f"{describe(summary, b_rows, metrics, label_keys)}. Fronts: {a_name} {result['outcome']} {b_name} "
            f"({len(result['a_over_b'])} of {a_name}'s front settings dominate one of {b_name}'s beyond noise, "
            f"{len(result['b_over_a'])} the other way)")
    return {"id": claim_id, "claim": claim, "paper": paper, "ours": ours, "verdict": result["verdict"],
            "rule": FRONT_VERDICT_RULE, "plots": list(plots), "outcome": result["outcome"]}


def difference_verdict(a_mean: float, a_std: float, b_mean: float, b_std: float, higher_is_better: bool) -> str:
    """One metric, "A is better than B": reproduced when A's mean is better by more than m = max(std_A, std_B),
    not reproduced when worse by more than m, else (or with a NaN mean) inconclusive. A NaN std counts as 0."""
    if not (math.isfinite(a_mean) and math.isfinite(b_mean)):
        return "inconclusive"
    margin = max(abs(np.nan_to_num(a_std)), abs(np.nan_to_num(b_std)))
    gain = (a_mean - b_mean) * (1 if higher_is_better else -1)
    return "reproduced" if gain > margin else "not reproduced" if gain < -margin else "inconclusive"


DIFFERENCE_RULE = ("d = mean(A) - mean(B) over seeds (sign flipped where lower is better), m = max(std(A), std(B)) "
                   "(sample stds): reproduced if d > m, not reproduced if d < -m, otherwise inconclusive.")


def write_claims(out: str | Path, recipe: str, profile: str | None, seeds: Sequence[int],
                 claims: Sequence[dict]) -> dict:
    """Writes `<out>/claims.json`, with the recipe's wall time from `<out>/timing.json` when its run.sh wrote one,
    and returns the record written."""
    out = Path(out)
    for c in claims:
        if c["verdict"] not in VERDICTS:
            raise ValueError(f"claim {c.get('id')!r}: verdict {c['verdict']!r} is not one of {VERDICTS}")
    timing = out / "timing.json"
    wall = json.loads(timing.read_text()).get("wall_seconds") if timing.exists() else None
    record = {"recipe": recipe, "profile": profile, "seeds": list(seeds),
              "wall_seconds": None if wall is None else int(wall), "claims": list(claims)}
    (out / "claims.json").write_text(json.dumps(record, indent=1))
    return record

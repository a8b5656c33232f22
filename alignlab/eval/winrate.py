"""Win rates judged by a reward, and the TDPO paper's table (METHODS.md section 6).

- :func:`win_rate`: share of comparisons the first side wins; a tie counts half.
- :func:`winrate_vs_chosen`: the policy's sampled responses against the dataset's chosen responses for the
  same prompts (HH-RLHF, UltraFeedback, preference files), both scored by the run's reward group.
- :func:`tdpo_table`: one row per run of the TDPO paper's HH table: alignment = preference accuracy on the
  test pairs (%, implicit reward of chosen > rejected), diversity = mean per-token predictive entropy of the
  policy's samples, plus reward, KL and win rates when present (eval already computes the metrics; this
  gathers and names them).
"""
from __future__ import annotations

import math
import statistics
from typing import Mapping, Sequence


def win_rate(rewards: Sequence[float], baseline_rewards: Sequence[float], tie_tolerance: float = 0.0) -> float:
    """Mean over i of 1 if rewards[i] > baseline_rewards[i], 0.5 if within `tie_tolerance`, else 0."""
    if len(rewards) != len(baseline_rewards):
        raise ValueError(f"win_rate: {len(rewards)} rewards vs {len(baseline_rewards)} baseline rewards")
    if not rewards:
        raise ValueError("win_rate: no comparisons")
    wins = 0.0
    for a, b in zip(rewards, baseline_rewards):
        if abs(a - b) <= tie_tolerance:
            wins += 0.5
        elif a > b:
            wins += 1.0
    return wins / len(rewards)


def winrate_vs_chosen(reward, samples: Sequence[Mapping], chosen: Mapping[str, str],
                      prefix: str = "eval/") -> dict[str, float]:
    """Win rate of the policy's samples ({prompt, completion, reward}, as alignlab.eval.metrics.evaluate
    returns them; a sample without "reward" is scored here) against `chosen[prompt]` (the dataset's chosen
    response, from ``source.chosen_responses("test")``), both judged by `reward`. Samples whose prompt has no
    chosen response are left out; {} when none has one, and when `chosen` is empty (a source without reference
    responses: alignlab.data.source.DataSource.chosen_responses), so the metric is simply absent.

    Returns ``{prefix+"winrate_vs_chosen", prefix+"reward_chosen", prefix+"winrate_n"}``."""
    if not chosen:
        return {}
    matched = [s for s in samples if s["prompt"] in chosen]
    if not matched:
        return {}
    prompts = [s["prompt"] for s in matched]
    if all("reward" in s for s in matched):
        policy = [float(s["reward"]) for s in matched]
    else:
        policy = reward.score(prompts, [s["completion"] for s in matched])
    baseline = reward.score(prompts, [chosen[p] for p in prompts])
    return {f"{prefix}winrate_vs_chosen": win_rate(policy, baseline),
            f"{prefix}reward_chosen": statistics.fmean(baseline),
            f"{prefix}winrate_n": float(len(matched))}


TABLE_COLUMNS = {  # column -> (metric key, scale)
    "accuracy_%": ("eval/pref_accuracy", 100.0),
    "entropy": ("eval/entropy", 1.0),
    "reward": ("eval/reward", 1.0),
    "kl": ("eval/kl", 1.0),
    "winrate_vs_chosen_%": ("eval/winrate_vs_chosen", 100.0),
    "winrate_vs_ref_%": ("eval/winrate_vs_ref", 100.0),
}


def tdpo_table(results: Mapping[str, Mapping[str, float]] | Sequence[Mapping]) -> list[dict]:
    """Rows of the TDPO paper's table from run results: `results` maps a run label (e.g. "dpo beta=0.1") to its
    flat metrics, or is a list of results.json dicts (label "method beta=..."). Missing metrics are NaN."""
    if not isinstance(results, Mapping):
        labelled = {}
        for r in results:
            method = r.get("config", {}).get("method", {})
            label = " ".join(str(x) for x in (method.get("name", "?"),
                                               f"beta={method['beta']}" if "beta" in method else "",
                                               f"alpha={method['alpha']}" if "alpha" in method else "") if x)
            base, k = label, 2
            while label in labelled:  # e.g. seeds of one setting
                label, k = f"{base} #{k}", k + 1
            labelled[label] = r["metrics"]
        results = labelled
    rows = []
    for label, metrics in results.items():
        row = {"run": label}
        for column, (key, scale) in TABLE_COLUMNS.items():
            row[column] = metrics[key] * scale if key in metrics else math.nan
        rows.append(row)
    return rows


def format_table(rows: Sequence[Mapping]) -> str:
    """A plain-text table of tdpo_table rows (columns with no values are dropped)."""
    columns = [c for c in TABLE_COLUMNS if any(not math.isnan(r[c]) for r in rows)]
    width = max([len("run"), *(len(r["run"]) for r in rows)])
    lines = ["  ".join([f"{'run':<{width}}", *(f"{c:>20}" for c in columns)])]
    for r in rows:
        lines.append("  ".join([f"{r['run']:<{width}}", *(f"{r[c]:>20.3f}" for c in columns)]))
    return "\n".join(lines)

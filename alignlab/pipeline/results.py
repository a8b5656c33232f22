"""results.json (flat metrics, where each stage came from, the resolved config) and the summary printed at the end."""
from __future__ import annotations

import json
from pathlib import Path

SUMMARY_KEYS = ["eval/reward", "eval/reward_ref", "eval/kl", "eval/entropy", "eval/pref_accuracy",
                "eval/winrate_vs_chosen", "tax/ppl_ratio", "tax/probe_drop", "val/loss", "val/rewards/accuracies",
                "time/seconds"]


def write_results(results: dict, out: Path, title: str) -> dict:
    (out / "results.json").write_text(json.dumps(results, indent=2))
    metrics = results["metrics"]
    lines = [f"alignlab  {title}"]
    lines += [f"  {k:<24} {metrics[k]:>10.4f}" for k in SUMMARY_KEYS if k in metrics]
    lines.append(f"  results: {out / 'results.json'}")
    print("\n".join(lines))
    return results

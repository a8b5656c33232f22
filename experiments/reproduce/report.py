"""The reproduction report: every recipe's claims (`<out>/<recipe>/claims.json`, see alignlab.sweep.claims; the HH
table's `hh_table.json`) in one markdown file, `<out>/report.md`, and the same as `<out>/report.json`.

    python experiments/reproduce/report.py <out dir> [--profile mini] [--wall SECONDS] [--status recipe=code ...]

For each claim: what the paper says and shows, ours (mean ± std over seeds), the verdict and the rule that computed
it, and links to the plots. Each distinct rule is written out once, at the end (R1, R2, ...), since most claims share
the front rule. A recipe that failed or left no claims is listed as not run, with its log.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RECIPES = ("imdb_frontier", "merge_frontier", "aligndistil", "hh_table")
TITLES = {"imdb_frontier": "IMDb reward vs KL: DPO, TDPO1, TDPO2 (TDPO paper)",
          "merge_frontier": "Alignment tax: model averaging, HMA, OnDARE / OnTIES (Lin et al. 2024; Lu et al. 2024)",
          "aligndistil": "AlignDistil vs DPO (Zhang et al. 2025)",
          "hh_table": "HH-RLHF preference accuracy and entropy (TDPO paper table)"}


def hh_claims(summary: dict) -> dict:
    """hh_table.json (experiments/hh_table/table.py) as a claims record."""
    methods = summary.get("methods") or {}

    def cell(method: str, metric: str) -> str:
        m = (methods.get(method) or {}).get(metric) or {}
        mean, std = m.get("mean"), m.get("std")
        if mean is None:
            return "n/a"
        return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"

    ours = "; ".join(f"{name}: accuracy {cell(name, 'accuracy')}, entropy {cell(name, 'entropy')}"
                     for name in methods)
    claim = {"id": "tdpo2_above_dpo_hh", "claim": summary.get("claim", ""), "paper": summary.get("claim", ""),
             "ours": f"{ours} ({summary.get('reason', '')})", "verdict": summary.get("verdict", "inconclusive"),
             "rule": summary.get("rule", ""), "plots": []}
    seeds = sorted({int(s) for m in methods.values() for s in str(m.get("seeds") or "").split()})
    return {"recipe": "hh_table", "profile": summary.get("profile"), "seeds": seeds,
            "wall_seconds": (summary.get("timing") or {}).get("wall_seconds"), "claims": [claim]}


def load_recipe(out: Path, recipe: str) -> dict | None:
    """The recipe's claims record, or None where it left none."""
    path = out / recipe / "claims.json"
    if path.exists():
        return json.loads(path.read_text())
    hh = out / recipe / "hh_table.json"
    if recipe == "hh_table" and hh.exists():
        return hh_claims(json.loads(hh.read_text()))
    return None


def render(out: Path, profile: str, records: dict, status: dict, wall: int | None) -> str:
    lines = [f"# Reproduction report ({profile})", ""]
    if wall is not None:
        lines += [f"Wall time: {wall // 60} min {wall % 60} s for all recipes.", ""]
    walls = {r: rec.get("wall_seconds") for r, rec in records.items() if rec and rec.get("wall_seconds") is not None}
    if walls:
        total = int(sum(walls.values()))
        lines += ["Sweep wall times: " + ", ".join(f"{r} {int(w)} s" for r, w in walls.items())
                  + f" (sum {total // 60} min {total % 60} s; each recipe's timing.json has its load averages).", ""]
    rules = {}  # rule text -> its name (R1, R2, ...), in order of first use
    counts = {}
    rows = []
    for recipe in RECIPES:
        record = records.get(recipe)
        for c in (record or {}).get("claims", []):
            counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
            rows.append(f"| {c['claim']} | {c['verdict'].upper()} | {recipe} |")
    lines += ["| claim | verdict | recipe |", "|---|---|---|", *rows, ""]
    lines.append("Verdicts: " + (", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "none") + ".")
    lines.append("")
    for recipe in RECIPES:
        record = records.get(recipe)
        lines += [f"## {TITLES[recipe]}", ""]
        code = status.get(recipe)
        if record is None:
            why = f"exit code {code}" if code not in (None, 0) else "no claims written"
            lines += [f"Not run ({why}); see `{recipe}.log`.", ""]
            continue
        wall_r = record.get("wall_seconds")
        lines.append(f"Seeds {record.get('seeds')}; sweep wall time {wall_r} s." if wall_r is not None
                     else f"Seeds {record.get('seeds')}.")
        if code not in (None, 0):
            lines.append(f"The recipe exited with code {code}: its claims may rest on a partial sweep "
                         f"(see `{recipe}.log`).")
        lines.append("")
        for c in record["claims"]:
            rule = rules.setdefault(c["rule"], f"R{len(rules) + 1}")
            lines += [f"### {c['claim']}", "",
                      f"- Paper: {c['paper']}",
                      f"- Ours: {c['ours']}",
                      f"- Verdict: **{c['verdict'].upper()}**",
                      f"- Rule: {rule} (below)"]
            lines += [f"- Plot: [{p}]({recipe}/{p})" for p in c.get("plots", [])]
            lines.append("")
    if rules:
        lines += ["## Rules", ""] + [f"- **{name}**: {text}" for text, name in rules.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--wall", type=int, default=None)
    parser.add_argument("--status", nargs="*", default=[], help="recipe=exit_code for each recipe that ran")
    args = parser.parse_args(argv)
    status = {k: int(v) for k, v in (s.split("=", 1) for s in args.status)}
    records = {r: load_recipe(args.out, r) for r in RECIPES}
    text = render(args.out, args.profile, records, status, args.wall)
    (args.out / "report.md").write_text(text + "\n")
    (args.out / "report.json").write_text(json.dumps({"profile": args.profile, "wall_seconds": args.wall,
                                                      "status": status, "recipes": records}, indent=1))
    print(text)
    print(f"\nwritten: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

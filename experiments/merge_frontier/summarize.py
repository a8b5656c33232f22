"""The merge frontier from the multiruns of experiments/merge_frontier/run.sh: reward (eval/reward) against a
capability the alignment erodes (default tax/capability), mean ± sample std over seeds per setting, the fronts
with error bars, and verdicts on the two papers' claims.

    python experiments/merge_frontier/summarize.py <out dir> [--profile mini|full] [--x tax/capability]

Every job dir under <out dir> is read (`alignlab.sweep.collect.collect`) and sorted into a family by its config:

    adamw        DPO with AdamW (merge=none): the aligned policy, alpha = 1 of the merges
    sft          the SFT model (alpha = 0), from the adamw jobs' reference metrics (eval/reward_ref, <x>_ref)
    average      model averaging, merge=average, one setting per alpha
    hma_learned  HMA with learned block ratios (merge=hma), per mean alpha
    hma_given    HMA with given block ratios (merge.block_ratios), per mean alpha
    ondare       DPO with merge=ondare, per (p, a)
    onties       DPO with merge=onties, per (p, a)

Writes into <out dir>: merge_frontier.md (the table and the verdicts), merge_frontier.csv (one row per setting),
merge_frontier_jobs.csv (one row per job), claims.json (the verdicts, read by the report generator),
front_all.png, front_hma.png and front_online.png.

The verdicts (RULE): both objectives are maximised; each claim compares two groups of settings with
`alignlab.sweep.claims.compare_groups`, the rule every recipe uses (FRONT_VERDICT_RULE: fronts beyond one std over
seeds; above -> reproduced, below -> not reproduced, crossing / tied / empty -> inconclusive; a setting with fewer
than 2 successful seeds takes no part in a multi-seed sweep). The merges' endpoints (alpha 0 = the SFT model,
alpha 1 = the policy) are the same models for averaging and HMA, so they are drawn but not compared.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
import yaml

from alignlab.sweep.claims import FRONT_VERDICT_RULE, compare_groups, write_claims
from alignlab.sweep.collect import aggregate, collect

REWARD = "eval/reward"
FAMILIES = {  # family -> legend label, in table order
    "sft": "SFT model (alpha 0)",
    "adamw": "DPO, AdamW (alpha 1)",
    "average": "model averaging",
    "hma_learned": "HMA, learned ratios",
    "hma_given": "HMA, given ratios",
    "ondare": "DPO, OnDARE",
    "onties": "DPO, OnTIES",
}
RULE = FRONT_VERDICT_RULE  # the same text in every recipe, so the reproduction report writes it once
AXES = "Reward (eval/reward) and capability are both maximised."
CLAIMS = [
    {"id": "hma_above_averaging", "a": "hma_learned", "b": "average", "plot": "front_hma.png",
     "claim": "HMA (learned per-block ratios) has a reward-vs-capability front above model averaging's",
     "paper": "Lin et al., EMNLP 2024 (arXiv 2309.06256): HMA's alignment-forgetting Pareto front lies above that "
              "of plain model averaging (OpenLLaMA-3B, HH-RLHF; tax on reading comprehension, common-sense QA and "
              "Fr-En translation)"},
    {"id": "hma_given_above_averaging", "a": "hma_given", "b": "average", "plot": "front_hma.png",
     "claim": "HMA with given ratios that average the lower layers most (block 1 and embeddings alpha/2, the other "
              "blocks 1.25 alpha) has a reward-vs-capability front above model averaging's",
     "paper": "Lin et al., EMNLP 2024: averaging the low-level (input-side) transformer layers gives a better "
              "reward-tax trade-off than averaging the others, the observation HMA builds on"},
    {"id": "ondare_keeps_capability", "a": "ondare", "b": "adamw", "plot": "front_online.png",
     "claim": "DPO with OnDARE keeps more capability at equal reward than DPO with AdamW",
     "paper": "Lu et al. 2024 (arXiv 2405.17931), online merging optimizers: OnDARE raises the alignment reward and "
              "mitigates the alignment tax compared with AdamW (Qwen1.5 / LLaMA-3, 1.8B-8B, DPO and KTO, 14 "
              "benchmarks)"},
    {"id": "onties_keeps_capability", "a": "onties", "b": "adamw", "plot": "front_online.png",
     "claim": "DPO with OnTIES keeps more capability at equal reward than DPO with AdamW",
     "paper": "Lu et al. 2024 (arXiv 2405.17931), online merging optimizers: OnTIES raises the alignment reward and "
              "mitigates the alignment tax compared with AdamW (Qwen1.5 / LLaMA-3, 1.8B-8B, DPO and KTO, 14 "
              "benchmarks)"},
]
PLOTS = {  # file -> (families drawn, title)
    "front_all.png": (list(FAMILIES), "every merge"),
    "front_hma.png": (["sft", "adamw", "average", "hma_learned", "hma_given"], "model averaging vs HMA"),
    "front_online.png": (["sft", "adamw", "average", "ondare", "onties"], "online merging optimizers vs AdamW"),
}


# ---- reading the jobs ----------------------------------------------------------------------------------------------
def _config(job_dir: str) -> dict:
    try:
        return yaml.safe_load((Path(job_dir) / ".hydra" / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _fmt(value) -> str:
    return f"{float(value):g}" if isinstance(value, (int, float)) else str(value)


def classify(config: dict) -> tuple[str | None, str, float]:
    """(family, setting label, alpha) of one job from its composed config (.hydra/config.yaml); family None for a
    job that belongs to no family (another method, a merge of another kind)."""
    merge = config.get("merge") or {}
    name, alpha = merge.get("name"), merge.get("alpha")
    if config.get("mode", "train") == "merge":
        if name == "average":
            return "average", f"alpha={_fmt(alpha)}", float(alpha)
        if name == "hma":
            ratios = merge.get("block_ratios")
            if ratios:
                return "hma_given", f"alpha={_fmt(alpha)} [{','.join(_fmt(r) for r in ratios)}]", float(alpha)
            return "hma_learned", f"alpha={_fmt(alpha)}", float(alpha)
        return None, "", math.nan
    if name == "none":
        return "adamw", "AdamW", 1.0
    if name in ("ondare", "onties"):
        return name, f"p={_fmt(merge.get('p'))} a={_fmt(merge.get('a'))}", math.nan
    return None, "", math.nan


def _ref_key(df: pd.DataFrame, x: str) -> str | None:
    """The start model's value of metric x in the jobs' results: <x>_ref (tax/capability) or <x>_pre (lm_eval)."""
    for key in (f"{x}_ref", f"{x}_pre"):
        if key in df.columns:
            return key
    return None


def job_points(jobs: pd.DataFrame, x: str) -> pd.DataFrame:
    """One row per job (family, setting, alpha, seed, status, metrics), plus one `sft` row per adamw job holding the
    start model's reward and x (its reference metrics)."""
    rows = []
    ref_x = _ref_key(jobs, x)
    for job in jobs.to_dict("records"):
        family, setting, alpha = classify(_config(job["job_dir"]))
        if family is None:
            continue
        base = {"family": family, "setting": setting, "alpha": alpha, "seed": job.get("seed"),
                "status": job["status"], "job_dir": job["job_dir"]}
        metrics = {m: job.get(m, math.nan) for m in (REWARD, x, "eval/kl", "tax/ppl_ratio", "merge/ratio_1",
                                                       "merge/ratio_2", "merge/ratio_3")}
        rows.append({**base, **metrics})
        if family == "adamw":
            rows.append({**base, "family": "sft", "setting": "SFT", "alpha": 0.0,
                         REWARD: job.get("eval/reward_ref", math.nan),
                         x: job.get(ref_x, math.nan) if ref_x else math.nan,
                         "eval/kl": 0.0, "tax/ppl_ratio": 1.0})
    columns = ["family", "setting", "alpha", "seed", "status", REWARD, x, "eval/kl", "tax/ppl_ratio",
               "merge/ratio_1", "merge/ratio_2", "merge/ratio_3", "job_dir"]
    out = pd.DataFrame.from_records(rows, columns=columns)
    for m in columns[5:-1]:
        out[m] = out[m].astype(float)
    return out


def summarize(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """Mean and sample std over seeds per (family, setting), in FAMILIES order and by alpha within a family."""
    metrics = [REWARD, x, "eval/kl", "tax/ppl_ratio", "merge/ratio_1", "merge/ratio_2", "merge/ratio_3"]
    summary = aggregate(points, by=["family", "setting", "alpha"], metrics=metrics)
    order = {f: i for i, f in enumerate(FAMILIES)}
    summary["_order"] = summary["family"].map(order)
    summary = summary.sort_values(["_order", "alpha", "setting"], kind="stable").drop(columns="_order")
    summary["label"] = summary["family"].map(FAMILIES)
    return summary.reset_index(drop=True)


# ---- verdicts ------------------------------------------------------------------------------------------------------
def judge(summary: pd.DataFrame, a: str, b: str, x: str) -> dict:
    """Family a's settings against family b's (both objectives maximised): {"outcome", "verdict", "a_over_b",
    "b_over_a"} with the settings named by their labels."""
    result = compare_groups(summary, summary["family"] == a, summary["family"] == b, [x, REWARD], [True, True])
    name = summary["setting"]
    return {"outcome": result["outcome"], "verdict": result["verdict"],
            "a_over_b": [(name[i], name[j]) for i, j in result["a_over_b"]],
            "b_over_a": [(name[j], name[i]) for j, i in result["b_over_a"]],
            "a_settings": len(result["a_index"]), "b_settings": len(result["b_index"])}


def _pm(mean: float, std: float, digits: int = 3) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if std is None or math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _describe(summary: pd.DataFrame, family: str, x: str) -> str:
    rows = summary[summary["family"] == family]
    if rows.empty:
        return f"{FAMILIES[family]}: no runs"
    parts = [f"{r['setting']}: reward {_pm(r[f'{REWARD}_mean'], r[f'{REWARD}_std'])}, {x.split('/')[-1]} "
             f"{_pm(r[f'{x}_mean'], r[f'{x}_std'])} (n={int(r['n_seeds'])})" for r in rows.to_dict("records")]
    return f"{FAMILIES[family]}: " + "; ".join(parts)


def paired(points: pd.DataFrame, family: str, x: str) -> str:
    """Per-seed differences family - adamw in capability and reward (context only: the verdict's rule is unpaired),
    for a family with one setting; "" otherwise."""
    ok = points[points["status"] == "ok"]
    a, b = ok[ok["family"] == family], ok[ok["family"] == "adamw"]
    if a.empty or b.empty or a["setting"].nunique() != 1:
        return ""
    both = a.merge(b, on="seed", suffixes=("", "_b")).sort_values("seed")
    if both.empty:
        return ""
    cells = [f"seed {int(r['seed'])}: {r[x] - r[x + '_b']:+.3f} / {r[REWARD] - r[REWARD + '_b']:+.3f}"
             for r in both.to_dict("records")]
    return f" Paired with AdamW's run of the same seed ({x.split('/')[-1]} / reward difference): " + \
        ", ".join(cells) + "."


def claims(summary: pd.DataFrame, x: str, points: pd.DataFrame | None = None) -> list[dict]:
    """The claims.json entries (CLAIMS, each judged by `judge`)."""
    out = []
    for claim in CLAIMS:
        result = judge(summary, claim["a"], claim["b"], x)
        wins = "; ".join(f"{FAMILIES[claim['a']]} {s} over {FAMILIES[claim['b']]} {t}"
                         for s, t in result["a_over_b"])
        losses = "; ".join(f"{FAMILIES[claim['b']]} {s} over {FAMILIES[claim['a']]} {t}"
                           for s, t in result["b_over_a"])
        ours = (f"{_describe(summary, claim['a'], x)}. {_describe(summary, claim['b'], x)}. "
                f"compare_fronts: {result['outcome']}"
                + (f" (beyond noise: {wins})" if wins else "") + (f" (beyond noise: {losses})" if losses else "")
                + ".")
        if claim["b"] == "adamw":  # context: where the online merger sits against post-hoc averaging of AdamW's policy
            context = judge(summary, claim["a"], "average", x)
            ours += f" Against the model-averaging front: {context['outcome']}."
            ours += paired(points, claim["a"], x) if points is not None else ""
        out.append({"id": claim["id"], "claim": claim["claim"], "paper": claim["paper"], "ours": ours,
                    "verdict": result["verdict"], "rule": RULE, "plots": [claim["plot"]]})
    return out


# ---- outputs -------------------------------------------------------------------------------------------------------
def render(summary: pd.DataFrame, entries: list[dict], x: str) -> str:
    lines = [f"| model | setting | seeds | reward | {x} | KL(model‖SFT) | ppl ratio | block ratios |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary.to_dict("records"):
        ratios = [r.get(f"merge/ratio_{k}_mean", math.nan) for k in (1, 2, 3)]
        ratio_text = "-" if any(math.isnan(v) for v in ratios) else "/".join(f"{v:.2f}" for v in ratios)
        lines.append(f"| {r['label']} | {r['setting']} | {int(r['n_seeds'])} | "
                     f"{_pm(r[f'{REWARD}_mean'], r[f'{REWARD}_std'])} | {_pm(r[f'{x}_mean'], r[f'{x}_std'])} | "
                     f"{_pm(r['eval/kl_mean'], r['eval/kl_std'], 2)} | "
                     f"{_pm(r['tax/ppl_ratio_mean'], r['tax/ppl_ratio_std'], 3)} | {ratio_text} |")
    lines += ["", "Mean ± sample std over seeds. Reward and capability: higher is better.", "", "## Claims", ""]
    for e in entries:
        lines += [f"- **{e['id']}**: {e['claim']}. Paper: {e['paper']}.",
                  f"  Ours: {e['ours']}", f"  Verdict: **{e['verdict'].upper()}**.", ""]
    lines += [f"Rule: {AXES} {RULE}"]
    return "\n".join(lines)


def draw(summary: pd.DataFrame, out: Path, x: str) -> list[str]:
    from alignlab.sweep.plots import plot_front

    written = []
    for name, (families, title) in PLOTS.items():
        part = summary[summary["family"].isin(families) & (summary["n_seeds"] > 0)]
        if part.empty:
            continue
        plot_front(part, x, REWARD, maximize_x=True, maximize_y=True, path=out / name, hue="label",
                   labels=part["setting"].replace({"AdamW": "", "SFT": ""}).tolist(),
                   title=f"{REWARD} vs {x}: {title}",
                   note="alpha: share of the DPO policy (0 = SFT model, 1 = policy)")
        written.append(name)
    return written


def _seeds(points: pd.DataFrame) -> list:
    ok = points[points["status"] == "ok"]["seed"].dropna()
    return sorted({int(s) for s in ok})


def run(out: Path, profile: str | None = None, x: str = "tax/capability", plots: bool = True) -> dict:
    """Summarize <out>: write the table, the CSVs, the plots and claims.json; return claims.json's content."""
    out = Path(out)
    points = job_points(collect(out), x)
    if points.empty:
        raise SystemExit(f"merge_frontier: no job of a known family under {out}")
    summary = summarize(points, x)
    entries = claims(summary, x, points)
    written = draw(summary, out, x) if plots else []
    for e in entries:
        e["plots"] = [p for p in e["plots"] if p in written]
    result = write_claims(out, "merge_frontier", profile, _seeds(points), entries)
    text = render(summary, entries, x)
    (out / "merge_frontier.md").write_text(text + "\n")
    summary.to_csv(out / "merge_frontier.csv", index=False)
    points.to_csv(out / "merge_frontier_jobs.csv", index=False)
    print(text)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="multirun/merge_frontier_mini")
    parser.add_argument("--profile", default=None, help="recorded in claims.json (mini | full)")
    parser.add_argument("--x", default="tax/capability", help="the capability metric (maximised)")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    run(Path(args.out), args.profile, args.x, plots=not args.no_plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())

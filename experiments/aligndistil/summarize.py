"""AlignDistil vs DPO from the sweep of experiments/aligndistil/run.sh: each setting's mean ± std over seeds of the
reward, the KL to the SFT model and the steps to the final reward, the reward-vs-KL fronts (plot with error bars),
the reward curves, and a verdict on each of the paper's two claims by a stated rule.

    python experiments/aligndistil/summarize.py <out dir> [--profile mini|full]

writes `<out dir>/claims.json` (the report generator's format), `<out dir>/aligndistil.md`, `<out dir>/front.png`
and `<out dir>/curves.png`, and prints the markdown.

Claims (Zhang et al., ACL 2025, arXiv 2503.02832) and rules:
  (a) aligndistil_front_above_dpo: AlignDistil's reward-vs-KL front (eval/reward maximised, eval/kl minimised) lies
      above DPO's. `alignlab.sweep.claims.compare_groups`, the rule of every recipe's front claim (fronts beyond one
      std over seeds; above -> reproduced, below -> not reproduced, crossing / tied / empty -> inconclusive).
  (b) aligndistil_converges_faster: AlignDistil needs fewer steps than DPO to reach a reward level that every
      compared setting reaches (from each run's val/reward curve), CONVERGENCE_RULE.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

REWARD, KL, STEPS = "eval/reward", "eval/kl", "curve/steps_to_final_reward"
METRICS = (REWARD, KL, STEPS, "eval/reward_ref", "curve/final_reward", "time/seconds")
GROUPS = ("aligndistil", "dpo")
PAPER = {
    "aligndistil_front_above_dpo": (
        "Zhang et al. ACL 2025 (arXiv 2503.02832), main results: AlignDistil above DPO on AlpacaEval 2.0, MT-Bench "
        "and Arena-Hard with the RLHF KL coefficient of the objective; no reward-vs-KL front is published, so the "
        "miniature tests the claim as fronts over each method's own coefficient"),
    "aligndistil_converges_faster": (
        "Zhang et al. ACL 2025 (arXiv 2503.02832): fast convergence from token-level distributional reward "
        "optimisation (abstract; the paper's training-curve comparison with DPO)"),
}
CLAIMS = {"aligndistil_front_above_dpo": "AlignDistil's reward-vs-KL front lies above DPO's",
          "aligndistil_converges_faster": "AlignDistil converges faster than DPO (fewer steps to a reward level both reach)"}
CONVERGENCE_RULE = (
    "A common reward level L = the lowest mean final reward (eval/reward) among all compared settings of both "
    "methods, minus 0.02: a level every setting reaches. Per run, the first logged training step whose held-out "
    "reward (val/reward, every eval.reward_every_n_steps) is >= L (a run that never reaches it counts with its last "
    "logged step: a lower bound, which can only favour the slower method). Per method, every successful run of all "
    "its settings and seeds pooled: mean and sample std. d = mean(AlignDistil) - mean(DPO), m = max(std(AlignDistil), "
    "std(DPO)). Reproduced if d < -m, not reproduced if d > m, else inconclusive; also inconclusive when either "
    "method has < 2 runs, or when either method's mean reward gain over the SFT model (eval/reward - "
    "eval/reward_ref) is not positive. A common level, not each run's own final reward, because the two methods' "
    "runs differ in length (AlignDistil trains once on each distinct chosen response: 79 steps on the miniature, "
    "DPO 155) and a shorter run reaches its own final value sooner.")


def front_rule() -> str:
    """Claim (a)'s rule: the one every recipe's front claim uses (alignlab.sweep.claims), on this claim's axes."""
    from alignlab.sweep.claims import FRONT_VERDICT_RULE

    return f"AlignDistil's settings against DPO's on (eval/kl minimised, eval/reward maximised). {FRONT_VERDICT_RULE}"


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def _group(method: str) -> str | None:
    name = str(method).lower()
    return next((g for g in GROUPS if name == g or name.startswith(g)), None)


def _ms(values) -> dict:
    """{"mean", "std", "n"}: sample std (NaN below 2 values)."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return {"mean": statistics.fmean(values) if values else math.nan,
            "std": statistics.stdev(values) if len(values) > 1 else math.nan, "n": len(values)}


def fmt(stat: dict, digits: int = 3) -> str:
    if not math.isfinite(stat["mean"]):
        return "-"
    std = "" if not math.isfinite(stat["std"]) else f" ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}{std}"


# ---- reading the sweep ------------------------------------------------------------------------------------------
def runs(out_dir: Path):
    """collect() of the whole out dir (both multiruns), with `group` (aligndistil | dpo | None) and `setting`
    (the swept hyperparameters other than the seed, e.g. "beta=0.1" or "r=5") columns."""
    from alignlab.sweep.collect import SEED_KEYS, collect, key_columns

    df = collect(out_dir)
    for m in METRICS:
        if m not in df.columns:
            df[m] = math.nan
    keys = [k for k in key_columns(df) if k not in SEED_KEYS and k not in ("method", "experiment")]
    df["group"] = [_group(m) for m in df["method"]]

    def setting(row) -> str:
        parts = []
        for k in keys:
            v = row.get(k)
            if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
                continue
            parts.append(f"{k.rsplit('.', 1)[-1]}={v:g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]}={v}")
        return " ".join(parts) or "default"

    df["setting"] = [setting(row) for _, row in df.iterrows()]
    return df


def settings_table(df):
    """collect.aggregate by (method, setting): one row per setting, mean and std of METRICS over seeds."""
    from alignlab.sweep.collect import aggregate

    agg = aggregate(df, by=["method", "setting"], metrics=list(METRICS))
    agg["group"] = [_group(m) for m in agg["method"]]
    gain = df.assign(gain=df[REWARD] - df["eval/reward_ref"])
    agg["gain_mean"] = [_ms(gain[(gain["method"] == m) & (gain["setting"] == s) & (gain["status"] == "ok")]["gain"])
                        ["mean"] for m, s in zip(agg["method"], agg["setting"])]
    return agg


# ---- verdicts ---------------------------------------------------------------------------------------------------
def front_verdict(agg) -> dict:
    """Claim (a) by the rule every recipe's front claim uses (front_rule()) on the aggregated settings."""
    from alignlab.sweep.claims import compare_groups

    agg = agg.reset_index(drop=True)  # index labels = positions, as _stat reads them
    result = compare_groups(agg, agg["group"] == "aligndistil", agg["group"] == "dpo", [KL, REWARD], [False, True])
    name = agg["setting"]
    a_over = [f"AlignDistil {name[i]} over DPO {name[j]}" for i, j in result["a_over_b"]]
    b_over = [f"DPO {name[j]} over AlignDistil {name[i]}" for j, i in result["b_over_a"]]
    reason = (f"compare_fronts: {result['outcome']}; AlignDistil front {[name[i] for i in result['a_front']]}, "
              f"DPO front {[name[j] for j in result['b_front']]}; dominance beyond noise: "
              f"{'; '.join(a_over + b_over) or 'none'}")

    def front_text(front):
        return "; ".join(f"{name[i]}: reward {fmt(_stat(agg, REWARD, i))}, KL {fmt(_stat(agg, KL, i), 2)}"
                         for i in front) or "none"

    ours = (f"AlignDistil front: {front_text(result['a_front'])} | DPO front: {front_text(result['b_front'])} "
            "(mean ± std over seeds)")
    return {"verdict": result["verdict"], "outcome": result["outcome"], "reason": reason, "ours": ours}


def _stat(rows, metric, i) -> dict:
    return {"mean": float(rows[f"{metric}_mean"].iloc[i]), "std": float(rows[f"{metric}_std"].iloc[i])}


def convergence_verdict(ad_steps, dpo_steps, ad_gain: float, dpo_gain: float) -> dict:
    """Claim (b) by CONVERGENCE_RULE on the pooled per-run steps of each method and each method's mean reward gain."""
    a, b = _ms(ad_steps), _ms(dpo_steps)
    d = a["mean"] - b["mean"]
    m = max(a["std"] if math.isfinite(a["std"]) else 0.0, b["std"] if math.isfinite(b["std"]) else 0.0)
    base = {"aligndistil": a, "dpo": b, "difference": d, "margin": m}
    if a["n"] < 2 or b["n"] < 2:
        return {**base, "verdict": "inconclusive", "reason": f"needs >= 2 runs of each (got {a['n']} and {b['n']})"}
    gains = {"AlignDistil": ad_gain, "DPO": dpo_gain}
    flat = [k for k, g in gains.items() if not (g is not None and math.isfinite(g) and g > 0)]
    if flat:
        return {**base, "verdict": "inconclusive",
                "reason": f"{' and '.join(flat)} did not raise the reward over the SFT model on average "
                          f"(gain {', '.join(f'{k} {v:+.3f}' for k, v in gains.items())})"}
    verdict = "reproduced" if d < -m else "not reproduced" if d > m else "inconclusive"
    return {**base, "verdict": verdict, "reason": f"d = {d:+.1f} steps, margin {m:.1f}"}


def run_curve(job_dir) -> list[tuple[int, float]]:
    """[(step, val/reward), ...] of one run, from its csv/metrics.csv (empty where there is none)."""
    path = Path(job_dir) / "csv" / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return sorted((int(float(r["step"])), float(r["val/reward"])) for r in csv.DictReader(f)
                      if r.get("val/reward") not in (None, ""))


def steps_to_level(curve: list[tuple[int, float]], level: float) -> tuple[int | None, bool]:
    """(the first step whose reward is >= level, True), or (the last logged step, False) if it never gets there."""
    for step, reward in curve:
        if reward >= level:
            return step, True
    return (curve[-1][0] if curve else None), False


def convergence_from_runs(df, agg) -> dict:
    ok = df[df["status"] == "ok"]
    level = float(agg[f"{REWARD}_mean"].min()) - 0.02
    steps, missed = {}, {}
    for group in ("aligndistil", "dpo"):
        found = [steps_to_level(run_curve(d), level) for d in ok.loc[ok["group"] == group, "job_dir"]]
        steps[group] = [s for s, _ in found if s is not None]
        missed[group] = sum(1 for s, reached in found if s is not None and not reached)
    gain = lambda part: _ms(part[REWARD] - part["eval/reward_ref"])["mean"]
    result = convergence_verdict(steps["aligndistil"], steps["dpo"], gain(ok[ok["group"] == "aligndistil"]),
                                 gain(ok[ok["group"] == "dpo"]))
    result["reason"] = (f"steps to reward {level:.3f}; runs that never reached it: AlignDistil "
                        f"{missed['aligndistil']}, DPO {missed['dpo']}; {result['reason']}")
    return {**result, "level": level}


# ---- plots ------------------------------------------------------------------------------------------------------
def plot_front(agg, path: Path) -> Path:
    from alignlab.sweep.plots import plot_reward_kl

    labels = list(agg["setting"])
    return plot_reward_kl(agg, path, hue="method", labels=labels,
                          title="AlignDistil vs DPO: reward vs KL(policy || SFT model)",
                          note="each setting: mean ± std over seeds")


def reward_curves(df) -> dict:
    """{(method, setting): {step: [val/reward per seed]}} from each ok job's csv/metrics.csv."""
    curves: dict = {}
    for _, row in df[df["status"] == "ok"].iterrows():
        path = Path(row["job_dir"]) / "csv" / "metrics.csv"
        if not path.exists():
            continue
        with open(path, newline="") as f:
            for rec in csv.DictReader(f):
                if rec.get("val/reward") not in (None, ""):
                    curves.setdefault((row["method"], row["setting"]), {}).setdefault(
                        int(float(rec["step"])), []).append(float(rec["val/reward"]))
    return curves


def plot_curves(curves: dict, path: Path) -> Path | None:
    if not curves:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.6, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    styles = {"aligndistil": "-", "dpo": "--"}
    for i, ((method, setting), by_step) in enumerate(sorted(curves.items())):
        steps = sorted(by_step)
        mean = [statistics.fmean(by_step[s]) for s in steps]
        std = [statistics.stdev(by_step[s]) if len(by_step[s]) > 1 else 0.0 for s in steps]
        line, = ax.plot(steps, mean, styles.get(_group(method), ":"), color=f"C{i % 10}", marker="o", ms=3,
                        label=f"{method} {setting}")
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.12)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("val/reward (policy samples, held-out prompts)")
    ax.set_title("Reward during training (mean ± std over seeds)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


# ---- outputs ----------------------------------------------------------------------------------------------------
def render(agg, front: dict, conv: dict, timing: dict | None) -> str:
    lines = ["| method | setting | seeds | eval/reward | eval/kl | steps to final reward | reward gain over SFT |",
             "|---|---|---|---|---|---|---|"]
    for i in range(len(agg)):
        row = agg.iloc[i]
        failed = f" ({int(row['n_failed'])} failed)" if row["n_failed"] else ""
        lines.append(f"| {row['method']} | {row['setting']} | {int(row['n_seeds'])}{failed} | "
                     f"{fmt(_stat(agg, REWARD, i))} | {fmt(_stat(agg, KL, i), 2)} | {fmt(_stat(agg, STEPS, i), 0)} | "
                     f"{row['gain_mean']:+.3f} |")
    lines += ["", f"(a) {CLAIMS['aligndistil_front_above_dpo']}: **{front['verdict'].upper()}** ({front['reason']})",
              f"    Rule: {front_rule()}",
              (f"(b) {CLAIMS['aligndistil_converges_faster']}: **{conv['verdict'].upper()}** "
               f"(AlignDistil {fmt(conv['aligndistil'], 0)} steps, DPO {fmt(conv['dpo'], 0)}; {conv['reason']})"),
              f"    Rule: {CONVERGENCE_RULE}"]
    if timing:
        lines += ["", (f"Wall time {timing.get('wall_seconds')} s; load average {timing.get('load_average_start')} "
                       f"at the start, {timing.get('load_average_end')} at the end ({timing.get('cores')} cores).")]
    return "\n".join(lines)


def claim_entries(front: dict, conv: dict, plots: dict) -> list[dict]:
    """The two claims as alignlab.sweep.claims.write_claims records them."""
    from alignlab.sweep.claims import FRONT_VERDICT_RULE

    return [
        {"id": "aligndistil_front_above_dpo", "claim": CLAIMS["aligndistil_front_above_dpo"],
         "paper": PAPER["aligndistil_front_above_dpo"], "ours": front["ours"], "verdict": front["verdict"],
         "rule": FRONT_VERDICT_RULE, "plots": plots["front"]},  # the shared text; front_rule() adds the axes
        {"id": "aligndistil_converges_faster", "claim": CLAIMS["aligndistil_converges_faster"],
         "paper": PAPER["aligndistil_converges_faster"],
         "ours": f"steps to a common reward level: AlignDistil {fmt(conv['aligndistil'], 1)} "
                 f"(n={conv['aligndistil']['n']}), DPO {fmt(conv['dpo'], 1)} (n={conv['dpo']['n']}), mean ± "
                 f"std over all runs; {conv['reason']}",
         "verdict": conv["verdict"], "rule": CONVERGENCE_RULE, "plots": plots["curves"]}]


def summarize(out_dir: Path, profile: str | None = None) -> str:
    from alignlab.sweep.claims import write_claims

    out_dir = Path(out_dir)
    df = runs(out_dir)
    df = df[df["group"].notna()]
    agg = settings_table(df)
    front, conv = front_verdict(agg), convergence_from_runs(df, agg)
    timing_path = out_dir / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else None
    plots = {"front": [], "curves": []}
    if len(agg):
        plots["front"].append(plot_front(agg, out_dir / "front.png").relative_to(out_dir).as_posix())
    curve_path = plot_curves(reward_curves(df), out_dir / "curves.png")
    if curve_path is not None:
        plots["curves"].append(curve_path.relative_to(out_dir).as_posix())
    seeds = sorted({int(s) for s in df.loc[df["status"] == "ok", "seed"] if s is not None and not pd_isna(s)})
    write_claims(out_dir, "aligndistil", profile, seeds, claim_entries(front, conv, plots))
    text = render(agg, front, conv, timing)
    header = [f"# AlignDistil vs DPO ({profile or 'unknown'} profile)", "",
              f"Sweep dir: `{out_dir}`; seeds {seeds}. Plots: {', '.join(plots['front'] + plots['curves'])}.", ""]
    (out_dir / "aligndistil.md").write_text("\n".join(header) + text + "\n")
    return text


def pd_isna(value) -> bool:
    try:
        return bool(math.isnan(float(value)))
    except (TypeError, ValueError):
        return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", default="multirun/aligndistil_mini")
    parser.add_argument("--profile", default=None, help="recorded in claims.json (mini | full)")
    args = parser.parse_args(argv)
    print(summarize(Path(args.out_dir), args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The sweep report: tidy CSV, per-setting summary, markdown with the Pareto front and hypervolumes, PNG fronts.

    report(sweep_dir) writes, in the sweep dir (or out_dir):
      sweep.csv                 one row per job (collect.collect), failed and missing jobs included
      sweep_summary.csv         one row per setting: mean / std over seeds of every metric, n_seeds, front flags
      sweep.md                  settings table (mean ± std, front marker), hypervolumes with the reference
                                point, failed/missing jobs with their error, links to the plots
      front_<y>_vs_<x>.png      e.g. front_eval-reward_vs_eval-kl.png; and one reward-vs-tax front per `tax/...`
                                metric when the runs report any
The front flags use the per-setting means and stds over the seeds of the ok jobs: a setting is off the front only
when another one dominates it beyond one std (`alignlab.sweep.pareto.NOISE_RULE`); the hypervolumes are those of
the means.
"""
from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from alignlab.sweep.collect import aggregate, collect, default_group_keys, key_columns, sweep_name, swept_keys
from alignlab.sweep.pareto import NOISE_RULE, default_reference, hypervolume_2d, non_dominated_beyond_noise

log = logging.getLogger(__name__)

DEFAULT_X, DEFAULT_Y = "eval/kl", "eval/reward"
TABLE_METRICS = ("eval/reward", "eval/kl", "eval/entropy", "eval/pref_accuracy", "val/loss")
MAX_ERROR_CHARS = 300
# tax metrics where lower is better (alignlab.eval.tax): "..._drop" (pre - policy) and "..._ratio" (policy / pre)
TAX_FRONT_PATTERN = re.compile(r"^tax/.*(_drop|_ratio)$")


def tax_front_metrics(metrics: Sequence[str]) -> list[str]:
    """The `tax/...` metrics that get an automatic reward-vs-tax front (tax minimised): names ending in `_drop`
    or `_ratio` (alignlab.eval.tax: tax/probe_drop, tax/ppl_ratio, tax/lm_eval/<task>/<metric>_drop). Raw
    values (tax/probe_accuracy, higher is better) and the pre-alignment baselines (`..._pre`) are left out."""
    return [m for m in metrics if TAX_FRONT_PATTERN.match(m)]
ON_FRONT, ON_GROUP_FRONT = "★", "☆"


# ---- small formatting helpers -----------------------------------------------------------------------------------
def slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", metric).strip("-")


def front_png_name(x: str, y: str) -> str:
    return f"front_{slug(y)}_vs_{slug(x)}.png"


def fmt_number(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.{digits}g}"


def mean_std(mean, std, digits: int = 4) -> str:
    if mean is None or not math.isfinite(mean):
        return "—"
    if std is None or not math.isfinite(std):
        return fmt_number(mean, digits)
    return f"{fmt_number(mean, digits)} ± {fmt_number(std, 2)}"


def _key_cell(value) -> str:
    """A setting's value in the table: "—" where the setting does not apply (NaN: e.g. TDPO2's alpha on a DPO row)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cell(value) -> str:
    if isinstance(value, float):
        return fmt_number(value)
    text = "—" if value is None else str(value)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-flavoured markdown table (no `tabulate` needed); pipes and newlines in cells are escaped."""
    head = [_cell(h) for h in headers]
    body = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


# ---- fronts and hypervolumes ------------------------------------------------------------------------------------
def front_analysis(summary: pd.DataFrame, x: str, y: str, maximize_x: bool, maximize_y: bool,
                   hue: str | None = "method", reference: Sequence[float] | None = None,
                   margin: float = 0.1) -> dict:
    """Front flags and hypervolumes of a per-setting summary (columns `<x>_mean`, `<y>_mean`).

    A setting is on a front when no other setting (of all, or of its group) dominates it beyond one std over seeds
    (`pareto.NOISE_RULE`; a setting with one seed has no std and counts with a zero margin). The hypervolumes are
    those of the means.

    Returns {"on_front": bool array (front of all settings), "on_group_front": bool array (front of the
    setting's own hue group), "reference": [rx, ry] | None, "reference_source": text,
    "hypervolume": {"all": float, <group>: float, ...}} (empty when no setting has both values).
    """
    maximize = [maximize_x, maximize_y]
    points = np.column_stack([summary[f"{x}_mean"].to_numpy(float), summary[f"{y}_mean"].to_numpy(float)])
    stds = np.column_stack([summary[f"{m}_std"].to_numpy(float) if f"{m}_std" in summary.columns
                            else np.zeros(len(summary)) for m in (x, y)])
    finite = np.isfinite(points).all(axis=1)
    groups = summary[hue].astype(str).to_numpy() if hue and hue in summary.columns else np.array(["all"] * len(summary))
    on_front = non_dominated_beyond_noise(points, stds, maximize)
    on_group_front = np.zeros(len(summary), dtype=bool)
    for name in dict.fromkeys(groups):
        sel = groups == name
        on_group_front[sel] = non_dominated_beyond_noise(points[sel], stds[sel], maximize)
    out = {"on_front": on_front, "on_group_front": on_group_front, "reference": None, "reference_source": "",
           "hypervolume": {}}
    if not finite.any():
        return out
    if reference is None:
        ref = default_reference(points[finite], maximize, margin=margin)
        out["reference_source"] = (f"default: the worst value of each objective over all settings, moved out by "
                                   f"{margin:g} x its range")
    else:
        ref = np.asarray(reference, dtype=float).reshape(2)
        out["reference_source"] = "given"
    out["reference"] = [float(ref[0]), float(ref[1])]
    out["hypervolume"]["all"] = hypervolume_2d(points[finite], ref, maximize)
    for name in dict.fromkeys(groups[finite]):
        sel = finite & (groups == name)
        out["hypervolume"][str(name)] = hypervolume_2d(points[sel], ref, maximize)
    return out


# ---- the markdown -----------------------------------------------------------------------------------------------
def _direction(maximize: bool) -> str:
    return "maximised" if maximize else "minimised"


def render_markdown(df: pd.DataFrame, summary: pd.DataFrame, fronts: list[dict], name: str,
                    sweep_dir: str, shown_keys: Sequence[str], table_metrics: Sequence[str], hue: str | None,
                    fixed: dict) -> str:
    counts = {s: int((df["status"] == s).sum()) for s in ("ok", "failed", "missing")}
    lines = [f"# Sweep {name}", "",
             f"`{sweep_dir}`: {len(df)} jobs, {counts['ok']} ok, {counts['failed']} failed, "
             f"{counts['missing']} missing; {len(summary)} settings.", ""]
    if fixed:
        lines += ["Fixed overrides: " + " ".join(f"`{k}={v}`" for k, v in fixed.items()), ""]
    lines += ["Each row is one setting: mean ± sample std (ddof=1) over the seeds of its ok jobs "
              "(n = number of ok seeds, of the setting's jobs)."]
    main = fronts[0] if fronts else None
    if main is not None and main["analysis"]["reference"] is not None:
        lines += [f"`front`: {ON_FRONT} not dominated beyond noise among all settings, {ON_GROUP_FRONT} only within "
                  f"its {hue or 'group'}, for ({main['x']} {_direction(main['maximize_x'])}, "
                  f"{main['y']} {_direction(main['maximize_y'])}). Dominance beyond noise: {NOISE_RULE}"]
    lines.append("")

    headers = [*shown_keys, "n", *table_metrics]
    if main is not None:
        headers.append("front")
    rows = []
    for i, rec in enumerate(summary.to_dict("records")):
        row = [_key_cell(rec[k]) for k in shown_keys]
        row.append(f"{rec['n_seeds']}/{rec['n_jobs']}")
        row += [mean_std(rec.get(f"{m}_mean"), rec.get(f"{m}_std")) for m in table_metrics]
        if main is not None:
            a = main["analysis"]
            row.append(ON_FRONT if a["on_front"][i] else ON_GROUP_FRONT if a["on_group_front"][i] else "")
        rows.append(row)
    lines += ["## Settings", "", markdown_table(headers, rows), ""]

    for front in fronts:
        a = front["analysis"]
        lines += [f"## Hypervolume: {front['y']} vs {front['x']}", ""]
        if a["reference"] is None:
            lines += [f"No setting has both {front['x']} and {front['y']}: no front.", ""]
            continue
        rx, ry = a["reference"]
        lines += [f"Objectives: {front['x']} {_direction(front['maximize_x'])}, {front['y']} "
                  f"{_direction(front['maximize_y'])}. Reference point ({a['reference_source']}): "
                  f"{front['x']} = {fmt_number(rx, 6)}, {front['y']} = {fmt_number(ry, 6)}. The hypervolume is the "
                  f"area dominated by the front of the setting means and bounded by the reference point "
                  f"(units of {front['x']} x {front['y']}); compare values only under the same reference point.", ""]
        hv_rows = []
        for group, value in a["hypervolume"].items():
            if group == "all" or not (hue and hue in summary.columns):
                sel = np.ones(len(summary), dtype=bool)
            else:
                sel = summary[hue].astype(str).to_numpy() == group
            points = np.isfinite(summary[[f"{front['x']}_mean", f"{front['y']}_mean"]].to_numpy(float)).all(axis=1)
            flags = a["on_front"] if group == "all" else a["on_group_front"]
            hv_rows.append([group, int((sel & points).sum()), int((sel & flags).sum()), fmt_number(value, 6)])
        lines += [markdown_table([hue or "group", "settings", "on its front", "hypervolume"], hv_rows), ""]
        if front.get("png"):
            lines += [f"![{front['y']} vs {front['x']}]({front['png']})", ""]

    bad = df[df["status"] != "ok"]
    lines += ["## Failed and missing jobs", ""]
    if bad.empty:
        lines += [f"None: all {len(df)} jobs ok.", ""]
    else:
        rows = []
        for rec in bad.to_dict("records"):
            error = str(rec.get("error") or "")
            error = error if len(error) <= MAX_ERROR_CHARS else error[:MAX_ERROR_CHARS] + " …"
            rows.append([rec["job"], rec["status"], rec.get("overrides") or "", error])
        lines += [markdown_table(["job", "status", "overrides", "error"], rows), "",
                  "Full messages: the `error` column of sweep.csv; job dirs: its `job_dir` column.", ""]
    return "\n".join(lines)


# ---- the report -------------------------------------------------------------------------------------------------
def report(sweep_dir: str | os.PathLike, x: str = DEFAULT_X, y: str = DEFAULT_Y, maximize_x: bool = False,
           maximize_y: bool = True, reference: Sequence[float] | None = None, by: str | None = "method",
           keys: Sequence[str] | None = None, out_dir: str | os.PathLike | None = None,
           tax_fronts: bool | Sequence[str] = True,
           margin: float = 0.1, wandb: bool = False, wandb_project: str = "alignlab",
           wandb_offline: bool | None = None) -> dict:
    """Collect `sweep_dir`, write sweep.csv, sweep_summary.csv, sweep.md and the front PNGs; return a summary.

    x, y, maximize_x, maximize_y: the main front (default: eval/reward maximised against eval/kl minimised).
    reference: the hypervolume reference point (x, y); default `alignlab.sweep.pareto.default_reference` over all settings.
    by: the column that splits fronts, colours and per-group hypervolumes (default "method"; None: one group).
    keys: the keys that define a setting (aggregation); default `method` + every override key except `seed`.
    tax_fronts: True: also a front of y against each tax metric of `tax_front_metrics` present (tax minimised);
        a list: against these metrics (minimised); False: none.
    wandb: also log the summary as a wandb run (job_type "sweep-summary"; offline unless wandb_offline=False).

    Returns {"sweep_dir", "name", "n_jobs", "n_ok", "n_failed", "n_missing", "csv", "summary_csv", "markdown",
    "front_png" (None when x or y is absent), "plots": {name: path}, "x", "y", "maximize_x", "maximize_y",
    "reference", "hypervolume": {"all": .., <group>: ..}, "front": [setting dicts on the front of all],
    "failed": [{"job", "status", "error"}], "wandb_run_dir" (when wandb)}.
    """
    from alignlab.sweep.plots import has_metric, plot_front

    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir
    df = collect(sweep_dir)  # raises FileNotFoundError before anything is created for a mistyped dir
    if df.empty:
        raise FileNotFoundError(f"no job dirs (subdirs holding .hydra/) under {sweep_dir}")
    if by and by not in df.columns:
        raise KeyError(f"by={by!r} is not a column of the sweep table (columns: {list(df.columns)})")
    out.mkdir(parents=True, exist_ok=True)
    group_keys = list(keys) if keys is not None else default_group_keys(df)
    if by and by not in group_keys and by in df.columns:
        group_keys = [by, *group_keys]
    summary = aggregate(df, by=group_keys)
    hue = by if by and by in summary.columns else None

    varying = swept_keys(df, list(dict.fromkeys([*group_keys, *key_columns(df)])))
    shown_keys = [k for k in group_keys if k in varying or k == hue]
    fixed = {k: df[k].iloc[0] for k in key_columns(df) if k not in varying and k not in shown_keys}
    varying = [k for k in varying if k in group_keys]
    label_keys = [k for k in varying if k != hue]

    front_specs = [(x, y, maximize_x, maximize_y, reference)]
    taxes = [] if not tax_fronts else tax_front_metrics(summary.attrs["metrics"]) if tax_fronts is True \
        else list(tax_fronts)
    front_specs += [(m, y, False, maximize_y, None) for m in taxes if m != x]
    fronts, plots = [], {}
    for fx, fy, mx, my, ref in front_specs:
        if not (has_metric(summary, fx) and has_metric(summary, fy)):
            if fx == x and fy == y:
                log.warning("sweep %s: no setting has both %s and %s: no front", sweep_dir, fx, fy)
                fronts.append({"x": fx, "y": fy, "maximize_x": mx, "maximize_y": my, "png": None,
                               "analysis": {"reference": None, "hypervolume": {},
                                            "on_front": np.zeros(len(summary), bool),
                                            "on_group_front": np.zeros(len(summary), bool)}})
            continue
        analysis = front_analysis(summary, fx, fy, mx, my, hue=hue, reference=ref, margin=margin)
        png = plot_front(summary, fx, fy, maximize_x=mx, maximize_y=my, path=out / front_png_name(fx, fy),
                         hue=hue, label_keys=label_keys, reference=analysis["reference"],
                         title=f"{fy} vs {fx} — sweep {sweep_name(sweep_dir)}")
        plots[f"{fy} vs {fx}"] = png.name
        fronts.append({"x": fx, "y": fy, "maximize_x": mx, "maximize_y": my, "png": png.name, "analysis": analysis})
        suffix = "" if (fx, fy) == (x, y) else f" ({fy} vs {fx})"
        summary[f"front{suffix}"] = analysis["on_front"]
        summary[f"{hue or 'group'}_front{suffix}"] = analysis["on_group_front"]

    table_metrics = list(dict.fromkeys([y, x, *TABLE_METRICS, *taxes]))
    table_metrics = [m for m in table_metrics if has_metric(summary, m)]
    name = sweep_name(sweep_dir)
    markdown = render_markdown(df, summary, fronts, name, str(sweep_dir), shown_keys, table_metrics, hue, fixed)
    _write_csv(df, out / "sweep.csv")
    _write_csv(summary, out / "sweep_summary.csv")
    _write_text(out / "sweep.md", markdown)

    main = fronts[0]
    result = {
        "sweep_dir": str(sweep_dir), "name": name, "n_jobs": len(df),
        **{f"n_{s}": int((df["status"] == s).sum()) for s in ("ok", "failed", "missing")},
        "csv": str(out / "sweep.csv"), "summary_csv": str(out / "sweep_summary.csv"), "markdown": str(out / "sweep.md"),
        "front_png": str(out / main["png"]) if main["png"] else None,
        "plots": {k: str(out / v) for k, v in plots.items()},
        "x": x, "y": y, "maximize_x": maximize_x, "maximize_y": maximize_y,
        "reference": main["analysis"]["reference"], "hypervolume": dict(main["analysis"]["hypervolume"]),
        "front": summary[main["analysis"]["on_front"]][[*shown_keys, f"{x}_mean", f"{y}_mean"]].to_dict("records")
        if main["png"] else [],
        "failed": df[df["status"] != "ok"][["job", "status", "error"]].to_dict("records"),
    }
    if wandb:
        try:
            from alignlab.sweep.wandb_summary import log_summary

            result["wandb_run_dir"] = str(log_summary(
                sweep_dir, summary, result["front_png"], project=wandb_project, group=name.replace("/", "_"),
                offline=True if wandb_offline is None else wandb_offline, hypervolumes=result["hypervolume"],
                reference=dict(zip((x, y), result["reference"] or ())), counts={
                    k: result[k] for k in ("n_jobs", "n_ok", "n_failed", "n_missing")}))
        except Exception as err:  # noqa: BLE001 - the files are written; the wandb copy is a bonus
            log.warning("sweep %s: wandb summary failed: %s: %s", sweep_dir, type(err).__name__, err)
            result["wandb_error"] = f"{type(err).__name__}: {err}"
    return result

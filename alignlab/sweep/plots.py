"""Pareto-front plots (PNG, matplotlib's Agg canvas: no display, no pyplot state, safe in any process).

`plot_front` takes either the per-setting summary of `collect.aggregate` (columns `<metric>_mean` and
`<metric>_std`: error bars from the std over seeds) or the per-job table of `collect.collect` (columns
`<metric>`, ok jobs only, no error bars).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from alignlab.sweep.pareto import frontier_line, non_dominated


def metric_values(df: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, std or None) of `metric` in a summary (`<metric>_mean`) or per-job (`<metric>`) table."""
    if f"{metric}_mean" in df.columns:
        std = df[f"{metric}_std"].to_numpy(float) if f"{metric}_std" in df.columns else None
        return df[f"{metric}_mean"].to_numpy(float), std
    if metric in df.columns:
        return df[metric].to_numpy(float), None
    raise KeyError(f"metric {metric!r} is not in the table (columns: {list(df.columns)})")


def has_metric(df: pd.DataFrame, metric: str) -> bool:
    try:
        values, _ = metric_values(df, metric)
    except KeyError:
        return False
    return bool(np.isfinite(values).any())


def direction(maximize: bool) -> str:
    return "higher is better" if maximize else "lower is better"


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def point_labels(df: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """"beta=0.1 alpha=0.5"-style labels from the given (swept, non-hue) keys."""
    if not keys:
        return [""] * len(df)
    return [" ".join(f"{_short(k)}={_fmt(v)}" for k, v in zip(keys, row))
            for row in df[list(keys)].itertuples(index=False, name=None)]


def plot_front(df: pd.DataFrame, x: str, y: str, maximize_x: bool = False, maximize_y: bool = True,
               path: str | os.PathLike = "front.png", hue: str | None = "method",
               label_keys: Sequence[str] | None = None, reference: Sequence[float] | None = None,
               title: str | None = None, steps: bool = False) -> Path:
    """Scatter of y against x, one colour per `hue` value, each hue's own front as a line, the points on the
    front of all points together circled in black, seed std as error bars, the reference point (if given) as a
    grey cross. label_keys: keys written next to each point (e.g. ["method.beta"]). Returns the PNG path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if "status" in df.columns and f"{x}_mean" not in df.columns:
        df = df[df["status"] == "ok"]
    xs, xerr = metric_values(df, x)
    ys, yerr = metric_values(df, y)
    finite = np.isfinite(xs) & np.isfinite(ys)
    points = np.column_stack([xs, ys])
    global_front = non_dominated(points, [maximize_x, maximize_y])
    labels = point_labels(df, [k for k in (label_keys or []) if k in df.columns and k != hue])
    groups = (df[hue].astype(str).to_numpy() if hue and hue in df.columns else np.array(["all"] * len(df)))
    order = list(dict.fromkeys(groups[finite]))

    fig = Figure(figsize=(7.0, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = [f"C{i % 10}" for i in range(len(order))]
    for name, colour in zip(order, colours):
        sel = finite & (groups == name)
        ex = None if xerr is None else np.nan_to_num(xerr[sel], nan=0.0)
        ey = None if yerr is None else np.nan_to_num(yerr[sel], nan=0.0)
        ax.errorbar(xs[sel], ys[sel], xerr=ex, yerr=ey, fmt="o", color=colour, ms=5, alpha=0.85, capsize=2,
                    elinewidth=0.8, label=str(name), zorder=3)
        line = frontier_line(points[sel], [maximize_x, maximize_y], steps=steps)
        if len(line) > 1:
            ax.plot(line[:, 0], line[:, 1], "-", color=colour, lw=1.4, alpha=0.9, zorder=2)
        for i in np.flatnonzero(sel):
            if labels[i]:
                ax.annotate(labels[i], (xs[i], ys[i]), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=colour)
    if global_front.any():
        ax.scatter(xs[global_front], ys[global_front], s=140, facecolors="none", edgecolors="black",
                   linewidths=1.3, label="non-dominated (all)", zorder=4)
    if reference is not None:
        ax.scatter([reference[0]], [reference[1]], marker="x", color="grey", s=40, label="reference point",
                   zorder=1)
    ax.set_xlabel(f"{x} ({direction(maximize_x)})")
    ax.set_ylabel(f"{y} ({direction(maximize_y)})")
    ax.set_title(title or f"{y} vs {x}")
    ax.grid(True, alpha=0.3)
    if order or global_front.any():
        ax.legend(fontsize=8, loc="best")
    if not finite.any():
        ax.text(0.5, 0.5, f"no finite ({x}, {y}) values", transform=ax.transAxes, ha="center", va="center")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # atomic: jobs of a parallel sweep may race
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def plot_reward_kl(df: pd.DataFrame, path, reward: str = "eval/reward", kl: str = "eval/kl", **kwargs) -> Path:
    """The reward-vs-KL front (reward maximised, KL minimised)."""
    return plot_front(df, kl, reward, maximize_x=False, maximize_y=True, path=path, **kwargs)


def plot_reward_tax(df: pd.DataFrame, path, tax: str, reward: str = "eval/reward", **kwargs) -> Path:
    """The reward-vs-alignment-tax front (reward maximised, tax, a capability drop, minimised)."""
    return plot_front(df, tax, reward, maximize_x=False, maximize_y=True, path=path, **kwargs)


def is_png(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


__all__ = ["plot_front", "plot_reward_kl", "plot_reward_tax", "metric_values", "has_metric", "is_png",
           "point_labels"]

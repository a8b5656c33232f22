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

from alignlab.sweep.pareto import frontier_line, non_dominated, non_dominated_beyond_noise


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
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def _present(value) -> bool:
    """A setting the row has: not None, not NaN (a column another method's rows need, e.g. TDPO2's alpha for a
    DPO row), not an empty string."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return False
    try:
        return not bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or other container: present
        return True


def point_labels(df: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """"beta=0.1 alpha=0.5"-style labels from the given (swept, non-hue) keys, each showing only the settings its
    row has: a DPO row in a sweep that also holds TDPO2 reads "beta=0.1", not "beta=0.1 alpha=nan"."""
    if not keys:
        return [""] * len(df)
    return [" ".join(f"{_short(k)}={_fmt(v)}" for k, v in zip(keys, row) if _present(v))
            for row in df[list(keys)].itertuples(index=False, name=None)]


# ---- labels that do not overlap ---------------------------------------------------------------------------------
def _directions() -> list[tuple[float, float]]:
    """Unit directions tried for a label around its point: the 4 diagonals first (clear of the error bars), then
    the axes, then 8 in between."""
    angles = [45, 135, 315, 225, 0, 180, 90, 270, 22.5, 157.5, 337.5, 202.5, 67.5, 112.5, 292.5, 247.5]
    return [(float(np.cos(np.radians(a))), float(np.sin(np.radians(a)))) for a in angles]


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Overlap area of two boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0.0) * max(h, 0.0)


def place_labels(anchors, sizes, obstacles=(), bounds=None, gap: float = 4.0, step: float = 10.0,
                 rings: int = 8) -> list[tuple[float, float]]:
    """Where to put each label so that no two overlap: a greedy search in display units (pixels), pure geometry.

    anchors: (n, 2) positions of the points; sizes: (n, 2) width and height of each label; obstacles: boxes
    (x0, y0, x1, y1) labels should avoid (the markers); bounds: the box labels must stay inside (the axes), or None.
    Labels are placed in order; each takes the first candidate position, ring by ring (the box's nearest edge at
    gap, gap + step, ... from its point) and direction by direction (`_directions`), that overlaps neither an
    obstacle nor a label placed before it and lies inside the bounds; if there is none, the candidate with the
    least overlap. Returns the offset of each label's centre from its point.
    """
    anchors = np.asarray(anchors, dtype=float).reshape(-1, 2)
    sizes = np.asarray(sizes, dtype=float).reshape(-1, 2)
    placed: list[tuple[float, float, float, float]] = []
    blocked = [tuple(map(float, b)) for b in obstacles]
    offsets = []
    for (x, y), (w, h) in zip(anchors, sizes):
        best, best_cost = None, np.inf
        for ring in range(rings):
            r = gap + ring * step
            for ux, uy in _directions():
                dx, dy = ux * (r + w / 2), uy * (r + h / 2)
                box = (x + dx - w / 2, y + dy - h / 2, x + dx + w / 2, y + dy + h / 2)
                cost = sum(_overlap(box, b) for b in placed) + sum(_overlap(box, b) for b in blocked)
                if bounds is not None:
                    cost += 4.0 * (w * h - _overlap(box, bounds))  # the part outside the axes, weighed up
                cost += 1e-6 * r  # among equal overlaps, the nearer
                if cost < best_cost:
                    best, best_cost = (dx, dy, box), cost
                if cost < 1e-3:
                    break
            if best_cost < 1e-3:
                break
        dx, dy, box = best
        placed.append(box)
        offsets.append((float(dx), float(dy)))
    return offsets


def label_boxes(ax) -> list:
    """Display-space boxes of the point labels of an axes drawn by `plot_front` (for checking overlaps)."""
    from matplotlib.text import Text

    renderer = ax.figure.canvas.get_renderer()
    boxes = []
    for t in ax.texts:
        if getattr(t, "_alignlab_label", False):
            t.update_positions(renderer)  # then Text's own extent: an Annotation's includes its leader line
            boxes.append(Text.get_window_extent(t, renderer))
    return boxes


def _segment_obstacles(ax, spacing: float = 5.0, half: float = 1.5) -> list[tuple[float, float, float, float]]:
    """Small boxes every `spacing` pixels along every line of the axes (the fronts, and the error bars, which
    matplotlib draws as line collections), so that labels keep clear of them."""
    from matplotlib.collections import LineCollection

    polylines = [line.get_xydata() for line in ax.lines]
    for coll in ax.collections:
        if isinstance(coll, LineCollection):
            polylines += [np.asarray(seg, dtype=float) for seg in coll.get_segments()]
    boxes = []
    for poly in polylines:
        poly = np.asarray(poly, dtype=float)
        poly = poly[np.isfinite(poly).all(axis=1)] if poly.ndim == 2 and len(poly) else np.zeros((0, 2))
        if len(poly) == 0:
            continue
        pts = ax.transData.transform(poly)
        for a, b in zip(pts[:-1], pts[1:]) if len(pts) > 1 else [(pts[0], pts[0])]:
            n = max(int(np.hypot(*(b - a)) // spacing), 1)
            for t in np.linspace(0.0, 1.0, n + 1):
                px, py = a + t * (b - a)
                boxes.append((px - half, py - half, px + half, py + half))
    return boxes


def _draw_labels(ax, xs, ys, labels, colours, marker_px: float = 6.0) -> None:
    """Annotate the points with `labels` (empty ones skipped) at positions from `place_labels`, with a thin leader
    line when a label had to move away from its point."""
    fig = ax.figure
    fig.canvas.draw()  # the layout is final: display coordinates and text sizes are what the PNG will show
    renderer = fig.canvas.get_renderer()
    todo = [i for i, text in enumerate(labels) if text and np.isfinite(xs[i]) and np.isfinite(ys[i])]
    if not todo:
        return
    anchors = ax.transData.transform(np.column_stack([xs[todo], ys[todo]]))
    sizes = []
    for i in todo:
        probe = ax.text(0, 0, labels[i], fontsize=7)
        bb = probe.get_window_extent(renderer)
        sizes.append((bb.width + 2, bb.height + 2))
        probe.remove()
    all_points = ax.transData.transform(np.column_stack([xs, ys])[np.isfinite(xs) & np.isfinite(ys)])
    obstacles = [(px - marker_px, py - marker_px, px + marker_px, py + marker_px) for px, py in all_points]
    obstacles += _segment_obstacles(ax)
    order = np.lexsort((anchors[:, 1], anchors[:, 0]))  # left to right
    bbox = ax.get_window_extent(renderer)
    offsets = place_labels(anchors[order], np.asarray(sizes)[order], obstacles,
                           bounds=(bbox.x0, bbox.y0, bbox.x1, bbox.y1))
    dpi_scale = 72.0 / fig.dpi  # offset points = pixels * 72 / dpi
    for k, (dx, dy) in zip(order, offsets):
        i = todo[k]
        far = np.hypot(dx, dy) > 30.0
        text = ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx * dpi_scale, dy * dpi_scale),
                           textcoords="offset points", ha="center", va="center", fontsize=7, color=colours[i],
                           arrowprops={"arrowstyle": "-", "color": colours[i], "lw": 0.5, "alpha": 0.6}
                           if far else None, zorder=5)
        text._alignlab_label = True


def plot_front(df: pd.DataFrame, x: str, y: str, maximize_x: bool = False, maximize_y: bool = True,
               path: str | os.PathLike = "front.png", hue: str | None = "method",
               label_keys: Sequence[str] | None = None, reference: Sequence[float] | None = None,
               title: str | None = None, steps: bool = False, labels: Sequence[str] | None = None,
               note: str | None = None) -> Path:
    """Draw `front_figure` (same arguments) and write it to `path` as a PNG; returns the path."""
    fig = front_figure(df, x, y, maximize_x, maximize_y, hue=hue, label_keys=label_keys, reference=reference,
                       title=title, steps=steps, labels=labels, note=note)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # atomic: jobs of a parallel sweep may race
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def front_figure(df: pd.DataFrame, x: str, y: str, maximize_x: bool = False, maximize_y: bool = True,
                 hue: str | None = "method", label_keys: Sequence[str] | None = None,
                 reference: Sequence[float] | None = None, title: str | None = None, steps: bool = False,
                 labels: Sequence[str] | None = None, note: str | None = None):
    """Each setting as its mean with error bars (the std over seeds, on both axes, when the table is a summary of
    `collect.aggregate`), one colour per `hue` value, each hue's front through its means as a line, the settings
    that no other setting dominates beyond one std (`pareto.NOISE_RULE`; by the means alone for a per-job table)
    circled in black and those dominated beyond one std drawn faded, the reference point (if given) as a grey
    cross. Labels: `labels` (one string per row), else the values of `label_keys` the row has (e.g.
    "beta=0.1 alpha=0.5"; NaN settings left out), placed so that they do not overlap (`place_labels`). The legend
    sits right of the axes; `note` is printed under them. Returns the matplotlib Figure (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if "status" in df.columns and f"{x}_mean" not in df.columns:
        df = df[df["status"] == "ok"]
    xs, xerr = metric_values(df, x)
    ys, yerr = metric_values(df, y)
    finite = np.isfinite(xs) & np.isfinite(ys)
    points = np.column_stack([xs, ys])
    maximize = [maximize_x, maximize_y]
    if xerr is not None or yerr is not None:
        stds = np.column_stack([xerr if xerr is not None else np.zeros_like(xs),
                                yerr if yerr is not None else np.zeros_like(ys)])
        kept = non_dominated_beyond_noise(points, stds, maximize)
        kept_label = "not dominated beyond 1 std (all)"
    else:
        kept = non_dominated(points, maximize)
        kept_label = "non-dominated (all)"
    if labels is None:
        labels = point_labels(df, [k for k in (label_keys or []) if k in df.columns and k != hue])
    labels = list(labels)
    groups = (df[hue].astype(str).to_numpy() if hue and hue in df.columns else np.array(["all"] * len(df)))
    order = list(dict.fromkeys(groups[finite]))

    fig = Figure(figsize=(8.6, 5.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colour_of = {name: f"C{i % 10}" for i, name in enumerate(order)}
    colours = [colour_of.get(g, "grey") for g in groups]
    for name in order:
        colour = colour_of[name]
        sel = finite & (groups == name)
        for faded in (False, True):
            part = sel & (kept != faded)
            if not part.any():
                continue
            ex = None if xerr is None else np.nan_to_num(xerr[part], nan=0.0)
            ey = None if yerr is None else np.nan_to_num(yerr[part], nan=0.0)
            ax.errorbar(xs[part], ys[part], xerr=ex, yerr=ey, fmt="o", color=colour, ms=5,
                        alpha=0.3 if faded else 0.9, capsize=2, elinewidth=0.8,
                        label=None if faded and (sel & kept).any() else str(name), zorder=3)
        line = frontier_line(points[sel], maximize, steps=steps)
        if len(line) > 1:
            ax.plot(line[:, 0], line[:, 1], "-", color=colour, lw=1.4, alpha=0.9, zorder=2)
    if (kept & finite).any():
        ax.scatter(xs[kept & finite], ys[kept & finite], s=140, facecolors="none", edgecolors="black",
                   linewidths=1.2, label=kept_label, zorder=4)
    if reference is not None:
        ax.scatter([reference[0]], [reference[1]], marker="x", color="grey", s=40, label="reference point",
                   zorder=1)
    ax.set_xlabel(f"{x} ({direction(maximize_x)})")
    ax.set_ylabel(f"{y} ({direction(maximize_y)})")
    ax.set_title(title or f"{y} vs {x}", fontsize=10)
    ax.grid(True, alpha=0.3)
    if order or kept.any():
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if not finite.any():
        ax.text(0.5, 0.5, f"no finite ({x}, {y}) values", transform=ax.transAxes, ha="center", va="center")
    ax.margins(x=0.12, y=0.12)  # room for the labels of the outermost points
    footer = "points: mean over seeds; bars: ± 1 std; lines: each group's front of the means"
    fig.text(0.01, 0.01, footer + (f"\n{note}" if note else ""), fontsize=7, color="dimgrey", va="bottom")
    fig.tight_layout(rect=(0, 0.03 if not note else 0.06, 1, 1))
    _draw_labels(ax, xs, ys, labels, colours)
    return fig


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
           "point_labels", "place_labels", "label_boxes", "front_figure"]

"""Pareto fronts and 2-D hypervolume: pure functions on numpy arrays.

Conventions. `points` is an (n, d) array, one row per point, one column per objective. `maximize` says, per
objective, whether larger is better (a single bool applies to every objective). Point a dominates point b when a
is at least as good as b in every objective and strictly better in one. Rows holding a NaN or an infinity are
never on the front and never dominate anything. Identical points do not dominate each other: both stay on the
front.

Hypervolume orientation. `hypervolume_2d` measures the area of the region that is dominated by the front and
itself dominates the reference point, i.e. the set of z with  ref <= z <= p  (objective-wise, in the "better"
direction) for some front point p. The reference point must therefore be *worse* than the points in every
objective: below them for a maximised objective (reward), above them for a minimised one (KL, tax). Points that
are not strictly better than the reference in both objectives add nothing. Units are the product of the two
objectives' units (e.g. reward x nats); only compare hypervolumes computed with the same reference point.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _as_points(points) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.ndim == 1:
        arr = arr.reshape(0, 0) if arr.size == 0 else arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(f"points must be an (n, d) array, got shape {arr.shape}")
    return arr


def _signs(maximize: bool | Sequence[bool], d: int) -> np.ndarray:
    flags = [bool(maximize)] * d if np.ndim(maximize) == 0 else [bool(m) for m in maximize]
    if len(flags) != d:
        raise ValueError(f"maximize has {len(flags)} entries for {d} objectives")
    return np.where(flags, 1.0, -1.0)


def oriented(points, maximize: bool | Sequence[bool]) -> np.ndarray:
    """The points with minimised objectives negated, so that larger is better in every column."""
    arr = _as_points(points)
    return arr * _signs(maximize, arr.shape[1]) if arr.size else arr


def non_dominated(points, maximize: bool | Sequence[bool]) -> np.ndarray:
    """Boolean mask of the points that no other point dominates (any number of objectives). O(n^2 d)."""
    arr = _as_points(points)
    n = arr.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    g = oriented(arr, maximize)
    finite = np.isfinite(g).all(axis=1)
    mask = finite.copy()
    candidates = g[finite]
    for i in np.flatnonzero(finite):
        at_least = (candidates >= g[i]).all(axis=1)
        better = (candidates > g[i]).any(axis=1)
        if (at_least & better).any():
            mask[i] = False
    return mask


def frontier(points, maximize: bool | Sequence[bool]) -> np.ndarray:
    """Indices of the non-dominated points of a 2-D set, sorted by the first objective (ascending value)."""
    arr = _as_points(points)
    if arr.size and arr.shape[1] != 2:
        raise ValueError("frontier() is for 2 objectives")
    idx = np.flatnonzero(non_dominated(arr, maximize))
    return idx[np.lexsort((arr[idx, 1], arr[idx, 0]))] if idx.size else idx


def frontier_line(points, maximize: bool | Sequence[bool], steps: bool = False) -> np.ndarray:
    """(k, 2) vertices of the front for plotting, sorted by x.

    steps=False joins the front points; steps=True gives the staircase that bounds the dominated region
    (the boundary whose enclosed area against a reference point is the hypervolume).
    """
    arr = _as_points(points)
    front = arr[frontier(arr, maximize)] if arr.size else np.zeros((0, 2))
    if not steps or len(front) < 2:
        return front
    sx, sy = _signs(maximize, 2)
    # Along increasing x, y improves iff the x objective gets worse (front trade-off); the corner between two
    # consecutive points takes, in each coordinate, the worse of the two values.
    vertices = [front[0]]
    for a, b in zip(front[:-1], front[1:]):
        corner = (min(a[0] * sx, b[0] * sx) * sx, min(a[1] * sy, b[1] * sy) * sy)
        vertices += [np.array(corner), b]
    return np.array(vertices)


def default_reference(points, maximize: bool | Sequence[bool], margin: float = 0.1) -> np.ndarray:
    """A reference point for the hypervolume: the worst value of each objective over all (finite) points,
    pushed further out by `margin` times that objective's range (max - min; 1.0 when all values are equal).

    Worst = minimum for a maximised objective, maximum for a minimised one. Without the margin (margin=0) the
    extreme points of the front (e.g. the one with the highest reward, which usually has the highest KL) would
    add zero area. Compute it once over all methods' points so that per-method hypervolumes are comparable.
    """
    arr = _as_points(points)
    arr = arr[np.isfinite(arr).all(axis=1)] if arr.size else arr
    if arr.size == 0:
        raise ValueError("no finite points to choose a reference point from")
    signs = _signs(maximize, arr.shape[1])
    worst = np.where(signs > 0, arr.min(axis=0), arr.max(axis=0))
    span = arr.max(axis=0) - arr.min(axis=0)
    span = np.where(span > 0, span, 1.0)
    return worst - signs * margin * span


def hypervolume_2d(points, reference, maximize: bool | Sequence[bool]) -> float:
    """Area dominated by the 2-D front of `points` and bounded by `reference` (see the module docstring).

    Example (x minimised, y maximised; points as (x, y)): (1, 1), (2, 3), (3, 2), reference (4, 0). (3, 2) is
    dominated by (2, 3). The dominated region is the union of [1, 4] x [0, 1] (area 3) and [2, 4] x [0, 3]
    (area 6), which overlap on [2, 4] x [0, 1] (area 2): 3 + 6 - 2 = 7.
    """
    arr = _as_points(points)
    if arr.size == 0:
        return 0.0
    if arr.shape[1] != 2:
        raise ValueError("hypervolume_2d() is for 2 objectives")
    signs = _signs(maximize, 2)
    ref = np.asarray(reference, dtype=float).reshape(2) * signs
    if not np.isfinite(ref).all():
        raise ValueError(f"reference point must be finite, got {reference}")
    g = oriented(arr, maximize)
    g = g[np.isfinite(g).all(axis=1)]
    g = g[(g > ref).all(axis=1)]  # points not strictly better than the reference in both objectives add nothing
    if len(g) == 0:
        return 0.0
    g = g[non_dominated(g, True)]
    g = g[np.argsort(-g[:, 0], kind="stable")]  # best first objective first: then the second one rises
    area, prev_y = 0.0, ref[1]
    for x, y in g:
        if y > prev_y:
            area += (x - ref[0]) * (y - prev_y)
            prev_y = y
    return float(area)

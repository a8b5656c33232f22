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

Settings measured over several seeds (mean and std per objective) are compared with `dominates_beyond_noise`:
a setting is called dominated only when another one beats it by more than one standard deviation (`NOISE_RULE`),
and two groups' fronts with `compare_fronts` (`FRONT_RULE`).
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


# ---- dominance beyond noise: settings measured over seeds (mean ± std) ---------------------------------------------
NOISE_RULE = ("B dominates A beyond noise when, with the margin m_k = max(std_A,k, std_B,k) per objective k (sample "
              "stds over seeds), B's mean is better than A's by more than m_k in at least one objective and worse "
              "than A's by at most m_k in every objective; a setting is dominated only when some other setting "
              "dominates it beyond noise.")


def _margins(a_std, b_std, d: int) -> np.ndarray:
    sa = np.broadcast_to(np.nan_to_num(np.asarray(a_std, dtype=float), nan=0.0), (d,))
    sb = np.broadcast_to(np.nan_to_num(np.asarray(b_std, dtype=float), nan=0.0), (d,))
    return np.maximum(np.abs(sa), np.abs(sb))


def dominates_beyond_noise(b_mean, b_std, a_mean, a_std, maximize: bool | Sequence[bool]) -> bool:
    """Whether setting B dominates setting A beyond one standard deviation (`NOISE_RULE`):

        m_k = max(std_A,k, std_B,k)                     (per objective k; a NaN std, i.e. one seed, counts as 0)
        B dominates A  iff  better_k(B, A) > m_k for some k  and  better_k(B, A) >= -m_k for every k

    where better_k(B, A) is B's mean minus A's mean in objective k, negated for a minimised objective. With all
    stds zero this is the ordinary Pareto dominance of the means.

    Why this margin. A difference smaller than the seed-to-seed spread of either setting could come from a change
    of seed alone, so only a gap larger than the larger of the two stds counts; visually, each mean lies outside
    the other's one-std error bar. Within the margin the two count as tied, so a setting clearly better in one
    objective and tied in the other still dominates. With three seeds the std is itself a rough estimate: the
    rule is deliberately simple and conservative rather than a test that would need normality and more seeds.
    The relation is irreflexive and antisymmetric, but not transitive. Non-finite means never dominate and are
    never dominated.

    Example (x = KL minimised, y = reward maximised): A = (2.0 ± 0.3, 0.60 ± 0.02), B = (2.1 ± 0.2, 0.70 ± 0.03):
    margins (0.3, 0.03); B's KL is worse by 0.1 <= 0.3 (tied) and its reward better by 0.10 > 0.03: B dominates
    A. With B's reward 0.62 instead (better by 0.02 <= 0.03) neither dominates the other.
    """
    a = np.asarray(a_mean, dtype=float).reshape(-1)
    b = np.asarray(b_mean, dtype=float).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"a_mean {a.shape} and b_mean {b.shape} must have the same number of objectives")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return False
    signs = _signs(maximize, a.size)
    gain = (b - a) * signs
    m = _margins(a_std, b_std, a.size)
    return bool((gain > m).any() and (gain >= -m).all())


def dominated_beyond_noise(means, stds, maximize: bool | Sequence[bool]) -> np.ndarray:
    """(n, n) boolean matrix D with D[i, j] = setting i dominates setting j beyond noise (`dominates_beyond_noise`).
    `means` and `stds` are (n, d) arrays (stds may hold NaN: one seed)."""
    mu, sd = _as_points(means), _as_points(stds) if np.size(stds) else np.zeros_like(_as_points(means))
    if sd.shape != mu.shape:
        raise ValueError(f"stds {sd.shape} must have the shape of means {mu.shape}")
    n = mu.shape[0]
    out = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(n):
            if i != j:
                out[i, j] = dominates_beyond_noise(mu[i], sd[i], mu[j], sd[j], maximize)
    return out


def non_dominated_beyond_noise(means, stds, maximize: bool | Sequence[bool]) -> np.ndarray:
    """Mask of the finite settings that no other setting dominates beyond noise (`NOISE_RULE`).

    It differs from the front of the means (`non_dominated`) both ways: a setting behind the means' front by less
    than the seeds' spread is kept, and a setting on the means' front whose only advantage is within noise while it
    is worse beyond noise in another objective (e.g. +0.01 reward, within the std, for 2 nats more KL) is dropped."""
    mu = _as_points(means)
    if mu.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    matrix = dominated_beyond_noise(mu, stds, maximize)
    return np.isfinite(mu).all(axis=1) & ~matrix.any(axis=0)


FRONT_RULE = ("Each group's front is its settings that no other setting of the same group dominates beyond noise. "
              "Front A is above front B when some setting of A's front dominates some setting of B's front beyond "
              "noise and no setting of B's front dominates one of A's; below in the mirrored case; 'crossing' "
              "when both happen; 'tied' when neither does (the fronts agree within one std, or cover different "
              "ranges).")


def compare_fronts(a_means, a_stds, b_means, b_stds, maximize: bool | Sequence[bool]) -> dict:
    """Two groups of settings (e.g. HMA's and averaging's) compared by `dominates_beyond_noise` (`FRONT_RULE`).

    Only each group's own front (`non_dominated_beyond_noise` within the group) takes part: a group is not held
    back by a poor setting that its own better settings already dominate. Returns {"outcome": "above" | "below" |
    "crossing" | "tied" | "empty", "a_over_b": [(i, j), ...] (setting i of A dominates setting j of B beyond
    noise; indices into the given arrays), "b_over_a": [(j, i), ...], "a_front": [i, ...], "b_front": [j, ...]}.
    "empty": a group has no finite setting.
    """
    am, bm = _as_points(a_means), _as_points(b_means)
    a_sd = _as_points(a_stds) if np.size(a_stds) else np.zeros_like(am)
    b_sd = _as_points(b_stds) if np.size(b_stds) else np.zeros_like(bm)
    a_front = np.flatnonzero(non_dominated_beyond_noise(am, a_sd, maximize)) if am.shape[0] else np.zeros(0, int)
    b_front = np.flatnonzero(non_dominated_beyond_noise(bm, b_sd, maximize)) if bm.shape[0] else np.zeros(0, int)
    out = {"a_front": a_front.tolist(), "b_front": b_front.tolist(), "a_over_b": [], "b_over_a": []}
    if not (a_front.size and b_front.size):
        return {"outcome": "empty", **out}
    out["a_over_b"] = [(int(i), int(j)) for i in a_front for j in b_front
                       if dominates_beyond_noise(am[i], a_sd[i], bm[j], b_sd[j], maximize)]
    out["b_over_a"] = [(int(j), int(i)) for j in b_front for i in a_front
                       if dominates_beyond_noise(bm[j], b_sd[j], am[i], a_sd[i], maximize)]
    a_wins, b_wins = bool(out["a_over_b"]), bool(out["b_over_a"])
    outcome = "crossing" if a_wins and b_wins else "above" if a_wins else "below" if b_wins else "tied"
    return {"outcome": outcome, **out}

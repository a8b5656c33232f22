"""Front plots: point labels show only the settings a point has, and never overlap (checked on the drawn figure)."""
import itertools
import os

import numpy as np
import pandas as pd

from alignlab.sweep.plots import front_figure, is_png, label_boxes, place_labels, plot_front, point_labels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(REPO, ".cache", "test", "mpl"))


def frontier_table(seed: int = 0) -> pd.DataFrame:
    """An IMDb-frontier-like summary: DPO and TDPO1 rows have no alpha (NaN), TDPO2 rows have one; 18 settings
    crammed into a small region, as the miniature's fronts are."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in ("dpo", "tdpo1", "tdpo2"):
        for beta in (0.05, 0.1, 0.5):
            for alpha in ((0.1, 0.3, 0.5, 0.7) if method == "tdpo2" else (np.nan,)):
                rows.append({"method": method, "method.beta": beta, "method.alpha": alpha,
                             "eval/kl_mean": rng.uniform(5, 7), "eval/kl_std": 0.3,
                             "eval/reward_mean": rng.uniform(0.80, 0.85), "eval/reward_std": 0.01})
    return pd.DataFrame(rows)


def test_labels_show_only_the_settings_a_point_has():
    df = frontier_table()
    labels = point_labels(df, ["method.beta", "method.alpha"])
    assert labels[0] == "beta=0.05" and "nan" not in " ".join(labels)
    assert labels[df.index[(df["method"] == "tdpo2") & (df["method.beta"] == 0.1)][1]] == "beta=0.1 alpha=0.3"
    # None and empty values are left out too; a row with nothing has an empty label
    odd = pd.DataFrame({"a": [None, 1.0, ""], "b": [np.nan, "x", 2]})
    assert point_labels(odd, ["a", "b"]) == ["", "a=1 b=x", "b=2"]


def test_place_labels_keeps_boxes_apart():
    # five 40x10 labels for points 3 px apart: the greedy search must spread them out
    anchors = np.array([[100.0, 100.0 + 3 * i] for i in range(5)])
    offsets = place_labels(anchors, np.tile([40.0, 10.0], (5, 1)), bounds=(0, 0, 400, 400))
    boxes = [(x + dx - 20, y + dy - 5, x + dx + 20, y + dy + 5) for (x, y), (dx, dy) in zip(anchors, offsets)]
    for a, b in itertools.combinations(boxes, 2):
        assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)
    # an obstacle right of the first point pushes its label elsewhere
    (dx, dy), = place_labels([[50.0, 50.0]], [[20.0, 8.0]], obstacles=[(50, 30, 120, 70)])
    assert dx < 0


def test_drawn_labels_do_not_overlap_and_carry_no_nan(tmp_path):
    df = frontier_table()
    fig = front_figure(df, "eval/kl", "eval/reward", label_keys=["method.beta", "method.alpha"])
    ax = fig.axes[0]
    boxes = label_boxes(ax)
    texts = [t.get_text() for t in ax.texts if getattr(t, "_alignlab_label", False)]
    assert len(boxes) == len(df) and not any("nan" in t for t in texts)
    overlapping = [(texts[i], texts[j]) for i, j in itertools.combinations(range(len(boxes)), 2)
                   if boxes[i].overlaps(boxes[j])]
    assert overlapping == []
    axes_box = ax.get_window_extent(fig.canvas.get_renderer())
    assert all(b.x0 >= axes_box.x0 - 1 and b.x1 <= axes_box.x1 + 1 for b in boxes)
    path = plot_front(df, "eval/kl", "eval/reward", label_keys=["method.beta", "method.alpha"],
                      path=tmp_path / "front.png", note="a note")
    assert is_png(path)


def test_error_bars_on_both_axes_and_faded_dominated_points():
    df = pd.DataFrame({"method": ["a", "b"], "eval/kl_mean": [1.0, 1.0], "eval/kl_std": [0.1, 0.2],
                       "eval/reward_mean": [0.5, 0.8], "eval/reward_std": [0.02, 0.03]})
    ax = front_figure(df, "eval/kl", "eval/reward").axes[0]
    containers = ax.containers  # one ErrorbarContainer per (group, faded or not)
    assert all(c.has_xerr and c.has_yerr for c in containers)
    alphas = sorted(c.lines[0].get_alpha() for c in containers)
    assert alphas == [0.3, 0.9]  # a (0.5 ± 0.03 at equal KL) is dominated beyond one std by b: faded

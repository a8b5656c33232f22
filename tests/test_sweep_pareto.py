"""alignlab.sweep.pareto on hand-made points (expected values worked out by hand in the comments)."""
import numpy as np
import pytest

from alignlab.sweep.pareto import (default_reference, frontier, frontier_line, hypervolume_2d, non_dominated,
                                   oriented)


def test_non_dominated_2d_maximise_both():
    pts = np.array([[1, 1], [2, 3], [3, 2], [2, 2], [0, 4], [3, 2]])
    # (1,1) < (2,2); (2,2) < (2,3); (2,3), (3,2), (0,4) trade off; the two (3,2) are equal: both stay
    assert non_dominated(pts, [True, True]).tolist() == [False, True, True, False, True, True]
    assert non_dominated(pts, True).tolist() == [False, True, True, False, True, True]


def test_non_dominated_minimise_x_maximise_y_like_kl_and_reward():
    # (kl, reward): (1, .5), (2, .6), (3, .55), (4, .7), (4, .65)
    pts = np.array([[1, .5], [2, .6], [3, .55], [4, .7], [4, .65]])
    # (3, .55) is worse than (2, .6) in both; (4, .65) is worse than (4, .7) in reward, equal in kl
    assert non_dominated(pts, [False, True]).tolist() == [True, True, False, True, False]
    # minimising both: only (1, .5) survives (smallest kl and smallest reward)
    assert non_dominated(pts, [False, False]).tolist() == [True, False, False, False, False]


def test_non_dominated_general_d_nan_and_empty():
    pts = np.array([[1, 2, 3], [1, 2, 2], [0, 5, 0], [1, 2, 3], [np.nan, 9, 9], [2, 1, 1]])
    # maximise all 3: (1,2,2) < (1,2,3); the duplicates (1,2,3) stay; NaN row is off the front and dominates nothing
    assert non_dominated(pts, [True] * 3).tolist() == [True, False, True, True, False, True]
    assert non_dominated(np.zeros((0, 2)), [True, True]).tolist() == []
    with pytest.raises(ValueError, match="maximize"):
        non_dominated(pts, [True, True])


def test_frontier_sorted_and_staircase():
    pts = np.array([[3, .55], [4, .7], [1, .5], [2, .6]])  # (kl, reward)
    idx = frontier(pts, [False, True])
    assert idx.tolist() == [2, 3, 1]  # (1,.5), (2,.6), (4,.7): sorted by kl
    steps = frontier_line(pts, [False, True], steps=True)
    # between consecutive front points the corner takes the worse value of each: larger kl, smaller reward
    np.testing.assert_allclose(steps, [[1, .5], [2, .5], [2, .6], [4, .6], [4, .7]])
    np.testing.assert_allclose(frontier_line(pts, [False, True]), [[1, .5], [2, .6], [4, .7]])


def test_hypervolume_2d_by_hand():
    # x minimised, y maximised; points (1,1), (2,3), (3,2); reference (4, 0). (3,2) is dominated by (2,3).
    # union of [1,4]x[0,1] (area 3) and [2,4]x[0,3] (area 6), overlapping on [2,4]x[0,1] (area 2): 3 + 6 - 2 = 7
    pts = np.array([[1, 1], [2, 3], [3, 2]])
    assert hypervolume_2d(pts, [4, 0], [False, True]) == pytest.approx(7.0)
    # maximising both with reference (0, 0): union of [0,1]x[0,1], [0,2]x[0,3], [0,3]x[0,2]
    #   = 2*3 (x in [0,2]) + 1*2 (x in [2,3]) = 8
    assert hypervolume_2d(pts, [0, 0], [True, True]) == pytest.approx(8.0)
    # minimising both with reference (4, 4): rectangles [1,4]x[1,4] (9) contains the others' overlap:
    #   [2,4]x[3,4] and [3,4]x[2,4] lie inside it -> 9
    assert hypervolume_2d(pts, [4, 4], [False, False]) == pytest.approx(9.0)
    # points not strictly better than the reference in both objectives add nothing
    assert hypervolume_2d(pts, [1, 0], [False, True]) == 0.0
    assert hypervolume_2d(np.zeros((0, 2)), [0, 0], True) == 0.0
    # NaN rows are ignored
    assert hypervolume_2d(np.vstack([pts, [np.nan, 10]]), [4, 0], [False, True]) == pytest.approx(7.0)


def test_hypervolume_of_the_fake_sweep_means():
    # setting means (kl, reward): dpo .1 (4.5, .62), dpo .5 (1.2, .51), tdpo2 .1 (3.2, .72), tdpo2 .5 (1.4, .56)
    # reference (5, .5): all-front (1.2,.51), (1.4,.56), (3.2,.72):
    #   reward bands [.5,.51] x width 5-1.2 = .038; [.51,.56] x 3.6 = .18; [.56,.72] x 1.8 = .288 -> .506
    # dpo alone: [.5,.51] x 3.8 = .038; [.51,.62] x .5 = .055 -> .093;  tdpo2: .06 x 3.6 + .16 x 1.8 = .504
    dpo = np.array([[4.5, .62], [1.2, .51]])
    tdpo2 = np.array([[3.2, .72], [1.4, .56]])
    assert hypervolume_2d(np.vstack([dpo, tdpo2]), [5, .5], [False, True]) == pytest.approx(.506)
    assert hypervolume_2d(dpo, [5, .5], [False, True]) == pytest.approx(.093)
    assert hypervolume_2d(tdpo2, [5, .5], [False, True]) == pytest.approx(.504)


def test_default_reference_is_the_worst_corner_moved_out():
    pts = np.array([[4.5, .62], [1.2, .51], [3.2, .72], [1.4, .56], [np.nan, 1.0]])
    # kl minimised: worst = max 4.5, range 3.3 -> 4.5 + .1*3.3 = 4.83; reward maximised: worst = min .51,
    # range .21 -> .51 - .021 = .489 (the NaN row is ignored)
    np.testing.assert_allclose(default_reference(pts, [False, True]), [4.83, .489])
    np.testing.assert_allclose(default_reference(pts, [False, True], margin=0), [4.5, .51])
    np.testing.assert_allclose(default_reference([[2, 2], [2, 3]], [True, True]), [1.9, 1.9])  # flat range -> 1
    with pytest.raises(ValueError):
        default_reference(np.full((2, 2), np.nan), True)
    np.testing.assert_allclose(oriented([[1, 2]], [False, True]), [[-1, 2]])

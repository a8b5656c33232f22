"""The error-bar-aware dominance rule of alignlab.sweep.pareto on hand-made settings (mean ± std over seeds).

Objectives as the fronts use them: (x, y) = (KL minimised, reward maximised) unless said otherwise. The margin of
a pair is max(std_A, std_B) per objective; B dominates A when it is better by more than the margin in one objective
and worse by at most the margin in every one."""
import numpy as np
import pandas as pd
import pytest

from alignlab.sweep.claims import compare_groups
from alignlab.sweep.pareto import (compare_fronts, dominated_beyond_noise, dominates_beyond_noise, non_dominated,
                                   non_dominated_beyond_noise)

KL_REWARD = [False, True]


def test_the_docstring_example():
    a, sa = (2.0, 0.60), (0.3, 0.02)
    # KL worse by 0.1 (margin 0.3: tied), reward better by 0.10 (margin 0.03): B dominates A, not the reverse
    assert dominates_beyond_noise((2.1, 0.70), (0.2, 0.03), a, sa, KL_REWARD)
    assert not dominates_beyond_noise(a, sa, (2.1, 0.70), (0.2, 0.03), KL_REWARD)
    # reward better by only 0.02 <= 0.03: within noise in both objectives, neither dominates
    assert not dominates_beyond_noise((2.1, 0.62), (0.2, 0.03), a, sa, KL_REWARD)
    assert not dominates_beyond_noise(a, sa, (2.1, 0.62), (0.2, 0.03), KL_REWARD)


def test_the_margin_is_the_larger_std_and_strict():
    # reward better by exactly the margin 0.25 does not count (values exact in binary); a hair more does
    assert not dominates_beyond_noise((1.0, 0.75), (0.0, 0.25), (1.0, 0.50), (0.0, 0.125), KL_REWARD)
    assert dominates_beyond_noise((1.0, 0.751), (0.0, 0.25), (1.0, 0.50), (0.0, 0.125), KL_REWARD)
    # worse by exactly the margin is still a tie
    assert dominates_beyond_noise((1.25, 0.751), (0.25, 0.25), (1.0, 0.50), (0.0, 0.125), KL_REWARD)
    # the margin is the larger of the two stds, whichever setting has it
    assert not dominates_beyond_noise((1.0, 0.56), (0.0, 0.0), (1.0, 0.50), (0.0, 0.07), KL_REWARD)


def test_worse_beyond_the_margin_in_one_objective_blocks_dominance():
    # B: reward +0.2 (margin 0.01) but KL +1.0 (margin 0.1): a trade-off, not dominance, either way
    b, sb, a, sa = (3.0, 0.8), (0.1, 0.01), (2.0, 0.6), (0.05, 0.01)
    assert not dominates_beyond_noise(b, sb, a, sa, KL_REWARD)
    assert not dominates_beyond_noise(a, sa, b, sb, KL_REWARD)
    # the same KL gap inside a wide KL spread (std 1.5) is a tie: B dominates
    assert dominates_beyond_noise(b, (1.5, 0.01), a, sa, KL_REWARD)


def test_zero_or_nan_std_is_plain_dominance_and_nan_means_never_count():
    assert dominates_beyond_noise((1.0, 0.6), (0, 0), (1.0, 0.5), (0, 0), KL_REWARD)
    assert dominates_beyond_noise((1.0, 0.6), (np.nan, np.nan), (1.0, 0.5), (np.nan, np.nan), KL_REWARD)
    assert not dominates_beyond_noise((1.0, 0.5), (0, 0), (1.0, 0.5), (0, 0), KL_REWARD)  # equal: irreflexive
    assert not dominates_beyond_noise((np.nan, 0.9), (0, 0), (1.0, 0.5), (0, 0), KL_REWARD)
    assert not dominates_beyond_noise((1.0, 0.9), (0, 0), (np.nan, 0.5), (0, 0), KL_REWARD)
    with pytest.raises(ValueError, match="objectives"):
        dominates_beyond_noise((1.0, 0.5, 2.0), (0, 0, 0), (1.0, 0.5), (0, 0), KL_REWARD)


def test_both_maximised_like_reward_and_capability():
    # (reward, capability): B has the same reward within noise and capability 0.10 higher (margin 0.04)
    assert dominates_beyond_noise((0.70, 0.85), (0.02, 0.04), (0.72, 0.75), (0.03, 0.02), [True, True])
    # were capability a cost (minimised), B would be worse by 0.10 beyond the margin: no dominance
    assert not dominates_beyond_noise((0.70, 0.85), (0.02, 0.04), (0.72, 0.75), (0.03, 0.02), [True, False])


def test_a_point_is_dominated_only_beyond_one_std():
    means = np.array([[1.0, 0.50], [1.1, 0.52], [1.0, 0.70], [3.0, 0.71]])
    stds = np.array([[0.2, 0.05], [0.2, 0.05], [0.2, 0.05], [0.2, 0.05]])
    # by the means alone (1.0, .50) is behind (1.0, .70) and (1.1, .52) behind both; (3.0, .71) trades off
    assert non_dominated(means, KL_REWARD).tolist() == [False, False, True, True]
    # beyond noise: setting 2 is 0.20 / 0.18 better in reward (margin 0.05) at a KL within 0.2: 0 and 1 dominated;
    # 0 and 1 are within noise of each other
    matrix = dominated_beyond_noise(means, stds, KL_REWARD)
    assert matrix[2, 0] and matrix[2, 1] and not matrix[0, 1] and not matrix[1, 0] and not matrix[3, 2]
    # and (3.0, .71), on the means' front, buys 0.01 reward (within noise) for 2 nats more KL (beyond noise): it is
    # dominated beyond noise by (1.0, .70)
    assert matrix[2, 3]
    assert non_dominated_beyond_noise(means, stds, KL_REWARD).tolist() == [False, False, True, False]
    # with reward stds of 0.25, settings 0 and 1 are within noise of setting 2; setting 3 still pays 2 nats
    wide = stds.copy()
    wide[:, 1] = 0.25
    assert non_dominated_beyond_noise(means, wide, KL_REWARD).tolist() == [True, True, True, False]
    wide[:, 0] = 2.5  # and with KL stds of 2.5 all four are tied
    assert non_dominated_beyond_noise(means, wide, KL_REWARD).tolist() == [True, True, True, True]
    # NaN rows are never on the front and dominate nothing
    with_nan = np.vstack([means, [[np.nan, 0.99]]])
    assert non_dominated_beyond_noise(with_nan, np.vstack([stds, [[0.1, 0.05]]]), KL_REWARD).tolist() == \
        [False, False, True, False, False]


def test_compare_fronts_above_below_tied_crossing():
    # (KL, reward); std 0.05 in reward, 0.2 in KL everywhere; each front's rewards rise by 0.1 per unit of KL
    sd = lambda n: np.tile([0.2, 0.05], (n, 1))  # noqa: E731
    low = np.array([[1.0, 0.50], [2.0, 0.60], [3.0, 0.70]])
    high = np.array([[1.0, 0.60], [2.0, 0.70], [3.0, 0.80]])
    r = compare_fronts(high, sd(3), low, sd(3), KL_REWARD)
    assert r["outcome"] == "above" and (0, 0) in r["a_over_b"] and r["b_over_a"] == []
    assert compare_fronts(low, sd(3), high, sd(3), KL_REWARD)["outcome"] == "below"
    # 0.03 higher everywhere: within the 0.05 margin
    assert compare_fronts(low + [0, 0.03], sd(3), low, sd(3), KL_REWARD)["outcome"] == "tied"
    # disjoint KL ranges cannot be compared: tied
    far = np.array([[6.0, 0.90], [8.0, 0.95]])
    assert compare_fronts(far, sd(2), low, sd(3), KL_REWARD)["outcome"] == "tied"
    # better at low KL, worse at high KL
    cross = np.array([[1.0, 0.62], [3.0, 0.52]])  # (3.0, 0.52) is dominated by its own (1.0, 0.62): off its front
    assert compare_fronts(cross, sd(2), low, sd(3), KL_REWARD)["a_front"] == [0]
    cross = np.array([[1.0, 0.62], [3.5, 0.68]])
    r = compare_fronts(cross, sd(2), low, sd(3), KL_REWARD)
    assert r["outcome"] == "crossing" and (0, 0) in r["a_over_b"] and (2, 1) in r["b_over_a"]


def test_compare_fronts_uses_each_groups_own_front_only():
    sd = lambda n: np.tile([0.2, 0.05], (n, 1))  # noqa: E731
    dpo = np.array([[1.0, 0.50], [2.0, 0.60]])
    # TDPO2's (2.0, 0.80) dominates its own poor (2.0, 0.30) setting, which DPO would also dominate: that poor
    # setting is off TDPO2's front and does not make the comparison "crossing"
    tdpo2 = np.array([[2.0, 0.80], [2.0, 0.30]])
    r = compare_fronts(tdpo2, sd(2), dpo, sd(2), KL_REWARD)
    assert r["a_front"] == [0] and r["outcome"] == "above"
    assert compare_fronts(np.zeros((0, 2)), np.zeros((0, 2)), dpo, sd(2), KL_REWARD)["outcome"] == "empty"
    assert compare_fronts(np.array([[np.nan, 1.0]]), sd(1), dpo, sd(2), KL_REWARD)["outcome"] == "empty"


def _summary(rows):
    """An aggregated sweep as collect.aggregate writes it: one row per setting (group, x, y) with n_seeds."""
    return pd.DataFrame([{"group": g, "x_mean": x, "x_std": sx, "y_mean": y, "y_std": sy, "n_seeds": n}
                         for g, x, sx, y, sy, n in rows], index=[10 + i for i in range(len(rows))])


def test_compare_groups_leaves_out_single_seed_settings_of_a_multi_seed_sweep():
    # B's second setting would dominate A's only setting, but one seed of three finished: its std is unknown
    summary = _summary([("a", 1.0, 0.1, 1.0, 0.1, 3), ("b", 0.5, 0.1, 0.5, 0.1, 3), ("b", 2.0, float("nan"), 2.0,
                                                                                      float("nan"), 1)])
    result = compare_groups(summary, summary["group"] == "a", summary["group"] == "b", ["x", "y"], [True, True])
    assert result["outcome"] == "above" and result["verdict"] == "reproduced"
    assert result["a_over_b"] == [(10, 11)] and result["b_index"] == [11]  # labels of summary's index


def test_compare_groups_compares_single_runs_by_plain_dominance():
    # a one-seed sweep (the paper-scale profiles): every finished setting takes part, std counted as 0
    nan = float("nan")
    summary = _summary([("a", 1.0, nan, 1.0, nan, 1), ("b", 0.9, nan, 0.99, nan, 1), ("b", 2.0, nan, 0.1, nan, 0)])
    result = compare_groups(summary, summary["group"] == "a", summary["group"] == "b", ["x", "y"], [True, True])
    assert result["outcome"] == "above" and result["b_index"] == [11]  # the setting with no finished seed is out
    assert result["b_over_a"] == []
    empty = compare_groups(summary, summary["group"] == "a", summary["group"] == "c", ["x", "y"], [True, True])
    assert empty["outcome"] == "empty" and empty["verdict"] == "inconclusive"

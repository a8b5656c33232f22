"""experiments/merge_frontier/summarize.py on hand-made job dirs (nothing trained): families, mean ± std over
seeds, the verdict mapping and claims.json."""
import importlib.util
import json
import math

import pytest
import yaml

from alignlab.sweep import pareto
from alignlab.sweep.claims import front_verdict
from conftest import REPO

spec = importlib.util.spec_from_file_location("merge_frontier_summarize",
                                              REPO / "experiments" / "merge_frontier" / "summarize.py")
mf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mf)

SEEDS = (0, 1, 2)


def _job(root, name, config, metrics, seed, status="ok"):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    config = {"mode": "train", "seed": seed, **config}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}"]))
    (job / "results.json").write_text(json.dumps({"status": status, "metrics": metrics, "config": config}))


def _noisy(value, seed, spread=0.01):
    return value + spread * (seed - 1)  # seeds 0, 1, 2 -> value - spread, value, value + spread: std = spread


def make_out(root, onties_seeds=SEEDS):
    """A fake <out dir>: per seed the AdamW policy (reward 0.85, capability 0.75; SFT 0.55 / 0.94), averaging and
    HMA at alpha 0.25/0.5/0.75, OnDARE trading reward for capability, OnTIES at capability 0.90, reward 0.85."""
    for s in SEEDS:
        ref = {"eval/reward_ref": _noisy(0.55, s), "tax/capability_ref": _noisy(0.94, s)}
        _job(root / "policy", str(s), {"merge": {"name": "none"}},
             {"eval/reward": _noisy(0.85, s), "tax/capability": _noisy(0.75, s), "eval/kl": 3.0, **ref}, s)
        for k, alpha in enumerate((0.25, 0.5, 0.75)):
            # averaging: linear between the ends; learned HMA: +0.05 capability at the same reward (beyond noise);
            # given HMA: -0.05 capability at the same reward
            reward, capability = 0.55 + 0.3 * alpha, 0.94 - 0.19 * alpha
            merge = {"alpha": alpha, "aligned": "/x/aligned_s${seed}"}
            _job(root / "average", f"{k}_{s}", {"mode": "merge", "merge": {"name": "average", **merge}},
                 {"eval/reward": _noisy(reward, s), "tax/capability": _noisy(capability, s), **ref}, s)
            _job(root / "hma_learned", f"{k}_{s}", {"mode": "merge", "merge": {"name": "hma", **merge}},
                 {"eval/reward": _noisy(reward, s), "tax/capability": _noisy(capability + 0.05, s),
                  "merge/ratio_1": alpha / 2, "merge/ratio_2": alpha, "merge/ratio_3": 1.5 * alpha, **ref}, s)
            ratios = [alpha / 2, 1.25 * alpha, 1.25 * alpha]
            _job(root / "hma_given", f"{k}_{s}",
                 {"mode": "merge", "merge": {"name": "hma", "block_ratios": ratios, **merge}},
                 {"eval/reward": _noisy(reward, s), "tax/capability": _noisy(capability - 0.05, s), **ref}, s)
        _job(root / "online", f"dare_{s}", {"merge": {"name": "ondare", "p": 0.3, "a": 0.001}},
             {"eval/reward": _noisy(0.70, s), "tax/capability": _noisy(0.85, s), **ref}, s)
        if s in onties_seeds:
            _job(root / "online", f"ties_{s}", {"merge": {"name": "onties", "p": 0.3, "a": 0.001}},
                 {"eval/reward": _noisy(0.85, s), "tax/capability": _noisy(0.90, s), **ref}, s)
    # a failed job is counted out of its setting's seeds, not averaged in
    _job(root / "average", "failed", {"mode": "merge", "merge": {"name": "average", "alpha": 0.5}}, {}, 3,
         status="failed")
    return root


@pytest.mark.parametrize("outcome,verdict", [("above", "reproduced"), ("below", "not reproduced"),
                                             ("crossing", "inconclusive"), ("tied", "inconclusive"),
                                             ("empty", "inconclusive")])
def test_verdict_mapping(outcome, verdict):
    assert front_verdict(outcome) == verdict


def test_unknown_outcome_is_an_error():
    with pytest.raises(ValueError, match="better"):
        front_verdict("better")


def test_classify_reads_the_family_from_the_config():
    assert mf.classify({"merge": {"name": "none"}})[0] == "adamw"
    assert mf.classify({"mode": "merge", "merge": {"name": "hma", "alpha": 0.5}})[:2] == ("hma_learned", "alpha=0.5")
    family, setting, alpha = mf.classify({"mode": "merge", "merge": {"name": "hma", "alpha": 0.5,
                                                                     "block_ratios": [0.25, 0.625, 0.625]}})
    assert (family, setting, alpha) == ("hma_given", "alpha=0.5 [0.25,0.625,0.625]", 0.5)
    assert mf.classify({"merge": {"name": "onties", "p": 0.3, "a": 1e-3}})[:2] == ("onties", "p=0.3 a=0.001")
    assert mf.classify({"mode": "train", "merge": {"name": "average"}})[0] is None  # trained then averaged: none


def test_summary_means_stds_and_verdicts(tmp_path):
    out = make_out(tmp_path / "out")
    (out / "timing.json").write_text(json.dumps({"wall_seconds": 812.4}))
    result = mf.run(out, profile="mini", plots=False)

    summary = mf.summarize(mf.job_points(mf.collect(out), "tax/capability"), "tax/capability")
    row = summary[(summary["family"] == "average") & (summary["setting"] == "alpha=0.5")].iloc[0]
    assert row["n_seeds"] == 3 and row["n_failed"] == 1
    assert row["eval/reward_mean"] == pytest.approx(0.70) and row["eval/reward_std"] == pytest.approx(0.01)
    sft = summary[summary["family"] == "sft"].iloc[0]  # the start model, from the policy jobs' reference metrics
    assert sft["tax/capability_mean"] == pytest.approx(0.94) and sft["n_seeds"] == 3
    assert list(summary["family"].drop_duplicates()) == list(mf.FAMILIES)

    assert set(result) == {"recipe", "profile", "seeds", "wall_seconds", "claims"}
    assert (result["recipe"], result["profile"], result["seeds"], result["wall_seconds"]) == \
        ("merge_frontier", "mini", [0, 1, 2], 812)
    verdicts = {c["id"]: c["verdict"] for c in result["claims"]}
    assert verdicts == {"hma_above_averaging": "reproduced", "hma_given_above_averaging": "not reproduced",
                        "ondare_keeps_capability": "inconclusive",  # less reward, more capability: no dominance
                        "onties_keeps_capability": "reproduced"}
    for claim in result["claims"]:
        assert set(claim) == {"id", "claim", "paper", "ours", "verdict", "rule", "plots"}
        assert claim["rule"] == mf.RULE and pareto_rules_in(claim["rule"])
    ours = {c["id"]: c["ours"] for c in result["claims"]}
    assert "0.700 ± 0.010" in ours["hma_above_averaging"]  # averaging's alpha=0.5 reward, mean ± std
    assert "seed 0: +0.150 / +0.000" in ours["onties_keeps_capability"]  # paired with AdamW, for context
    assert json.loads((out / "claims.json").read_text()) == result
    table = (out / "merge_frontier.md").read_text()
    assert "| model averaging | alpha=0.5 | 3 | 0.700 ± 0.010 | 0.845 ± 0.010 |" in table
    assert "0.12/0.25/0.38" in table  # learned HMA ratios at alpha 0.25


def pareto_rules_in(rule):
    return pareto.FRONT_RULE in rule and pareto.NOISE_RULE in rule


def test_a_setting_with_one_seed_takes_no_part(tmp_path):
    out = make_out(tmp_path / "out", onties_seeds=(0,))
    result = mf.run(out, plots=False)
    claim = next(c for c in result["claims"] if c["id"] == "onties_keeps_capability")
    assert claim["verdict"] == "inconclusive" and "compare_fronts: empty" in claim["ours"]
    assert result["wall_seconds"] is None


def test_fronts_are_drawn(tmp_path):
    from alignlab.sweep.plots import is_png

    out = make_out(tmp_path / "out")
    result = mf.run(out, plots=True)
    for name in ("front_all.png", "front_hma.png", "front_online.png"):
        assert is_png(out / name)
    assert all(c["plots"] for c in result["claims"])
    assert not math.isnan(mf.summarize(mf.job_points(mf.collect(out), "tax/capability"),
                                       "tax/capability")["eval/reward_std"].iloc[0])

"""alignlab.sweep.collect on a made-up multirun (tests/fake_multirun.py): every job listed, seeds aggregated."""
import json
import math

import pandas as pd
import pytest

from alignlab.sweep import aggregate, collect
from alignlab.sweep.collect import default_group_keys, key_columns, metric_columns, parse_overrides, swept_keys
from fake_multirun import FAILED_ERROR, make_fake_sweep


@pytest.fixture
def sweep(tmp_path):
    return make_fake_sweep(tmp_path / "multirun" / "2026-11-23" / "16-25-29")


def test_collect_lists_every_job_with_its_status_and_error(sweep):
    df = collect(sweep)
    assert df["job"].tolist() == [str(i) for i in range(10)]
    assert df["status"].tolist() == ["ok"] * 8 + ["failed", "missing"]
    assert df.loc[8, "error"] == FAILED_ERROR
    assert "no results.json" in df.loc[9, "error"]
    assert (df.loc[:7, "error"] == "").all()
    assert df.loc[9, "job_dir"] == str((sweep / "9").resolve())
    # override keys become columns with typed values; method and seed also for failed/missing jobs
    assert df.attrs["keys"] == ["method", "method.beta", "seed", "experiment"]
    assert df["method.beta"].tolist()[:4] == [0.1, 0.1, 0.5, 0.5]
    assert df["seed"].tolist() == [0, 1] * 5
    assert df["method"].tolist() == ["dpo"] * 4 + ["tdpo2"] * 4 + ["dpo"] * 2
    assert df.loc[9, "method_name"] == "dpo"  # from .hydra/config.yaml: no results.json
    # metrics: flat floats, NaN where a job has none; a failed job keeps its partial metrics
    assert df.loc[0, "eval/reward"] == pytest.approx(0.60)
    assert df.loc[7, "eval/kl"] == pytest.approx(1.6)
    assert math.isnan(df.loc[8, "eval/reward"]) and df.loc[8, "train/loss"] == pytest.approx(0.7)
    assert math.isnan(df.loc[9, "eval/reward"])
    assert {"eval/reward", "eval/kl", "tax/probe_drop", "train/loss"} <= set(metric_columns(df))
    assert swept_keys(df) == ["method", "method.beta", "seed"]  # experiment=smoke is fixed
    assert default_group_keys(df) == ["method", "method.beta", "experiment"]


def test_aggregate_means_and_stds_over_seeds_of_ok_jobs(sweep):
    summary = aggregate(collect(sweep))
    assert summary[["method", "method.beta"]].values.tolist() == [
        ["dpo", 0.1], ["dpo", 0.5], ["tdpo2", 0.1], ["tdpo2", 0.5], ["dpo", 1.0]]
    dpo = summary.iloc[0]
    # dpo beta 0.1: reward seeds 0.60, 0.64 -> mean 0.62, sample std sqrt((0.02^2 + 0.02^2) / 1) = 0.0282843
    #               kl seeds 4.0, 5.0 -> mean 4.5, std sqrt(0.5^2 * 2) = 0.7071068
    assert dpo["eval/reward_mean"] == pytest.approx(0.62)
    assert dpo["eval/reward_std"] == pytest.approx(0.0282843, abs=1e-6)
    assert dpo["eval/kl_mean"] == pytest.approx(4.5)
    assert dpo["eval/kl_std"] == pytest.approx(0.7071068, abs=1e-6)
    assert (dpo["n_seeds"], dpo["n_jobs"], dpo["n_failed"], dpo["seeds"]) == (2, 2, 0, "0 1")
    # the setting whose jobs failed / are missing stays visible, with no statistics
    broken = summary.iloc[4]
    assert (broken["n_seeds"], broken["n_jobs"], broken["n_failed"]) == (0, 2, 2)
    assert math.isnan(broken["eval/reward_mean"]) and math.isnan(broken["train/loss_mean"])


def test_aggregate_by_given_keys_and_metrics(sweep):
    summary = aggregate(collect(sweep), by="method", metrics=["eval/reward"])
    assert list(summary.columns) == ["method", "n_seeds", "n_jobs", "n_failed", "seeds", "eval/reward_mean",
                                     "eval/reward_std"]
    dpo = summary.set_index("method").loc["dpo"]
    # dpo ok jobs: 0.60, 0.64, 0.50, 0.52 -> mean 0.565
    assert (dpo["n_seeds"], dpo["n_jobs"]) == (4, 6)
    assert dpo["eval/reward_mean"] == pytest.approx(0.565)
    with pytest.raises(KeyError, match="nope"):
        aggregate(collect(sweep), by=["nope"])


def test_single_seed_has_no_std_and_csv_roundtrip_keeps_keys(sweep, tmp_path):
    df = collect(sweep)
    summary = aggregate(df[df["seed"] == 0])
    assert summary.loc[0, "n_seeds"] == 1 and math.isnan(summary.loc[0, "eval/reward_std"])
    df.to_csv(tmp_path / "sweep.csv", index=False)
    back = pd.read_csv(tmp_path / "sweep.csv")
    assert {"method.beta", "experiment"} <= set(key_columns(back))
    assert "eval/reward" in metric_columns(back) and "eval/reward" not in key_columns(back)


def test_unreadable_results_and_single_run_dir(tmp_path):
    sweep = make_fake_sweep(tmp_path / "sweep")
    (sweep / "0" / "results.json").write_text("{not json")
    (sweep / "1" / "results.json").write_text(json.dumps({"status": "failed", "error": {
        "type": "ValueError", "message": "bad beta"}}))
    (sweep / "3" / "results.json").write_text(json.dumps({"status": "interrupted", "metrics": {"eval/kl": 1}}))
    df = collect(sweep)
    assert df.loc[0, "status"] == "failed" and "unreadable results.json" in df.loc[0, "error"]
    assert df.loc[1, "error"] == "ValueError: bad beta"
    assert df.loc[3, "status"] == "failed" and df.loc[3, "error"] == "status 'interrupted': no error message"
    single = collect(sweep / "2")  # a run dir holding .hydra/ itself is a sweep of one job
    assert len(single) == 1 and single.loc[0, "status"] == "ok"
    with pytest.raises(FileNotFoundError):
        collect(tmp_path / "nowhere")


def test_parse_overrides_types_and_prefixes():
    parsed = parse_overrides(["method=dpo", "method.beta=0.1", "seed=3", "+extra.list=[1,2]", "~drop",
                              "++forced='a b'", "model@policy=tiny"])
    assert parsed == {"method": "dpo", "method.beta": 0.1, "seed": 3, "extra.list": "[1, 2]", "drop": None,
                      "forced": "a b", "model@policy": "tiny"}

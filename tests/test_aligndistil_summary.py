"""experiments/aligndistil: the convergence verdict's rule and the summarizer (claims.json, aligndistil.md, plots) on
hand-made sweeps (no training), and the experiment=aligndistil_mini preset composing as AlignDistil in its regime."""
import importlib.util
import json
import math

import pytest
import yaml

from conftest import REPO, compose_config

spec = importlib.util.spec_from_file_location("ad_summary", REPO / "experiments" / "aligndistil" / "summarize.py")
summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summary)


@pytest.mark.parametrize("ad,dpo,gains,expected", [
    ([20, 40, 60], [100, 120, 140], (0.1, 0.1), "reproduced"),       # d = -80 < -20
    ([100, 120, 140], [20, 40, 60], (0.1, 0.1), "not reproduced"),   # d = +80 > 20
    ([40, 60, 80], [60, 80, 100], (0.1, 0.1), "inconclusive"),       # d = -20, margin 20: within
    ([0, 0, 20], [100, 120, 140], (-0.01, 0.1), "inconclusive"),     # AlignDistil never improved the reward
    ([20, 40, 60], [100, 120, 140], (0.1, math.nan), "inconclusive"),
    ([20], [100, 120, 140], (0.1, 0.1), "inconclusive"),             # one run
])
def test_convergence_verdict_follows_the_stated_rule(ad, dpo, gains, expected):
    result = summary.convergence_verdict(ad, dpo, *gains)
    assert result["verdict"] == expected, result
    if len(ad) > 1:
        assert result["difference"] == pytest.approx(sum(ad) / len(ad) - sum(dpo) / len(dpo))
        assert result["margin"] == pytest.approx(20.0)


def fake_job(root, num, method, key, value, seed, metrics, status="ok", curve=()):
    job = root / method / str(num)
    (job / ".hydra").mkdir(parents=True)
    overrides = ["experiment=aligndistil_mini", f"method={method}", f"{key}={value}", f"seed={seed}"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"method": {"name": method}, "seed": seed}))
    (job / "results.json").write_text(json.dumps({"status": status, "metrics": metrics,
                                                  "config": {"method": {"name": method}, "seed": seed}}))
    if curve:
        (job / "csv").mkdir()
        (job / "csv" / "metrics.csv").write_text("step,val/reward,train/loss\n" + "".join(
            f"{step},{value},\n" for step, value in curve))


def make_sweep(root, ad_shift):
    """DPO over beta, AlignDistil over r, 3 seeds each: AlignDistil's rewards shifted by `ad_shift` at the same KL."""
    num = 0
    settings = [("dpo", "method.beta", 0.1, 0.60, 4.0, 120), ("dpo", "method.beta", 0.5, 0.55, 1.0, 100),
                ("aligndistil", "method.r", 5.0, 0.60 + ad_shift, 4.0, 40),
                ("aligndistil", "method.r", 1.0, 0.55 + ad_shift, 1.0, 20)]
    for method, key, value, reward, kl, steps in settings:
        for seed in range(3):
            metrics = {"eval/reward": reward + 0.01 * (seed - 1), "eval/kl": kl + 0.1 * (seed - 1),
                       "eval/reward_ref": 0.5, "curve/steps_to_final_reward": steps + 10 * (seed - 1)}
            final = metrics["eval/reward"]
            # AlignDistil is within 0.01 of its final reward at step 10; DPO 0.04 below it at 50, there at 100
            curve = [(0, 0.5), (10, final - 0.01), (40, final)] if method == "aligndistil" else \
                [(0, 0.5), (50, final - 0.04), (100, final)]
            fake_job(root, num, method, key, value, seed, metrics, curve=curve)
            num += 1
    fake_job(root, num, "aligndistil", "method.r", 5.0, 3, {}, status="failed")
    (root / "timing.json").write_text(json.dumps({"wall_seconds": 812.4, "load_average_start": "2.0 1.9 1.8",
                                                  "load_average_end": "2.1 2.0 1.9", "cores": 2}))


def test_summary_of_a_sweep_where_aligndistil_is_above(tmp_path):
    make_sweep(tmp_path, ad_shift=0.05)
    text = summary.summarize(tmp_path, profile="mini")
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert list(claims) == ["recipe", "profile", "seeds", "wall_seconds", "claims"]
    assert (claims["recipe"], claims["profile"], claims["seeds"], claims["wall_seconds"]) == \
        ("aligndistil", "mini", [0, 1, 2], 812)
    by_id = {c["id"]: c for c in claims["claims"]}
    assert list(by_id) == ["aligndistil_front_above_dpo", "aligndistil_converges_faster"]
    for claim in claims["claims"]:
        assert set(claim) == {"id", "claim", "paper", "ours", "verdict", "rule", "plots"}
        assert "Zhang et al." in claim["paper"] and claim["rule"]
        for plot in claim["plots"]:
            assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    front = by_id["aligndistil_front_above_dpo"]
    assert front["verdict"] == "reproduced" and front["plots"] == ["front.png"]
    assert "0.650 ± 0.010" in front["ours"]
    # common level: DPO beta=0.5's mean final reward 0.55 - 0.02 = 0.53. AlignDistil reaches it at step 10 in every
    # run; DPO beta=0.1 (0.59-0.61, 0.55-0.57 at step 50) at 50, DPO beta=0.5 (0.50-0.52 at 50) only at 100
    conv = by_id["aligndistil_converges_faster"]
    assert conv["verdict"] == "reproduced" and conv["plots"] == ["curves.png"]
    assert "10.0 ± 0.0" in conv["ours"] and "75.0 ± 27.4" in conv["ours"] and "reward 0.530" in conv["ours"]
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
            for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows[("aligndistil", "r=5")][:3] == ["3 (1 failed)", "0.650 ± 0.010", "4.00 ± 0.10"]
    assert rows[("dpo", "beta=0.5")][:4] == ["3", "0.550 ± 0.010", "1.00 ± 0.10", "100 ± 10"]
    md = (tmp_path / "aligndistil.md").read_text()
    assert "REPRODUCED" in md and "812.4 s" in md


def test_summary_verdicts_when_aligndistil_is_below_or_tied(tmp_path):
    make_sweep(tmp_path / "below", ad_shift=-0.05)
    summary.summarize(tmp_path / "below", profile="mini")
    verdicts = {c["id"]: c["verdict"] for c in json.loads((tmp_path / "below" / "claims.json").read_text())["claims"]}
    assert verdicts["aligndistil_front_above_dpo"] == "not reproduced"
    make_sweep(tmp_path / "tied", ad_shift=0.005)  # within one std (0.01) of DPO at the same KL
    summary.summarize(tmp_path / "tied", profile="mini")
    verdicts = {c["id"]: c["verdict"] for c in json.loads((tmp_path / "tied" / "claims.json").read_text())["claims"]}
    assert verdicts["aligndistil_front_above_dpo"] == "inconclusive"


def test_summary_without_dpo_runs_is_inconclusive(tmp_path):
    fake_job(tmp_path, 0, "aligndistil", "method.r", 5.0, 0, {"eval/reward": 0.6, "eval/kl": 1.0,
                                                               "eval/reward_ref": 0.5,
                                                               "curve/steps_to_final_reward": 20})
    summary.summarize(tmp_path)
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert [c["verdict"] for c in claims["claims"]] == ["inconclusive", "inconclusive"]
    assert claims["wall_seconds"] is None and claims["profile"] is None


def test_the_mini_preset_composes_as_aligndistil_in_its_regime(tmp_path):
    from omegaconf import OmegaConf

    cfg = compose_config(tmp_path, ["experiment=aligndistil_mini"])
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    method = resolved["method"]
    assert method["name"] == "aligndistil" and method["teacher"] == "adaptive"
    assert resolved["eval"]["reward_every_n_steps"] > 0
    # the baseline shares everything but the method
    common = compose_config(tmp_path, ["experiment=aligndistil_mini_common", "method=dpo"])
    for key in ("data", "trainer", "eval", "sft", "model", "reward"):
        assert OmegaConf.to_container(common[key], resolve=True) == resolved[key], key


def test_the_full_preset_composes(tmp_path):
    cfg = compose_config(tmp_path, ["experiment=aligndistil_full"])
    assert cfg.method.name == "aligndistil" and cfg.model.name != "tiny" and cfg.data.name == "ultrafeedback"

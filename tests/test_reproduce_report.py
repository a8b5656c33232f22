"""The reproduction report: claims checked on made-up sweeps (fake_multirun) and gathered into one report; no
training."""
import json
import subprocess
import sys

import pytest

from alignlab.sweep.claims import FRONT_VERDICT_RULE, difference_verdict, write_claims
from conftest import REPO
from fake_multirun import make_fake_sweep


def run_script(*args):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_imdb_claims_on_a_made_up_sweep(tmp_path):
    # fake sweep (2 seeds): TDPO2 (kl 3.2 +- 0.28, reward 0.72 +- 0.03) and (1.4 +- 0.28, 0.56 +- 0.01) against DPO
    # (4.5 +- 0.71, 0.62 +- 0.03) and (1.2 +- 0.28, 0.51 +- 0.01): each TDPO2 setting dominates its DPO counterpart
    # beyond one std, no DPO setting dominates a TDPO2 one; there is no TDPO1 job at all
    sweep = make_fake_sweep(tmp_path / "sweep")
    run_script("experiments/imdb_frontier/claims.py", sweep)
    record = json.loads((sweep / "claims.json").read_text())
    assert record["recipe"] == "imdb_frontier" and record["seeds"] == [0, 1]
    claims = {c["id"]: c for c in record["claims"]}
    assert claims["tdpo2_above_dpo"]["verdict"] == "reproduced"
    assert claims["tdpo2_above_dpo"]["outcome"] == "above"
    assert claims["tdpo2_above_tdpo1"]["verdict"] == "inconclusive"  # a group without a finished setting
    assert "0.720 ± 0.028" in claims["tdpo2_above_dpo"]["ours"]


def test_difference_verdict_needs_a_gap_beyond_the_larger_std():
    assert difference_verdict(100.0, 10.0, 130.0, 15.0, higher_is_better=False) == "reproduced"  # 30 fewer > 15
    assert difference_verdict(100.0, 10.0, 110.0, 15.0, higher_is_better=False) == "inconclusive"
    assert difference_verdict(140.0, 10.0, 110.0, 15.0, higher_is_better=False) == "not reproduced"
    assert difference_verdict(0.8, float("nan"), 0.7, float("nan"), higher_is_better=True) == "reproduced"
    assert difference_verdict(float("nan"), 0.1, 0.7, 0.1, higher_is_better=True) == "inconclusive"


def test_write_claims_rejects_an_unknown_verdict(tmp_path):
    with pytest.raises(ValueError, match="verdict 'maybe'"):
        write_claims(tmp_path, "x", "mini", [0], [{"id": "c", "verdict": "maybe"}])


def test_report_gathers_claims_and_lists_a_failed_recipe(tmp_path):
    out = tmp_path / "reproduce"
    run_script("experiments/imdb_frontier/claims.py", make_fake_sweep(out / "imdb_frontier"))
    (out / "hh_table").mkdir()
    (out / "hh_table" / "hh_table.json").write_text(json.dumps({
        "recipe": "hh_table", "profile": "mini", "claim": "TDPO2 above DPO", "rule": "d > m", "verdict": "not reproduced",
        "reason": "below in entropy", "timing": {"wall_seconds": 600},
        "methods": {"dpo": {"seeds": "0 1 2", "accuracy": {"mean": 60.0, "std": 1.0},
                            "entropy": {"mean": 3.0, "std": 0.1}},
                    "tdpo2": {"seeds": "0 1 2", "accuracy": {"mean": 61.0, "std": 2.0},
                              "entropy": {"mean": 2.5, "std": 0.1}}}}))
    run_script("experiments/reproduce/report.py", out, "--wall", 3000, "--status", "imdb_frontier=0",
               "merge_frontier=1", "aligndistil=0", "hh_table=0")
    report = (out / "report.md").read_text()
    assert "Wall time: 50 min 0 s" in report
    assert "Sweep wall times: hh_table 600 s (sum 10 min 0 s;" in report  # the fake IMDb sweep wrote no timing
    assert "| TDPO2's reward-vs-KL front lies above DPO's | REPRODUCED | imdb_frontier |" in report
    assert "| TDPO2 above DPO | NOT REPRODUCED | hh_table |" in report
    assert "Not run (exit code 1); see `merge_frontier.log`." in report
    assert "Not run (no claims written)" in report  # aligndistil exited 0 but left nothing
    assert "tdpo2: accuracy 61.000 ± 2.000, entropy 2.500 ± 0.100" in report
    assert "(imdb_frontier/front_eval-reward_vs_eval-kl.png)" in report
    # the two IMDb claims share the front rule, the HH claim has its own: each written out once, at the end
    rules = report.split("## Rules")[1]
    assert report.count("- Rule: R1 (below)") == 2 and "- Rule: R2 (below)" in report
    assert rules.count(FRONT_VERDICT_RULE) == 1 and "- **R2**: d > m" in rules
    summary = json.loads((out / "report.json").read_text())
    assert summary["status"]["merge_frontier"] == 1 and summary["recipes"]["hh_table"]["seeds"] == [0, 1, 2]


def test_reproduce_scripts_parse():
    for script in sorted(REPO.glob("experiments/*/run.sh")) + [REPO / "experiments/timing.sh"]:
        subprocess.run(["bash", "-n", str(script)], cwd=REPO, check=True)


def test_timing_sh_writes_the_json_the_report_reads(tmp_path):
    # the recipes' run.sh source it; merge_frontier adds its phases as extra fields
    phases = ''', "phases": {"policy": 1}'''
    script = (f"source experiments/timing.sh; timing_start demo mini; sleep 1; "
              f"timing_stop {tmp_path}/out '{phases}'; timing_report")
    printed = subprocess.run(["bash", "-c", script], cwd=REPO, check=True, capture_output=True, text=True).stdout
    timing = json.loads((tmp_path / "out" / "timing.json").read_text())
    assert timing["profile"] == "mini" and timing["wall_seconds"] >= 1 and timing["phases"] == {"policy": 1}
    assert len(timing["load_average_start"].split()) == 3 and timing["cores"] >= 1
    assert printed.startswith("demo mini: start ") and f"sweep wall time {timing['wall_seconds']} s" in printed

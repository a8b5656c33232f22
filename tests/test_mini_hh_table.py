"""The HH table's summary and verdict (experiments/hh_table/table.py) on hand-made numbers, and data=mini_hh end to
end through `python -m alignlab` (slow)."""
import importlib.util
import json
import math
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

spec = importlib.util.spec_from_file_location("hh_table", REPO / "experiments" / "hh_table" / "table.py")
hh_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hh_table)


def stats(mean, std, n=3):
    return {"mean": mean, "std": std}


def method(acc, entropy, n=3, winrate=(40.0, 1.0)):
    return {"n_seeds": n, "seeds": "0 1 2", "n_failed": 0, "accuracy": stats(*acc), "entropy": stats(*entropy),
            "winrate_vs_chosen": stats(*winrate), "kl": stats(1.0, 0.1), "reward": stats(0.5, 0.1)}


@pytest.mark.parametrize("tdpo2,dpo,expected", [
    # accuracy (mean, std), entropy (mean, std): the margin per metric is the larger std
    (((67.0, 1.0), (4.9, 0.1)), ((59.0, 2.0), (3.2, 0.2)), "reproduced"),        # +8 > 2, +1.7 > 0.2
    (((67.0, 1.0), (3.0, 0.1)), ((59.0, 2.0), (3.2, 0.1)), "not reproduced"),    # entropy -0.2 < -0.1
    (((58.0, 0.5), (4.9, 0.1)), ((59.0, 0.5), (3.2, 0.1)), "not reproduced"),    # accuracy -1 < -0.5
    (((60.0, 2.0), (4.9, 0.1)), ((59.0, 1.5), (3.2, 0.1)), "inconclusive"),      # accuracy +1 within 2
    (((61.0, 2.0), (3.25, 0.1)), ((59.0, 1.5), (3.2, 0.1)), "inconclusive"),     # exactly the margin: within
])
def test_verdict_follows_the_stated_rule(tdpo2, dpo, expected):
    result = hh_table.verdict({"tdpo2": method(*tdpo2), "dpo": method(*dpo), "tdpo1": method((1, 1), (1, 1))})
    assert result["verdict"] == expected, result
    acc = result["comparisons"]["accuracy"]
    assert acc["difference"] == pytest.approx(tdpo2[0][0] - dpo[0][0])
    assert acc["margin"] == max(tdpo2[0][1], dpo[0][1])


def test_verdict_needs_two_seeds_of_both_methods():
    one_seed = {"tdpo2": method((67.0, math.nan), (4.9, math.nan), n=1), "dpo": method((59.0, 1.0), (3.2, 0.1))}
    result = hh_table.verdict(one_seed)
    assert result["verdict"] == "inconclusive" and "2 successful seeds" in result["reason"]
    assert hh_table.verdict({"dpo": method((59.0, 1.0), (3.2, 0.1))})["verdict"] == "inconclusive"


def test_a_one_seed_sweep_compares_its_single_runs():
    # the paper-scale profile runs one seed: no std, so the runs are compared with margin 0
    single = {"tdpo2": method((67.0, math.nan), (4.9, math.nan), n=1),
              "dpo": method((59.0, math.nan), (5.0, math.nan), n=1)}
    result = hh_table.verdict(single)
    assert result["verdict"] == "not reproduced" and result["comparisons"]["entropy"]["margin"] == 0.0
    lower_entropy_dpo = {**single, "dpo": method((59.0, math.nan), (3.2, math.nan), n=1)}
    assert hh_table.verdict(lower_entropy_dpo)["verdict"] == "reproduced"


def fake_job(root, num, name, seed, metrics, status="ok"):
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"method={name}", f"seed={seed}"]))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"method": {"name": name}, "seed": seed}))
    (job / "results.json").write_text(json.dumps({"status": status, "metrics": metrics,
                                                  "config": {"method": {"name": name}, "seed": seed}}))


def test_table_and_json_summary_of_a_sweep(tmp_path):
    numbers = {"dpo": [(0.58, 3.0, 0.30), (0.60, 3.2, 0.32), (0.62, 3.4, 0.34)],
               "tdpo2": [(0.66, 4.8, 0.40), (0.67, 4.9, 0.41), (0.68, 5.0, 0.42)]}
    num = 0
    for name, rows in numbers.items():
        for seed, (acc, ent, win) in enumerate(rows):
            fake_job(tmp_path, num, name, seed, {"eval/pref_accuracy": acc, "eval/entropy": ent,
                                                 "eval/winrate_vs_chosen": win, "eval/kl": 2.0 * seed})
            num += 1
    fake_job(tmp_path, num, "tdpo1", 0, {}, status="failed")
    (tmp_path / "timing.json").write_text(json.dumps({"wall_seconds": 600}))
    text = hh_table.table(tmp_path, profile="mini")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ")}
    assert rows["dpo"][:6] == ["60.00", "2.00", "3.200", "0.200", "32.0", "2.0"]
    assert rows["tdpo2"][:6] == ["67.00", "1.00", "4.900", "0.100", "41.0", "1.0"]
    assert rows["tdpo2"][6:] == ["67.33", "4.915", "3", "2.00 ± 2.00", "- ± -"]
    assert rows["dpo"][6:9] == ["59.43", "3.196", "3"]
    assert rows["tdpo1"][0] == "-" and rows["tdpo1"][8] == "0" and rows["f-dpo"][6] == "54.71"
    assert "Verdict: REPRODUCED" in text  # +7 > 2 and +1.7 > 0.2
    summary = json.loads((tmp_path / "hh_table.json").read_text())
    assert summary["verdict"] == "reproduced" and summary["profile"] == "mini" and summary["rule"] == hh_table.RULE
    assert summary["methods"]["dpo"]["accuracy"] == {"mean": pytest.approx(60.0), "std": pytest.approx(2.0)}
    assert summary["methods"]["tdpo1"]["accuracy"] == {"mean": None, "std": None}  # NaN as null
    assert summary["comparisons"]["entropy"]["outcome"] == "above"
    assert summary["published"]["tdpo2"] == {"accuracy": 67.33, "entropy": 4.915}
    assert summary["timing"] == {"wall_seconds": 600}
    assert (tmp_path / "hh_table.md").read_text().strip() == text


@pytest.mark.slow
def test_mini_hh_runs_end_to_end_from_the_command_line(tmp_path):
    """python -m alignlab data=mini_hh reward=dialogue_rule, smoke-sized: SFT on chosen, DPO, eval with the win rate
    against the test split's chosen responses."""
    small = ["data.source.n_train_prompts=48", "data.source.n_test_prompts=12", "data.source.n_eval_prompts=8",
             "sft.max_epochs=1", "sft.batch_size=16", "trainer.max_steps=4", "data.batch_size=8",
             "eval.n_prompts=8", "eval.max_new_tokens=12", "trainer.enable_progress_bar=false", "logger=none",
             "model.tokenizer_vocab_size=512"]
    proc = subprocess.run([sys.executable, "-m", "alignlab", "data=mini_hh", "reward=dialogue_rule", *small,
                           f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and results["config"]["data"]["name"] == "mini_hh"
    metrics = results["metrics"]
    for key in ("eval/pref_accuracy", "eval/entropy", "eval/winrate_vs_chosen", "eval/reward", "eval/kl"):
        assert key in metrics and metrics[key] == metrics[key], key  # present, not NaN
    assert metrics["eval/winrate_n"] == 8
    assert results["stages"]["start"].startswith("sft-")  # the SFT stage on the chosen responses ran

"""alignlab.sweep report, plots and CLI on a made-up multirun (tests/fake_multirun.py)."""
import os
import subprocess
import sys

import pandas as pd
import pytest

from alignlab.sweep import aggregate, collect
from alignlab.sweep.plots import is_png, plot_front
from alignlab.sweep.report import markdown_table, report
from fake_multirun import make_fake_sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(REPO, ".cache", "test", "mpl"))  # font cache built once


@pytest.fixture
def sweep(tmp_path):
    return make_fake_sweep(tmp_path / "multirun" / "2026-11-23" / "16-25-29")


def test_plot_front_writes_a_png(sweep, tmp_path):
    summary = aggregate(collect(sweep))
    path = plot_front(summary, "eval/kl", "eval/reward", False, True, tmp_path / "plots" / "front.png",
                      label_keys=["method.beta"], reference=[5, .5])
    assert path.stat().st_size > 1000 and is_png(path)
    # the per-job table works too (ok jobs only, no error bars), and a hue column may be absent
    path = plot_front(collect(sweep), "tax/probe_drop", "eval/reward", False, True, tmp_path / "jobs.png", hue=None)
    assert is_png(path)
    with pytest.raises(KeyError, match="nope"):
        plot_front(summary, "nope", "eval/reward", False, True, tmp_path / "x.png")


def test_report_writes_tables_markdown_and_plots(sweep):
    r = report(sweep, reference=(5, .5))
    assert (r["name"], r["n_jobs"], r["n_ok"], r["n_failed"], r["n_missing"]) == ("2026-11-23/16-25-29", 10, 8, 1, 1)
    # hand-computed in test_sweep_pareto.test_hypervolume_of_the_fake_sweep_means
    assert r["hypervolume"] == pytest.approx({"all": .506, "dpo": .093, "tdpo2": .504})
    assert r["reference"] == [5.0, .5]
    # dpo beta=0.5 (1.2 ± 0.28, 0.51 ± 0.014) is on the means' front but tdpo2 beta=0.5 (1.4 ± 0.28, 0.56 ± 0.014)
    # dominates it beyond one std (reward +0.05 > 0.014, KL +0.2 <= 0.28): off the front
    assert sorted((f["method"], f["method.beta"]) for f in r["front"]) == [("tdpo2", .1), ("tdpo2", .5)]
    assert [f["job"] for f in r["failed"]] == ["8", "9"]
    for key in ("csv", "summary_csv", "markdown", "front_png"):
        assert os.path.getsize(r[key]) > 0
    assert r["front_png"].endswith("front_eval-reward_vs_eval-kl.png") and is_png(r["front_png"])
    assert is_png(sweep / "front_eval-reward_vs_tax-probe_drop.png")  # the reward-vs-tax front

    jobs = pd.read_csv(r["csv"])
    assert len(jobs) == 10 and jobs["status"].tolist()[-2:] == ["failed", "missing"]
    summary = pd.read_csv(r["summary_csv"])
    assert summary["front"].tolist() == [False, False, True, True, False]
    assert summary["method_front"].tolist() == [True, True, True, True, False]

    md = (sweep / "sweep.md").read_text()
    assert "## Failed and missing jobs" in md
    assert "| 8   | failed  |" in md and "CUDA out of memory" in md and "\\| step 12 second line" in md
    assert "| 9   | missing |" in md and "no results.json" in md
    assert "| dpo    | 0.1         | 2/2 | 0.62 ± 0.028 | 4.5 ± 0.71 |" in md
    assert "eval/kl = 5, eval/reward = 0.5" in md  # the stated reference point
    assert "| all    | 4        | 2            | 0.506       |" in md
    assert "Fixed overrides: `experiment=smoke`" in md
    assert "![eval/reward vs eval/kl](front_eval-reward_vs_eval-kl.png)" in md


def test_report_default_reference_and_missing_metric(sweep, tmp_path):
    r = report(sweep, out_dir=tmp_path / "out", tax_fronts=False)
    assert r["reference"] == pytest.approx([4.83, .489])  # worst kl 4.5 + .1*3.3, worst reward .51 - .1*.21
    assert not (tmp_path / "out" / "front_eval-reward_vs_tax-probe_drop.png").exists()
    with pytest.raises(KeyError, match="by='nope'"):
        report(sweep, by="nope")
    r = report(sweep, x="eval/nope", out_dir=tmp_path / "out2")
    assert r["front_png"] is None and r["hypervolume"] == {}
    assert "No setting has both eval/nope and eval/reward" in (tmp_path / "out2" / "sweep.md").read_text()


def test_all_jobs_ok_says_so(tmp_path):
    sweep = make_fake_sweep(tmp_path / "s")
    for job in ("8", "9"):
        import shutil
        shutil.rmtree(sweep / job)
    report(sweep)
    assert "None: all 8 jobs ok." in (sweep / "sweep.md").read_text()


def test_markdown_table_escapes_and_aligns():
    table = markdown_table(["a", "b"], [["x|y", 1.23456789], ["line\nbreak", None]])
    assert table.splitlines() == ["| a          | b     |", "|------------|-------|",
                                  "| x\\|y       | 1.235 |", "| line break | —     |"]


def test_cli_in_a_subprocess(sweep, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "alignlab.sweep", str(sweep), "--x", "eval/kl", "--y",
                           "eval/reward", "--minimize-x", "--maximize-y", "--reference", "5,0.5", "--by", "method"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "10 jobs, 8 ok, 1 failed, 1 missing" in proc.stdout
    assert "hypervolume[all] = 0.506" in proc.stdout
    for name in ("sweep.csv", "sweep_summary.csv", "sweep.md", "front_eval-reward_vs_eval-kl.png"):
        assert (sweep / name).stat().st_size > 0


def test_cli_errors_and_options(sweep, tmp_path, capsys):
    from alignlab.sweep.__main__ import main

    assert main([str(tmp_path / "empty")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "empty").exists()
    with pytest.raises(SystemExit):
        main([str(sweep), "--reference", "5"])
    assert main([str(sweep), "--by", "none", "--keys", "method", "--out", str(tmp_path / "o"), "--no-tax",
                 "--reference=-1,0", "--x", "eval/reward", "--y", "eval/kl", "--maximize-x", "--minimize-y"]) == 0
    out = capsys.readouterr().out
    assert "hypervolume[all]" in out and "hypervolume[dpo]" not in out
    assert (tmp_path / "o" / "front_eval-kl_vs_eval-reward.png").exists()
    summary = pd.read_csv(tmp_path / "o" / "sweep_summary.csv")
    assert summary["method"].tolist() == ["dpo", "tdpo2"]  # --keys method: betas and seeds pooled


def test_tax_fronts_only_for_metrics_where_lower_is_better(sweep, tmp_path):
    from alignlab.sweep.report import tax_front_metrics

    names = ["tax/probe_drop", "tax/ppl_ratio", "tax/probe_accuracy", "tax/probe_accuracy_pre",
             "tax/lm_eval/arc_easy/acc_drop", "tax/lm_eval/arc_easy/acc", "eval/kl"]
    assert tax_front_metrics(names) == ["tax/probe_drop", "tax/ppl_ratio", "tax/lm_eval/arc_easy/acc_drop"]
    r = report(sweep, out_dir=tmp_path / "t", tax_fronts=["tax/probe_accuracy"])
    assert set(r["plots"]) == {"eval/reward vs eval/kl", "eval/reward vs tax/probe_accuracy"}

"""The sweep summary as an offline wandb run: table, front image and hypervolumes recorded on disk."""
import json
import os
from pathlib import Path

import pytest

from fake_multirun import make_fake_sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(REPO, ".cache", "test", "mpl"))
pytest.importorskip("wandb")


def test_offline_summary_run_holds_the_keys(tmp_path, monkeypatch):
    from wandb.proto import wandb_internal_pb2 as pb

    from alignlab.sweep.report import report
    from alignlab.sweep.wandb_summary import _records, read_offline_summary

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = make_fake_sweep(tmp_path / "multirun" / "2026-11-23" / "16-25-29")
    r = report(sweep, reference=(5, .5), wandb=True, wandb_project="alignlab-test")
    assert "wandb_error" not in r, r.get("wandb_error")
    run_dir = r["wandb_run_dir"]
    assert os.path.basename(run_dir).startswith("offline-run-")
    assert os.path.dirname(os.path.dirname(run_dir)) == str(sweep)  # <sweep dir>/wandb/offline-run-*

    summary = json.loads(open(os.path.join(run_dir, "files", "wandb-summary.json")).read())
    assert summary["hypervolume/all"] == pytest.approx(.506)
    assert summary["hypervolume/dpo"] == pytest.approx(.093)
    assert summary["hypervolume/tdpo2"] == pytest.approx(.504)
    assert summary["reference/eval/kl"] == 5 and summary["reference/eval/reward"] == .5
    assert (summary["sweep/n_jobs"], summary["sweep/n_failed"], summary["sweep/n_missing"]) == (10, 1, 1)
    assert summary["sweep/summary"]["_type"] == "table-file" and summary["sweep/summary"]["nrows"] == 5
    assert summary["sweep/front"]["_type"] == "image-file"
    table = os.path.join(run_dir, "files", summary["sweep/summary"]["path"])
    assert "eval/reward_mean" in json.loads(open(table).read())["columns"]
    assert read_offline_summary(run_dir) == summary  # the file is the run's own log replayed

    # the run's metadata, as wandb records it
    (log,) = Path(run_dir).glob("run-*.wandb")
    for raw in _records(log):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            assert (record.run.job_type, record.run.run_group) == ("sweep-summary", "2026-11-23_16-25-29")
            break
    else:
        pytest.fail("no run record")

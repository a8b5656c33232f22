"""Recipe pieces that can run here: the HH table over a real multirun on a local HH-RLHF stand-in."""
import subprocess
import sys

import pytest

from conftest import REPO
from fixtures_hub import make_hh_rows, write_hh

pytestmark = pytest.mark.slow
SMALL = ["sft.max_epochs=1", "sft.batch_size=16", "sft.max_length=64", "trainer.max_steps=6", "data.batch_size=4",
         "data.eval_batch_size=16", "data.max_length=64", "data.max_prompt_length=48", "eval.n_prompts=4",
         "eval.max_new_tokens=8", "trainer.enable_progress_bar=false", "logger=none"]


def test_hh_table_prints_ours_beside_the_published_numbers(tmp_path):
    data = write_hh(tmp_path / "hh", {"train": make_hh_rows(32, seed=0), "test": make_hh_rows(8, seed=1)})
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "alignlab", "--multirun", "data=hh_rlhf", f"data.source.path={data}",
                           "method=dpo,tdpo2", *SMALL, f"hydra.sweep.dir={sweep}"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = subprocess.run([sys.executable, "experiments/hh_table/table.py", str(sweep)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in table.stdout.splitlines() if line.startswith("| ")}
    assert "67.33" in rows["tdpo2"] and "59.43" in rows["dpo"] and "54.71" in rows["f-dpo"]
    ours = float(rows["tdpo2"].split("|")[2])
    assert 0.0 <= ours <= 100.0
    assert (sweep / "hh_table.md").exists()

"""data=preference_files: local JSONL / Parquet pairs through `datasets`, trained end to end."""
import json

import pandas as pd
import pytest

from alignlab.data.files import PreferenceFiles
from alignlab.errors import DataError
from alignlab.run import run
from conftest import compose_config


def make_rows(n):
    good = ["a wonderful, moving film", "great acting and a lovely score", "I loved every minute"]
    bad = ["a dull, boring mess", "terrible acting and an awful script", "I hated every minute"]
    return [{"prompt": f"Review {i}: the film was", "chosen": " " + good[i % 3], "rejected": " " + bad[i % 3]}
            for i in range(n)]


def test_jsonl_and_parquet_load_the_same_rows(tmp_path):
    rows = make_rows(20)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "p.parquet")
    a = PreferenceFiles(str(tmp_path / "p.jsonl"), val_fraction=0.2)
    b = PreferenceFiles(str(tmp_path / "p.parquet"), val_fraction=0.2)
    assert a.preference_rows("train") == b.preference_rows("train")
    assert len(a.preference_rows("train")) + len(a.preference_rows("validation")) == 20
    val_prompts = {r["prompt"] for r in a.preference_rows("validation")}
    assert val_prompts and not val_prompts & {r["prompt"] for r in a.preference_rows("train")}


def test_skip_bad_rows_counts_them(tmp_path):
    rows = make_rows(6) + [{"prompt": "x", "chosen": None, "rejected": "y"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"p.jsonl row 6: missing 'chosen'"):
        PreferenceFiles(str(tmp_path / "p.jsonl")).preference_rows("train")
    kept = PreferenceFiles(str(tmp_path / "p.jsonl"), on_bad_row="skip", val_fraction=0.0)
    assert len(kept.preference_rows("train")) == 6


@pytest.mark.slow
def test_dpo_trains_on_local_jsonl(tmp_path):
    rows = make_rows(64)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose_config(tmp_path / "run", ["data=preference_files", f"data.source.train={train}",
                                            "data.max_length=32", "data.max_prompt_length=16", "data.batch_size=8",
                                            "trainer.max_epochs=3", "eval.n_prompts=8", "eval.max_new_tokens=8",
                                            "method.optim.lr=3e-3", "trainer.enable_progress_bar=false"])
    results = run(cfg)
    m = results["metrics"]
    assert m["eval/pref_accuracy"] > 0.5
    assert m["val/rewards/accuracies"] > 0.5

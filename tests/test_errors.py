"""Bad input gets a clear error naming the problem, never a traceback from deep inside a library."""
import json
import subprocess
import sys

import pytest

from alignlab import models
from alignlab.data.module import AlignmentDataModule
from alignlab.errors import DataError, ModelLoadError
from conftest import REPO


def run_cli(*overrides, tmp_path):
    return subprocess.run([sys.executable, "-m", "alignlab", *overrides, f"hydra.run.dir={tmp_path}/run"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_missing_local_model_names_key_and_path():
    with pytest.raises(ModelLoadError, match=r"model.name_or_path='/no/such/model': it is not a local directory"):
        models.load_pretrained("/no/such/model")


def test_unreachable_hub_model_says_the_hub_is_unreachable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"'some-org/not-a-model'.*hub is unreachable"):
        models.load_pretrained("some-org/not-a-model")


def test_cli_reports_missing_model_without_traceback(tmp_path):
    proc = run_cli("model=hf", "model.name_or_path=/no/such/model", tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "alignlab: error: model.tokenizer (= model.name_or_path)='/no/such/model'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_reports_preference_file_row_missing_chosen(tmp_path):
    bad = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"},
                                                 {"prompt": "a", "rejected": "c"}])
    proc = run_cli("data=preference_files", f"data.source.train={bad}", tmp_path=tmp_path)
    assert proc.returncode == 2
    assert f"{bad} row 1: missing 'chosen'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dataset_empty_after_filtering_is_an_error():
    class Tok:
        eos_token_id = pad_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1] * len(text)}

    rows = [{"prompt": "p", "chosen": "ab", "rejected": "cd"}]  # same ids for both responses: no preference
    with pytest.raises(DataError, match="empty after tokenisation"):
        AlignmentDataModule(Tok(), rows, [], "pairs", 2, 2, max_length=8, max_prompt_length=4, name="toy")

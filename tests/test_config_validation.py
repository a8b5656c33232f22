"""A wrong setting, file or checkpoint is named before anything is built: `alignlab: error: <message>`, exit code 2,
no traceback (alignlab.pipeline.validate, alignlab.__main__.execute); the help, the run dir name and the warnings
that go with a config."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, compose_config


def execute(out, overrides, monkeypatch):
    from alignlab import console
    from alignlab.__main__ import execute as run_as_cli

    console.setup()  # as main() does before execute
    monkeypatch.setattr(sys, "argv", ["alignlab", *overrides])
    return run_as_cli(compose_config(out, overrides))


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALIGNLAB_CACHE", str(cache))
    return cache


def finished_stages(cache):
    return sorted(p.parent.name for p in cache.glob("*/STAGE_DONE.json"))


def fails_with(tmp_path, overrides, monkeypatch, capsys, message):
    with pytest.raises(SystemExit) as stop:
        execute(tmp_path / "run", overrides, monkeypatch)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert f"alignlab: error: {message}" in err and "Traceback" not in err, err
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"
    return err


@pytest.mark.parametrize("overrides, message", [
    (["method.beta=abc"], "method.beta='abc' must be a number"),
    (["method.beta=-1"], "method.beta=-1 must be > 0"),
    (["data.batch_size=0"], "data.batch_size=0 must be an integer >= 1"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs='abc' must be an integer >= -1 or null"),
    (["trainer.precision=17"], "trainer.precision=17 must be one of"),
    (["method=tdpo2", "method.alpha=-0.5"], "method.alpha=-0.5 must be >= 0"),
    (["method=ipo", "method.length_normalize=1"], "method.length_normalize=1 must be true or false"),
    (["merge=average", "merge.alpha=abc"], "merge.alpha='abc' must be a number"),
    (["merge=average", "merge.alpha=2"], "merge.alpha=2 must be a number in [0, 1]"),
    (["data.max_length=8", "data.max_prompt_length=16"],
     "data.max_length=8 must be greater than data.max_prompt_length=16"),
    (["eval.top_p=0"], "eval.top_p=0 must be a number > 0 and <= 1"),
    (["model.trust_remote_code=yes"], "model.trust_remote_code='yes' must be true or false"),
    (["data.source.n_reviews=10"], "data.source.n_reviews=10 must exceed n_eval_prompts"),
])
def test_a_bad_setting_is_named_before_anything_is_built(tmp_path, overrides, message, monkeypatch, capsys,
                                                         empty_cache):
    fails_with(tmp_path, overrides, monkeypatch, capsys, message)
    assert finished_stages(empty_cache) == [] and not (tmp_path / "run" / "policy").exists()


def write(path, text: bytes):
    path.write_bytes(text)
    return path


GOOD = b'{"prompt": "p", "chosen": "a good answer", "rejected": "a bad one"}\n'


@pytest.mark.parametrize("content, message", [
    (b"", "no usable rows (0 read, 0 bad) (it is empty)"),
    (GOOD + b"not json\n", "row 1: (line 2) is not valid JSON: Expecting value at column 1"),
    (GOOD + b'{"prompt": "p\xff", "chosen": "a", "rejected": "b"}\n', "row 1: (line 2) is not valid UTF-8"),
    (GOOD + b"[1, 2]\n", "row 1: (line 2) is a JSON list, not an object"),
])
def test_a_bad_preference_file_is_named_by_file_and_line(tmp_path, content, message, monkeypatch, capsys,
                                                         empty_cache):
    bad = write(tmp_path / "pairs.jsonl", content)
    fails_with(tmp_path, ["data=preference_files", f"data.source.train={bad}"], monkeypatch, capsys,
               f"{bad}{':' if not content else ''} {message}")
    assert finished_stages(empty_cache) == []


def test_on_bad_row_skip_applies_to_lines_that_are_not_json(tmp_path):
    from alignlab.data.files import PreferenceFiles

    bad = write(tmp_path / "pairs.jsonl", GOOD * 3 + b"not json\n" + b"\xff\xfe\n")
    assert len(PreferenceFiles(str(bad), on_bad_row="skip", val_fraction=0.0).preference_rows("train")) == 3


def test_a_relative_data_path_that_does_not_exist_says_no_such_file(tmp_path, monkeypatch, capsys, empty_cache):
    fails_with(tmp_path, ["data=preference_files", "data.source.train=data/pairs.jsonl"], monkeypatch, capsys,
               f"data.source.train='data/pairs.jsonl': no such file (relative to {REPO})")


def test_a_truncated_checkpoint_is_named_before_any_stage(tmp_path, monkeypatch, capsys, empty_cache):
    import torch

    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"policy.w": torch.zeros(1000)}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    fails_with(tmp_path, [f"ckpt_path={ckpt}"], monkeypatch, capsys, f"ckpt_path='{ckpt}' is truncated")
    assert finished_stages(empty_cache) == []


def test_a_truncated_safetensors_file_names_the_model(tmp_path, monkeypatch, capsys, empty_cache):
    from fixtures_hub import make_tiny_causal_lm

    local = make_tiny_causal_lm(tmp_path / "model")
    weights = local / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    fails_with(tmp_path, ["experiment=smoke", "model=hf", f"model.name_or_path={local}"], monkeypatch, capsys,
               f"model.name_or_path='{local}': a weights file is truncated or corrupt")


def test_more_cpu_devices_than_cores_warns(caplog):
    import os

    from alignlab.pipeline.validate import warn_devices

    warn_devices({"accelerator": "cpu", "devices": (os.cpu_count() or 1) + 1})
    assert "trainer.devices" in caplog.text and "cores" in caplog.text
    caplog.clear()
    warn_devices({"accelerator": "cpu", "devices": 1})
    assert caplog.text == ""


def test_validation_builds_nothing_big(tmp_path):
    """Every shipped method and merge passes validation on the default config (the toy models stand in)."""
    from alignlab.pipeline.validate import validate

    for overrides in (["method=sft"], ["method=ipo"], ["method=simpo"], ["method=tdpo1"], ["method=tdpo2"],
                      ["method=aligndistil"], ["merge=average"], ["merge=hma"], ["merge=ondare"], ["merge=onties"]):
        validate(compose_config(tmp_path, overrides))


def test_help_describes_alignlab():
    proc = subprocess.run([sys.executable, "-m", "alignlab", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.startswith("alignlab: LLM alignment experiments") and "powered by Hydra" not in proc.stdout
    assert "method: aligndistil, dpo, ipo, sft, simpo, tdpo1, tdpo2" in proc.stdout
    assert proc.stdout.count("  python -m alignlab") >= 3  # three examples


def test_a_merge_only_run_is_not_named_after_a_method(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import alignlab.__main__  # noqa: F401 - registers the run-name resolver, as the command line does

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        merge = compose("config", ["mode=merge", "merge=average"], return_hydra_config=True)
        train = compose("config", [], return_hydra_config=True)
    OmegaConf.resolve(merge.hydra.run)
    assert merge.hydra.run.dir.endswith("_merge-average") and "dpo" not in merge.hydra.run.dir
    assert OmegaConf.select(train, "hydra.run.dir").endswith("_dpo")

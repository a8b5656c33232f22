"""Every shipped config option composes with the defaults, and bad choices fail with a clear message."""
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import CONF_DIR, REPO, compose_config

GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name != "hydra")
# options with required (???) values get one so that they resolve
REQUIRED = {("model", "hf"): ["model.name_or_path=some-org/some-model"],
            ("data", "preference_files"): ["data.source.train=pairs.jsonl"]}
OPTIONS = [(group, yaml.stem) for group in GROUPS for yaml in sorted((Path(CONF_DIR) / group).glob("*.yaml"))]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group, option, tmp_path):
    cfg = compose_config(tmp_path, [f"{group}={option}", *REQUIRED.get((group, option), [])])
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["paths"]["output_dir"] == str(tmp_path)
    if group != "experiment":
        assert cfg[group] is not None


def test_defaults_are_the_embedded_run(tmp_path):
    cfg = compose_config(tmp_path)
    assert (cfg.model.name, cfg.data.name, cfg.method.name, cfg.reward.name) == ("tiny", "mini_imdb", "dpo", "vader")
    assert cfg.trainer.accelerator == "auto"


def test_real_model_entries_name_their_hub_ids(tmp_path):
    expected = {"gpt2": "openai-community/gpt2", "gpt2-large": "openai-community/gpt2-large",
                "pythia-70m": "EleutherAI/pythia-70m", "pythia-2.8b": "EleutherAI/pythia-2.8b"}
    for option, hub_id in expected.items():
        cfg = compose_config(tmp_path, [f"model={option}"])
        assert cfg.model.name_or_path == hub_id and cfg.model.tokenizer == hub_id
        assert cfg.model.architecture is not None  # random_init=true needs nothing else


def test_unknown_group_option_lists_the_choices(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "alignlab", "method=nope", f"hydra.run.dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Could not find 'method/nope'" in proc.stderr
    assert "dpo" in proc.stderr and "sft" in proc.stderr  # Hydra lists the available options

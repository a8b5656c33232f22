"""Every shipped config option composes with the defaults, and bad choices fail with a clear message."""
import re
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


# ---- shared blocks: one copy in the config tree, the same values in every composed config ------------------------
METHODS = sorted(p.stem for p in (Path(CONF_DIR) / "method").glob("*.yaml"))
ADAMW = {"name": "adamw", "lr": 3e-4, "weight_decay": 0.0, "warmup_ratio": 0.1, "warmup_steps": None,
         "scheduler": "constant"}


def container(node):
    return OmegaConf.to_container(node, resolve=True)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gets_the_shared_optimizer_block(method, tmp_path):
    cfg = compose_config(tmp_path, [f"method={method}"])
    assert container(cfg.method.optim) == ADAMW
    if method == "aligndistil":
        assert container(cfg.method.teacher_training) == {"max_epochs": 1, "optim": ADAMW}
    text = (Path(CONF_DIR) / "method" / f"{method}.yaml").read_text()
    assert not re.search(r"^\s*(optim|lr):", text, re.MULTILINE)  # the block comes from the defaults list only


@pytest.mark.parametrize("method", ["dpo", "aligndistil"])
def test_optimizer_overrides_from_the_command_line_and_presets(method, tmp_path):
    cfg = compose_config(tmp_path, [f"method={method}", "method.optim.lr=1e-3"])
    assert container(cfg.method.optim) == {**ADAMW, "lr": 1e-3}
    tdpo_paper = {**ADAMW, "name": "rmsprop", "lr": 5e-6, "warmup_steps": 150}  # the TDPO paper's HH optimisation
    for preset, optim in [("hh_table", tdpo_paper), ("imdb_frontier_full", {**ADAMW, "lr": 1e-6}),
                          ("smoke", ADAMW)]:
        cfg = compose_config(tmp_path, [f"experiment={preset}", f"method={method}"])
        assert container(cfg.method.optim) == optim, preset
        if method == "aligndistil":
            assert container(cfg.method.teacher_training.optim) == ADAMW  # presets tune the aligned model only
    if method == "aligndistil":
        cfg = compose_config(tmp_path, ["method=aligndistil", "method.teacher_training.optim.lr=1e-5"])
        assert cfg.method.teacher_training.optim.lr == 1e-5 and cfg.method.optim.lr == 3e-4


DEEPSPEED_TRAINER = {  # trainer=deepspeed_zero{2,3}_offload as composed when each file still held a full copy
    "_target_": "lightning.Trainer", "accelerator": "gpu", "accumulate_grad_batches": 1, "deterministic": False,
    "devices": "auto", "enable_model_summary": False, "enable_progress_bar": True, "gradient_clip_val": 1.0,
    "log_every_n_steps": 10, "max_epochs": 1, "max_steps": -1, "num_nodes": 1, "num_sanity_val_steps": 0,
    "precision": "bf16-mixed", "val_check_interval": 1.0}
DEEPSPEED_STRATEGY = {
    "_target_": "lightning.pytorch.strategies.DeepSpeedStrategy", "allgather_bucket_size": 200000000,
    "contiguous_gradients": True, "exclude_frozen_parameters": True, "logging_batch_size_per_gpu": "auto",
    "overlap_comm": True, "reduce_bucket_size": 200000000}
OFFLOAD_TRAINERS = {
    "deepspeed_zero2_offload": {**DEEPSPEED_TRAINER, "strategy": {
        **DEEPSPEED_STRATEGY, "stage": 2, "offload_optimizer": True, "offload_parameters": False, "pin_memory": True}},
    "deepspeed_zero3_offload": {**DEEPSPEED_TRAINER, "strategy": {
        **DEEPSPEED_STRATEGY, "stage": 3, "offload_optimizer": True, "offload_parameters": True, "pin_memory": True,
        "sub_group_size": 1000000000000, "load_full_weights": False}},
}


@pytest.mark.parametrize("trainer", sorted(OFFLOAD_TRAINERS))
def test_offload_trainers_are_their_stage_plus_offload(trainer, tmp_path):
    composed = container(compose_config(tmp_path, [f"trainer={trainer}"]).trainer)
    assert composed == OFFLOAD_TRAINERS[trainer]
    stage = container(compose_config(tmp_path, [f"trainer={trainer.removesuffix('_offload')}"]).trainer)
    differing = {k for k in stage["strategy"] if stage["strategy"][k] != composed["strategy"][k]}
    assert {k: v for k, v in stage.items() if k != "strategy"} == {k: v for k, v in composed.items() if k != "strategy"}
    assert differing == ({"offload_optimizer", "pin_memory"} if "zero2" in trainer
                         else {"offload_optimizer", "offload_parameters", "pin_memory"})

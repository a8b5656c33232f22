"""Every `python -m alignlab` command in README.md runs offline as written. Each one is composed and validated (every
job of a multirun); those that need no download run for real in-process, scaled down to seconds (`scaled`: the
same stages and code paths with fewer rows and steps, the smoke preset's cached stages for the embedded data, and
a narrower random-init model of the same type and vocabulary). Commands marked (hub) are composed and validated
only. Placeholders stand for the user's files: pairs.jsonl (in the working directory), /path/to/sft and <dir>."""
import itertools
import json
import re
import shlex

import pytest

from conftest import REPO, compose_config

SCALE = ["trainer.max_steps=2", "eval.n_prompts=4", "eval.max_new_tokens=4"]
FEWER_ROWS = ["data.source.n_reviews=200", "data.source.n_pair_prompts=32", "data.source.n_eval_prompts=8",
              "data.pairs.max_new_tokens=16", "sft.max_epochs=1"]
NARROWER = ["model.architecture.num_hidden_layers=1", "model.architecture.hidden_size=32",
            "model.architecture.num_attention_heads=2", "model.architecture.intermediate_size=64"]


def scaled(args: list[str]) -> list[str]:
    """The command's arguments plus what makes it take seconds."""
    if any(a.startswith("data=") for a in args):
        return [*args, *SCALE]
    if not any(a.startswith("model=") for a in args):  # the embedded run: the smoke preset's stages are cached
        return [*args, "experiment=smoke", *SCALE]
    return [*args, "experiment=smoke", *SCALE, *FEWER_ROWS, *NARROWER]


def readme_commands() -> list[tuple[str, bool]]:
    """(arguments after `python -m alignlab`, needs the hub) for each command line in the README."""
    out = []
    for line in (REPO / "README.md").read_text().splitlines():
        m = re.match(r"^\s+python -m alignlab(?=\s|$)(.*?)(#.*)?$", line)
        if m:
            out.append((m.group(1).strip(), "(hub)" in (m.group(2) or "")))
    return out


COMMANDS = readme_commands()
RAN: set[str] = set()  # configs already run (a README command that only resumes runs the same config again)


def test_the_readme_has_commands():
    assert len(COMMANDS) >= 10
    assert ("model=pythia-70m model.random_init=true model.tokenizer=embedded", False) in COMMANDS


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """What the placeholders stand for: a preference file and a small local HF model with its tokenizer."""
    from alignlab.data.reviews import generate_reviews
    from fixtures_hub import make_tiny_causal_lm

    root = tmp_path_factory.mktemp("user_files")
    reviews = [r["text"] for r in generate_reviews(60, seed=3)]
    model_dir = make_tiny_causal_lm(root / "sft")
    with open(root / "pairs.jsonl", "w") as f:
        for text in reviews:
            words = text.split()
            f.write(json.dumps({"prompt": " ".join(words[:4]), "chosen": " ".join(words[4:12]) + " great",
                                "rejected": " ".join(words[4:12]) + " awful"}) + "\n")
    return root, model_dir


def jobs(args: list[str]) -> list[list[str]]:
    """The jobs of a command: itself, or for --multirun the product of its comma-separated sweeps."""
    if "--multirun" not in args and "-m" not in args:
        return [args]
    args = [a for a in args if a not in ("--multirun", "-m")]
    choices = [[f"{a.split('=', 1)[0]}={v}" for v in a.split("=", 1)[1].split(",")] if "," in a else [a]
               for a in args]
    return [list(job) for job in itertools.product(*choices)]


@pytest.mark.slow
@pytest.mark.parametrize("command, hub", COMMANDS, ids=[c or "(default)" for c, _ in COMMANDS])
def test_readme_command_runs_offline(command, hub, user_files, tmp_path, monkeypatch):
    from alignlab.pipeline.validate import validate
    from alignlab.run import run

    root, model_dir = user_files
    monkeypatch.chdir(root)  # relative paths in the README (pairs.jsonl) are the user's working directory
    args = shlex.split(command.replace("/path/to/sft", str(model_dir)).replace("<dir>", str(model_dir)))
    args = [a for a in args if not a.startswith("hydra.")]  # run/sweep dirs: the test's own
    for job in jobs(args):
        validate(compose_config(tmp_path, job))
    if hub or len(jobs(args)) > 1 or not args or any(a.startswith("mode=merge") for a in args):
        return  # the hub; sweeps (their jobs validated above); the default and the merge-only run: other tests run them
    from omegaconf import OmegaConf

    cfg = compose_config(tmp_path / "run", scaled(args))
    key = json.dumps({k: v for k, v in OmegaConf.to_container(cfg).items() if k not in ("paths", "ckpt_path")},
                     sort_keys=True, default=str)
    if key in RAN:
        return
    RAN.add(key)
    results = run(cfg)
    assert results["status"] == "ok" and (tmp_path / "run" / "policy" / "model.safetensors").exists()

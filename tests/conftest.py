"""Shared test helpers: offline environment, config composition, and one cached smoke run per session."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

# Never touch the network or the user's caches (the Makefile sets these too; this covers a bare `pytest`).
for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)
REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("ALIGNLAB_CACHE", str(REPO / ".cache" / "test" / "alignlab"))
CONF_DIR = str(REPO / "conf")


@contextmanager
def one_torch_thread():
    """torch computes with one intra-op thread inside the block; the previous count is restored after it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def single_thread():
    """Tiny tensors: torch's intra-op threads only add synchronisation, which turns pathologically slow (10-100x)
    when the 2-core machine is busy with other processes. Tests of small tensors use this fixture."""
    with one_torch_thread():
        yield


def compose_config(output_dir, overrides=()):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={output_dir}", *overrides])


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke preset of the embedded run (SFT -> pairs -> DPO -> eval), run once and shared by tests."""
    from alignlab.run import run

    out = tmp_path_factory.mktemp("smoke")
    cfg = compose_config(out, ["experiment=smoke", "method.optim.lr=1e-3", "trainer.max_epochs=2"])
    return cfg, run(cfg), out


class SimulatedPreemption(RuntimeError):
    pass


class InterruptAtStep:
    """A Lightning callback that kills training when global_step reaches `step` (simulates a preempted job)."""

    def __new__(cls, step: int):
        import lightning as L

        class _Interrupt(L.Callback):
            def on_train_batch_start(self, trainer, *args):
                if trainer.global_step == step:
                    raise SimulatedPreemption(f"simulated interruption at step {step}")

        return _Interrupt()

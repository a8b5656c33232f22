"""Fault injection for tests: Lightning callbacks (added with `+callbacks.fault._target_=faults.SignalAtStep ...`) that
send the training process a signal at an exact step, so a kill -9 or a Ctrl-C lands at the same point every time."""
from __future__ import annotations

import os
import signal as signals

import lightning as L


class SignalAtStep(L.Callback):
    """Send `signal` (SIGKILL: as kill -9; SIGINT: as Ctrl-C; SIGTERM: as a scheduler's preemption) to this process
    when optimizer step `step` + 1 begins, i.e. after `step` steps are done; once, and only in a run that did not
    resume from a checkpoint (so the same command, resumed, finishes)."""

    def __init__(self, step: int, signal: str = "SIGKILL"):
        self.step, self.signal, self.sent = step, getattr(signals, signal), False

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step and not self.sent and trainer.ckpt_path is None:
            self.sent = True
            os.kill(os.getpid(), self.signal)


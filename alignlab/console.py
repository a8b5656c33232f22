"""What a run prints: one line per event, one progress bar per training phase, and the warnings that say something
about the run. `setup()` (called by the entry point once Hydra has configured logging) keeps the console handler
to the message itself, silences the libraries' notices that hold for every run (Lightning's hardware lines and
tips, DeepSpeed's accelerator notice, weight-loading and shard-writing bars, a frozen model's "eval mode" warning,
deprecations inside Lightning), and leaves the full log in the run dir's `__main__.log`."""
from __future__ import annotations

import logging
import sys
import time
import warnings

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, _update_n

# Library messages that say nothing about this run (matched against the start of the message).
NOTICES = (
    r"Found \d+ module\(s\) in eval mode",       # the frozen reference and teachers are in eval mode by design
    r".*isinstance\(treespec, LeafSpec\)",       # a deprecation inside Lightning's own code
    r".*does not have many workers",              # data.num_workers=0 is the tested default; batches are tiny
    r"The '\w+_dataloader' does not have many workers",
)
# Their INFO lines (hardware, seeds, tips, "fit stopped") go to the log file only.
QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed",
                 "lightning.pytorch.accelerators.cuda", "lightning.fabric.utilities.distributed",
                 "lightning.pytorch.trainer.connectors")
CONSOLE_FORMAT = "%(message)s"
log = logging.getLogger(__name__)


class _Level(logging.Formatter):
    """The message alone, with 'warning:' / 'error:' in front where the level says so."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


class _ConsoleOnly(logging.Filter):
    """What the console handler leaves to the log file: the QUIET_LOGGERS' lines below WARNING, and records logged
    with extra={"console": False} (shown in another form, e.g. the final `alignlab: error: ...` line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and record.name.startswith(QUIET_LOGGERS):
            return False
        return getattr(record, "console", True)


def filter_notices() -> None:
    for pattern in NOTICES:
        warnings.filterwarnings("ignore", message=pattern)


def setup() -> None:
    """Configure the console of a run (see the module docstring). Idempotent."""
    filter_notices()
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):  # their own handler repeats every line
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True
    logging.getLogger("DeepSpeed").addFilter(lambda r: "Setting accelerator to CPU" not in r.getMessage())
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and getattr(handler, "stream", None) in (sys.stdout, sys.stderr):
            handler.setFormatter(_Level(CONSOLE_FORMAT))
            if not any(isinstance(f, _ConsoleOnly) for f in handler.filters):
                handler.addFilter(_ConsoleOnly())
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" and "Writing model shards", once per model
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


class ProgressBar(TQDMProgressBar):
    """On a terminal, one bar for a whole training phase (every epoch, in optimizer steps, continuing from a resumed
    step), labelled with the module's name (sft-stage, dpo, a teacher), showing its loss and accuracy under short
    names; validation draws no bar. In a log file, one line when the phase ends instead."""

    SHORT = {"rewards/accuracies": "acc", "loss": "loss"}

    def __init__(self, what: str = "training"):
        super().__init__()
        self.what = what
        self.started = 0.0

    @property
    def is_disabled(self) -> bool:
        return super().is_disabled or not sys.stdout.isatty()

    def _label(self, pl_module) -> str:
        return getattr(pl_module, "method_name", None) or self.what

    def init_sanity_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def on_train_start(self, trainer, pl_module) -> None:
        self.started = time.time()
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=trainer.estimated_stepping_batches)
        self.train_progress_bar.set_description(self._label(pl_module))
        _update_n(self.train_progress_bar, trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if self.is_disabled and trainer.is_global_zero:
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in self.get_metrics(trainer, pl_module).items())
            log.info("%s: %d steps in %.0f s%s", self._label(pl_module), trainer.global_step,
                     time.time() - self.started, f" ({shown})" if shown else "")

    def on_train_epoch_start(self, trainer, *_) -> None:
        pass  # one bar across epochs

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            _update_n(bar, trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_validation_end(self, trainer, pl_module) -> None:
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()

    def get_metrics(self, trainer, pl_module) -> dict:
        out = {}
        for key, value in super().get_metrics(trainer, pl_module).items():
            split, _, name = key.partition("/")
            if split == "train" and name in self.SHORT:
                out[self.SHORT[name]] = value
        return out


def progress_bar(trainer_cfg, what: str) -> list:
    """[alignlab's progress bar] when the trainer config shows one, else []."""
    enabled = trainer_cfg.get("enable_progress_bar", True) if hasattr(trainer_cfg, "get") else True
    return [ProgressBar(what)] if enabled else []

"""Loggers that keep a run's whole history across resumed attempts, and factories that need a decision at run time.

- `CSVLogger` appends to `<run dir>/csv/metrics.csv` (Lightning's deletes the file of an earlier attempt) and, when
  training resumes from step s, drops the rows an interrupted attempt logged at steps >= s (they are logged again).
- `wandb_logger` stores the wandb run id in the run dir and resumes that run when the run dir is reused.
- `ResumeLoggers` (a Lightning callback, added by alignlab.pipeline.fit) tells every such logger the step training
  starts from.
"""
from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path

import lightning as L
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

WANDB_ID_FILE = "wandb_run_id"


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, minus the deletion of an existing metrics.csv: its header is read back, so later
    rows append under the same columns (the file is rewritten only when new columns appear)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])

    def drop_from(self, step: int) -> int:
        """Remove the rows logged at steps >= `step` (the steps a resumed run logs again); returns how many."""
        self.save()
        if not self._fs.isfile(self.metrics_file_path):
            return 0
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(keep) != len(rows):
            with self._fs.open(self.metrics_file_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(keep)
        return len(rows) - len(keep)


class CSVLogger(LightningCSVLogger):
    """lightning's CSVLogger that keeps the metrics of earlier attempts in the same directory (see the module)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def resume_at(self, step: int) -> None:
        self.experiment.drop_from(step)


class ResumeLoggers(L.Callback):
    """When training starts (fresh: step 0, or resumed: the checkpoint's step), loggers that keep history across
    attempts forget what was logged at that step and after."""

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if hasattr(logger, "resume_at"):
                logger.resume_at(trainer.global_step)


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def sweep_group() -> str | None:
    """In a Hydra multirun, the sweep's name (as the sweep summary run uses it), so all its jobs share a group."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    from alignlab.sweep.report import sweep_name

    return sweep_name(HydraConfig.get().sweep.dir).replace("/", "_")


def wandb_run_id(save_dir) -> str:
    """The wandb run id of the run dir `save_dir`: stored there on first use, so a resumed run continues the same
    wandb run instead of starting a second one."""
    path = Path(save_dir) / WANDB_ID_FILE
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


def wandb_logger(offline: str | bool = "auto", group: str | None = None, save_dir: str = ".", **kwargs):
    """A WandbLogger that runs offline when no API key is configured (or WANDB_MODE=offline), so a run never
    waits on the network; sync later with `wandb sync <save_dir>/wandb/offline-run-*`. Jobs of a multirun are
    grouped by sweep unless a group is given. The run id lives in `<save_dir>/wandb_run_id`: resuming the run dir
    resumes the wandb run (resume="allow")."""
    from lightning.pytorch.loggers import WandbLogger

    if offline == "auto":
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not wandb_has_credentials()
    kwargs.setdefault("id", wandb_run_id(save_dir))
    kwargs.setdefault("resume", "allow")
    return WandbLogger(offline=bool(offline), group=group or sweep_group(), save_dir=save_dir, **kwargs)


def log_evaluation(loggers, metrics: dict, samples: list[dict], step: int) -> None:
    """Evaluation metrics go to every logger at the final step; samples become a table where the logger has
    tables (wandb: prompt / completion / reward)."""
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    for logger in loggers or []:
        logger.log_metrics(numeric, step=step)
        if hasattr(logger, "log_table") and samples:
            logger.log_table(key="eval/samples", columns=["prompt", "completion", "reward"],
                             data=[[s["prompt"], s["completion"], s["reward"]] for s in samples])

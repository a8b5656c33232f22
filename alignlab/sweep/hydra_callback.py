"""The Hydra callback of a multirun (a `hydra.experimental.callback.Callback`, not a Lightning callback): write the
sweep report when a multirun ends, and record failed jobs in their results.json.

Register it in the primary config (or a `conf/hydra/` file; `hydra/callbacks` has no shipped options here):

    hydra:
      callbacks:
        collect:
          _target_: alignlab.sweep.hydra_callback.SweepReport
          # every argument is optional:
          x: eval/kl
          y: eval/reward
          maximize_x: false
          maximize_y: true
          by: method
          wandb: false

or per command:

    python -m alignlab --multirun ... +hydra.callbacks.collect._target_=alignlab.sweep.hydra_callback.SweepReport

on_multirun_end: `report(config.hydra.sweep.dir, ...)` (and the wandb summary run when wandb=true); never raises
(a warning is logged instead). Hydra calls it only when the sweep returns normally: with Hydra's basic sweeper
(and the joblib launcher) a job whose task function *raised* makes the sweep raise after all its jobs ran, and
on_multirun_end is skipped. So by default (`refresh_each_job: true`) the report files are also rewritten at the
end of every job (files only, no wandb): they exist, and name the failure, in that case too. With jobs running in
parallel, such a per-job report may list a job still running as "missing"; `python -m alignlab.sweep <dir>`
rewrites it from what is on disk.

on_job_end: when the job failed (its task function raised) and wrote no results.json, writes one with the failed
schema below, so that the report names the error instead of "missing":

    {"status": "failed", "error": "<ExceptionType>: <message>", "error_type": "<ExceptionType>",
     "traceback": "<formatted traceback>", "metrics": {}, "policy_dir": null, "stages": {},
     "config": <the job's config, resolved where it can be>, "written_by": "alignlab.sweep.hydra_callback"}
"""
from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def failed_results(error: BaseException, config: dict | None = None, metrics: dict | None = None,
                   written_by: str = "alignlab.sweep.hydra_callback") -> dict:
    """The results.json of a failed job (the schema the collector reads)."""
    return {"status": "failed", "error": f"{type(error).__name__}: {error}", "error_type": type(error).__name__,
            "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
            "metrics": metrics or {}, "policy_dir": None, "stages": {}, "config": config,
            "written_by": written_by}


def _flag(value) -> bool:
    """Booleans from YAML, or from `${oc.env:...}` strings ("false" must be False)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class SweepReport(Callback):
    """Hydra callback (conf/hydra/default.yaml, key `collect`): the sweep report of alignlab.sweep.report after each
    job and when the multirun ends; a failed job's results.json. Arguments: see the module docstring."""

    def __init__(self, x: str = "eval/kl", y: str = "eval/reward", maximize_x: bool = False,
                 maximize_y: bool = True, by: str | None = "method", keys: Sequence[str] | None = None,
                 reference: Sequence[float] | None = None, wandb: bool = False, wandb_project: str = "alignlab",
                 record_failures: bool = True, refresh_each_job: bool = True) -> None:
        self.options = {"x": x, "y": y, "maximize_x": _flag(maximize_x), "maximize_y": _flag(maximize_y), "by": by,
                        "keys": list(keys) if keys is not None else None,
                        "reference": list(reference) if reference is not None else None,
                        "wandb": _flag(wandb), "wandb_project": wandb_project}
        self.record_failures = _flag(record_failures)
        self.refresh_each_job = _flag(refresh_each_job)
        self.sweep_dir: str | None = None
        self.last_report: dict | None = None

    # ---- multirun start / end (the launching process) ----------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # resolving once here pins `${now:...}` in the sweep dir (Hydra caches it on this config)
            self.sweep_dir = str(config.hydra.sweep.dir)
        except Exception as err:  # noqa: BLE001
            log.warning("alignlab.sweep: cannot resolve hydra.sweep.dir: %s", err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = self.sweep_dir or str(config.hydra.sweep.dir)
            self._report(sweep_dir)
        except Exception as err:  # noqa: BLE001 - a report must never turn a finished sweep into a failure
            log.warning("alignlab.sweep: no sweep report: %s: %s", type(err).__name__, err)

    def _report(self, sweep_dir: str, use_wandb: bool = True) -> dict | None:
        from alignlab.sweep.report import report

        try:
            self.last_report = report(sweep_dir, **{**self.options, "wandb": self.options["wandb"] and use_wandb})
        except Exception as err:  # noqa: BLE001
            log.warning("alignlab.sweep: report of %s failed: %s: %s", sweep_dir, type(err).__name__, err)
            return None
        r = self.last_report
        log.info("alignlab.sweep: %d jobs (%d ok, %d failed, %d missing): %s", r["n_jobs"], r["n_ok"],
                 r["n_failed"], r["n_missing"], r["markdown"])
        return r

    # ---- job end (the job's process: remote for submitit) ------------------------------------------------------
    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        try:
            self._record_failure(config, job_return)
        except Exception as err:  # noqa: BLE001
            log.warning("alignlab.sweep: could not record the job's failure: %s: %s", type(err).__name__, err)
        if self.refresh_each_job:
            try:
                from hydra.types import RunMode

                if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
                    return
                out = Path(str(config.hydra.runtime.output_dir))
                subdir = str(OmegaConf.select(config, "hydra.sweep.subdir") or "")
                sweep_dir = out.parents[len(Path(subdir).parts) - 1] if subdir else out.parent
                self._report(str(sweep_dir), use_wandb=False)  # one wandb run per sweep, at its end
            except Exception as err:  # noqa: BLE001
                log.warning("alignlab.sweep: no per-job report: %s: %s", type(err).__name__, err)

    def _record_failure(self, config: DictConfig, job_return: Any) -> None:
        from hydra.core.utils import JobStatus

        if not self.record_failures or job_return is None or job_return.status != JobStatus.FAILED:
            return
        out = Path(str(config.hydra.runtime.output_dir))
        results = out / "results.json"
        if results.exists():
            return  # the run wrote its own (e.g. a failed one with partial metrics): keep it
        error = job_return._return_value
        if not isinstance(error, BaseException):
            error = RuntimeError(str(error))
        task_config = None
        for resolve in (True, False):
            try:
                task_config = OmegaConf.to_container(job_return.cfg, resolve=resolve)
                break
            except Exception:  # noqa: BLE001 - an interpolation that only resolves inside the job: keep it as text
                continue
        out.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(failed_results(error, config=task_config), indent=2, default=str))

"""`python -m alignlab [group=option ...] [key=value ...]`: compose the config with Hydra and run it.

Every attempt is recorded in the run dir (attempts.jsonl), and its outcome in results.json, which is never turned
from a success into a failure (alignlab.pipeline.results). A user error (bad config key or value, file, row or
path) prints `alignlab: error: <message>` without a traceback and exits with code 2; training that diverges exits
with code 1 after naming the step; Ctrl-C or SIGTERM saves a checkpoint, writes status "interrupted" with the exact
command that resumes the run, and exits with code 130. In a multirun a failed job returns None instead of raising,
so the sweep's other jobs and its report still run, and rerunning the same multirun command with
`hydra.sweep.dir=<its dir>` skips the jobs whose results.json says ok for the same config.

The return value, for Hydra sweepers: metrics[optimized_metric]; with a list optimized_metric (multi-objective
Optuna, conf/hydra/sweeper/nsga2_*.yaml) the list of those metrics, in order. None when a job failed or a value is
missing or not finite: the Optuna sweeper marks that trial failed and goes on (hydra-optuna-sweeper 1.3.0 crashes
the whole sweep on a NaN objective).
"""
from __future__ import annotations

import logging
import math
import os
import shlex
import sys
from pathlib import Path

if not sys.stderr.isatty():  # a log file, not a terminal: no carriage-return progress bars (set before tqdm loads)
    os.environ.setdefault("TQDM_DISABLE", "1")

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from alignlab.errors import RunFailure, RunInterrupted, UserError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("alignlab")


def run_name(mode: str, method: str, merge: str) -> str:
    """The tail of a run dir's name (conf/hydra/default.yaml): the method trained, or for mode=merge the merge."""
    return f"merge-{merge}" if mode == "merge" else str(method)


OmegaConf.register_new_resolver("alignlab.run_name", run_name, replace=True)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def plain_config(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - a config that cannot resolve is itself often the error
        return OmegaConf.to_container(cfg, resolve=False)


def command_line(resume: bool = False, out_dir: str | Path = ".") -> str:
    """The command of this process as typed; with resume=True, the command that resumes this run in place: the
    same overrides, the same run (or sweep) dir, ckpt_path=last."""
    args = sys.argv[1:]
    if resume:
        multirun = in_multirun()
        dir_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        if HydraConfig.initialized():
            config = HydraConfig.get()
            where = config.sweep.dir if multirun else config.run.dir
        else:  # called as a library (execute on a composed config)
            where = str(out_dir)
        args = [a for a in args if not a.startswith((f"{dir_key}=", "ckpt_path="))]
        args += [f"{dir_key}={where}", "ckpt_path=last"]
    return " ".join(["python -m alignlab", *map(shlex.quote, args)])


def record_failure(cfg: DictConfig, err: BaseException, status: str = "failed", **extra) -> None:
    from alignlab.pipeline.results import record
    from alignlab.sweep.hydra_callback import failed_results

    results = {**failed_results(err, plain_config(cfg), written_by="alignlab"), "status": status, **extra}
    record(results, Path(cfg.paths.output_dir))


def report(err: BaseException, status: str) -> None:
    """The message on stderr (no traceback); the log file gets it too."""
    log.error("%s: %s", status, err, extra={"console": False})
    print(f"alignlab: {'error' if status == 'failed' else status}: {err}", file=sys.stderr)


def objective(cfg: DictConfig, metrics: dict) -> float | list[float] | None:
    """metrics[cfg.optimized_metric], or the list of values when optimized_metric is a list of keys (one per
    hydra.sweeper.direction, same order); None if any is missing or not finite."""
    keys = cfg.get("optimized_metric")
    if keys is None:
        return None
    names = [keys] if isinstance(keys, str) else [str(k) for k in keys]
    values = [metrics.get(k) for k in names]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
        log.warning("optimized_metric %s: no finite value in %s; returning None", names, values)
        return None
    return float(values[0]) if isinstance(keys, str) else [float(v) for v in values]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | list[float] | None:
    from alignlab import console

    console.setup()
    return execute(cfg)


def execute(cfg: DictConfig) -> float | list[float] | None:
    """Run a composed config as the command line does: record the attempt and its outcome, turn errors into
    their message and exit code (SystemExit), skip a multirun job that is already done."""
    from alignlab.pipeline import results as stored
    from alignlab.run import run

    out = Path(cfg.paths.output_dir)
    if in_multirun():
        done = stored.already_done(out, plain_config(cfg))
        if done is not None:
            log.info("already done: %s (results.json says ok for this config)", out)
            return objective(cfg, done["metrics"])
    stored.begin_attempt(out, command_line(), cfg.get("ckpt_path"))
    try:
        results = run(cfg)
    except (KeyboardInterrupt, RunInterrupted, SystemExit) as err:
        if isinstance(err, SystemExit) and not isinstance(err.__context__, KeyboardInterrupt):
            raise  # (Lightning exits after a second Ctrl-C: that is an interruption too)
        resume = command_line(resume=True, out_dir=out)
        what = str(err) if isinstance(err, RunInterrupted) else "interrupted before the run finished"
        record_failure(cfg, err, status="interrupted", resume_command=resume)
        report(f"{what}. Resume with:\n  {resume}", "interrupted")
        sys.exit(RunInterrupted.exit_code)
    except Exception as err:
        record_failure(cfg, err)
        if in_multirun():  # one job's failure must not take the sweep's other results down with it
            log.exception("job failed; recorded in %s/results.json", cfg.paths.output_dir)
            return None
        if isinstance(err, (UserError, RunFailure)):  # the message says what is wrong: a traceback would hide it
            report(err, "failed")
            sys.exit(err.exit_code)
        raise
    return objective(cfg, results["metrics"])


if __name__ == "__main__":
    main()

"""`python -m alignlab [group=option ...] [key=value ...]`: compose the config with Hydra and run it.

A failing job always leaves a results.json with status "failed" and the error in its run dir. In a single run a
user error (bad config key, file, row or path) prints its message without a traceback and exits with code 2;
in a multirun the job returns None instead of raising, so the sweep's other jobs and its report still run.

The return value, for Hydra sweepers: metrics[optimized_metric]; with a list optimized_metric (multi-objective
Optuna, conf/hydra/sweeper/nsga2_*.yaml) the list of those metrics, in order. None when a job failed or a value is
missing or not finite: the Optuna sweeper marks that trial failed and goes on (hydra-optuna-sweeper 1.3.0 crashes
the whole sweep on a NaN objective).
"""
from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from alignlab.errors import UserError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("alignlab")


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(cfg: DictConfig, err: BaseException) -> None:
    from alignlab.sweep.hydra_callback import failed_results

    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception:  # a config that cannot resolve is itself often the error
        config = OmegaConf.to_container(cfg, resolve=False)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(failed_results(err, config, written_by="alignlab"), indent=2,
                                                 default=str))


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
    from alignlab.run import run

    try:
        results = run(cfg)
    except Exception as err:
        record_failure(cfg, err)
        if in_multirun():  # one job's failure must not take the sweep's other results down with it
            log.exception("job failed; recorded in %s/results.json", cfg.paths.output_dir)
            return None
        if isinstance(err, UserError):  # the message names the key, file, row or path: a traceback would hide it
            log.error("%s", err)
            print(f"alignlab: error: {err}", file=sys.stderr)
            sys.exit(2)
        raise
    return objective(cfg, results["metrics"])


if __name__ == "__main__":
    main()

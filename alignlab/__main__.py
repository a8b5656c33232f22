"""`python -m alignlab [group=option ...] [key=value ...]`: compose the config with Hydra and run it.

A failing job always leaves a results.json with status "failed" and the error in its run dir. In a single run a
user error (bad config key, file, row or path) prints its message without a traceback and exits with code 2;
in a multirun the job returns NaN instead of raising, so the sweep's other jobs and its report still run.
"""
from __future__ import annotations

import json
import logging
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
    from alignlab.sweep.callback import failed_results

    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception:  # a config that cannot resolve is itself often the error
        config = OmegaConf.to_container(cfg, resolve=False)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(failed_results(err, config, written_by="alignlab"), indent=2,
                                                 default=str))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from alignlab.run import run

    try:
        results = run(cfg)
    except Exception as err:
        record_failure(cfg, err)
        if in_multirun():  # one job's failure must not take the sweep's other results down with it
            log.exception("job failed; recorded in %s/results.json", cfg.paths.output_dir)
            return float("nan")
        if isinstance(err, UserError):  # the message names the key, file, row or path: a traceback would hide it
            log.error("%s", err)
            print(f"alignlab: error: {err}", file=sys.stderr)
            sys.exit(2)
        raise
    return results["metrics"].get(cfg.optimized_metric)


if __name__ == "__main__":
    main()

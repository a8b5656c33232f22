"""`python -m alignlab [group=option ...] [key=value ...]`: compose the config with Hydra and run it."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from alignlab.errors import UserError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("alignlab")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from alignlab.run import run

    try:
        results = run(cfg)
    except UserError as err:  # the message names the key, file, row or path: a traceback would only hide it
        log.error("%s", err)
        print(f"alignlab: error: {err}", file=sys.stderr)
        sys.exit(2)
    return results["metrics"].get(cfg.optimized_metric)


if __name__ == "__main__":
    main()

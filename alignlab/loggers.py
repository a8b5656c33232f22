"""Logger factories that need a decision at run time."""
from __future__ import annotations

import os
from pathlib import Path


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


def wandb_logger(offline: str | bool = "auto", group: str | None = None, **kwargs):
    """A WandbLogger that runs offline when no API key is configured (or WANDB_MODE=offline), so a run never
    waits on the network; sync later with `wandb sync <save_dir>/wandb/offline-run-*`. Jobs of a multirun are
    grouped by sweep unless a group is given."""
    from lightning.pytorch.loggers import WandbLogger

    if offline == "auto":
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not wandb_has_credentials()
    return WandbLogger(offline=bool(offline), group=group or sweep_group(), **kwargs)


def log_evaluation(loggers, metrics: dict, samples: list[dict], step: int) -> None:
    """Evaluation metrics go to every logger at the final step; samples become a table where the logger has
    tables (wandb: prompt / completion / reward)."""
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    for logger in loggers or []:
        logger.log_metrics(numeric, step=step)
        if hasattr(logger, "log_table") and samples:
            logger.log_table(key="eval/samples", columns=["prompt", "completion", "reward"],
                             data=[[s["prompt"], s["completion"], s["reward"]] for s in samples])

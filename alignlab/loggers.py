"""Logger factories that need a decision at run time."""
from __future__ import annotations

import os
from pathlib import Path


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_logger(offline: str | bool = "auto", **kwargs):
    """A WandbLogger that runs offline when no API key is configured (or WANDB_MODE=offline), so a run never
    waits on the network; sync later with `wandb sync <save_dir>/wandb/offline-run-*`."""
    from lightning.pytorch.loggers import WandbLogger

    if offline == "auto":
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not wandb_has_credentials()
    return WandbLogger(offline=bool(offline), **kwargs)

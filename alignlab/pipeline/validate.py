"""The checks that run before anything is built, so that a wrong setting costs a second, not a model load: the
trainer (and resuming with it), and the method's and the merge's own checks against it."""
from __future__ import annotations

from hydra.utils import get_class

from alignlab import strategies
from alignlab.errors import ConfigError, instantiate

MODES = ("train", "merge")


def validate(cfg) -> tuple[type, object]:
    """Check the whole run config; returns (the method's class, the merge plug-in)."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r} is not one of {list(MODES)}")
    method_cls = get_class(cfg.method._target_)
    merge = instantiate(cfg.merge)
    if cfg.mode == "train":
        merge.check_trainer(cfg.trainer)
        method_cls.check_trainer(cfg.method, cfg.trainer)
        strategies.check_trainer_config(cfg.trainer, cfg.ckpt_path, cfg.paths.output_dir)
    return method_cls, merge

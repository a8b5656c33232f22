"""Errors whose message says everything: the entry point prints `alignlab: error: <message>` without a traceback
and exits with the error's `exit_code`. User errors (config, data, paths: exit 2) name the key, file, row or path
that is wrong; run failures (training diverged: exit 1, interrupted: exit 130) name the step, the checkpoint kept
and what to do next."""


class UserError(Exception):
    """Base class of errors the user can fix by changing the config or the data."""

    exit_code = 2


class RunFailure(Exception):
    """A run that stopped for a reason its message states fully (no traceback needed)."""

    exit_code = 1


class TrainingDiverged(RunFailure):
    """A non-finite loss, gradient norm or weights: training stopped before the bad step was applied."""


class RunInterrupted(RunFailure):
    """Ctrl-C or SIGTERM: a checkpoint of the last finished step was saved; the message gives the resume command."""

    exit_code = 130


class ConfigError(UserError, ValueError):
    """A config value is invalid; the message names the key."""


class DataError(UserError, ValueError):
    """Bad input data; the message names the dataset (file), split and row."""


class ModelLoadError(UserError, OSError):
    """A model or tokenizer cannot be loaded; the message names the config key and the path."""


def instantiate(config, *args, **kwargs):
    """hydra.utils.instantiate, except that a UserError raised by the target's constructor (a ConfigError naming a
    method.* or merge.* key, say) comes out as itself, not wrapped in Hydra's InstantiationException, so the entry
    point prints its message and exits with code 2."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise

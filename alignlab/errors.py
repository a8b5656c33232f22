"""Errors about the user's input (config, data, paths). The entry point prints their message without a
traceback: the message itself names the config key, file, row or path that is wrong."""


class UserError(Exception):
    """Base class of errors the user can fix by changing the config or the data."""


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

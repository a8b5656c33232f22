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

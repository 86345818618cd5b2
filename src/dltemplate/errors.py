"""Errors a user can cause and fix: shown by the entry points as one message, without a traceback.

Each class also derives from the built-in error it refines, so `except ValueError` and the like keep
working. Anything else raised during a run is unexpected and keeps its full traceback.
"""

import re

# torch.save's writer on a full disk raises a RuntimeError without errno or file name
TORCH_WRITE_FAILED = re.compile(r"PytorchStreamWriter failed writing|file write failed|unexpected pos \d+ vs \d+")


class UserError(Exception):
    """A mistake in the data, the configuration or the command line; the message says how to fix it."""


class ConfigError(UserError, ValueError):
    """A configuration value or override that cannot work."""


class DataError(UserError, ValueError):
    """Data that cannot be used as it is (bad values, missing columns, too few rows, ...)."""


class MissingColumnError(UserError, KeyError):
    """A column the configuration names is not in the file."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder that should be there is not."""


class OutputExistsError(UserError, FileExistsError):
    """An output would replace another run's results."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: damaged, from another task, or naming what it may not."""


class DivergedError(UserError, FloatingPointError):
    """Training reached a NaN or infinite loss: a learning rate too high, or such values in the inputs."""


class SearchFailedError(UserError, RuntimeError):
    """Every trial of a search failed: there is no result; the message names the first trial's cause."""


class ExportError(UserError, RuntimeError):
    """An exported model that does not reproduce its checkpoint's outputs within the tolerance."""

"""What every entry point shares: a user's mistake is one message on stderr, not a traceback.

An error of the `dltemplate.errors.UserError` family (bad data, a wrong column, a checkpoint that
does not fit, an unknown choice) is printed as `error: <message>` and the command exits with
status 2. `HYDRA_FULL_ERROR=1` shows the full traceback instead; any other exception is unexpected
and keeps its traceback. In a multirun, `train.main` records a failing job and the sweep goes on.
"""

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from dltemplate.errors import UserError

T = TypeVar("T")
USAGE_ERROR = 2


def run_entry_point(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Call `task(cfg)` (an entry point's Hydra task function), reporting a user error in one message."""
    try:
        return task(cfg)
    except (UserError, MissingMandatoryValue) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = str(error).strip()
        if isinstance(error, MissingMandatoryValue):
            key = getattr(error, "full_key", None) or "a required setting"
            message = f"{key} is not set (its value is ???); pass {key}=<value> on the command line"
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None

"""What every entry point shares: a user's mistake is one message on stderr, not a traceback.

An error of the `dltemplate.errors.UserError` family (bad data, a wrong column, a checkpoint that
does not fit, an unknown choice) is printed as `error: <message>` and the command exits with
status 2. A run stopped by SIGTERM or SIGINT prints `interrupted: <what was saved>` and exits with
128 + the signal's number. `HYDRA_FULL_ERROR=1` shows the full traceback instead; any other exception is unexpected
and keeps its traceback. In a multirun, `train.main` records a failing job and the sweep goes on.
"""

import difflib
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from dltemplate.callbacks.interrupt import RunInterrupted
from dltemplate.errors import ConfigError, UserError

T = TypeVar("T")
USAGE_ERROR = 2


def run_entry_point(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Call `task(cfg)` (an entry point's Hydra task function), reporting a user error in one message."""
    try:
        return task(cfg)
    except RunInterrupted as stop:  # SIGTERM / Ctrl+C: recorded by train; the shell's status for a signal
        print(f"interrupted: {stop}", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    except (UserError, MissingMandatoryValue) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        exit_with_error(error)


def exit_with_error(error: UserError | MissingMandatoryValue) -> NoReturn:
    """Print a user error as one `error:` line on stderr and exit with status 2 (re-raise with HYDRA_FULL_ERROR=1)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    message = str(error).strip()
    if isinstance(error, MissingMandatoryValue):
        key = getattr(error, "full_key", None) or "a required setting"
        message = f"{key} is not set (its value is ???); pass {key}=<value> on the command line"
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR) from None


SWEEP_SYNTAX = re.compile(r",|^(range|choice|glob|interval|tag|sort|shuffle)\(")


def check_command_line(config_dir: str | Path, config_name: str, argv: Sequence[str] | None = None) -> None:
    """Refuse a misspelled setting or an unknown choice on the command line in one message, before Hydra starts.

    Hydra reports them itself in several lines that suggest `+key=value` (which would add the typo as
    a new setting) or list its search path. A command line of plain `key=value` overrides is composed
    once here; a key the config does not have gets the closest existing keys, an unknown choice the
    group's options; exits with status 2. Hydra's own settings (`hydra.run.dir=...`) are passed over;
    a command line with anything else (a sweep, a `+`/`~` addition or removal, Hydra's search path, a
    flag such as -m or --config-dir) is left to Hydra.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    argv = list(sys.argv[1:] if argv is None else argv)
    # Hydra's own settings (hydra.run.dir=...) do not change the config; its search path does
    own = [arg for arg in argv if arg.startswith(("hydra.", "hydra/")) and not arg.startswith("hydra.searchpath")]
    rest = [arg for arg in argv if arg not in own]
    checkable = [
        arg
        for arg in rest
        if "=" in arg and not arg.startswith(("-", "+", "~", "hydra")) and not SWEEP_SYNTAX.search(arg.split("=", 1)[1])
    ]
    # flags (-m, --config-dir, --help, ...), additions, removals, the search path and sweeps change what
    # the config holds in ways one composition cannot see: then Hydra checks the command line alone
    if not checkable or len(checkable) != len(rest):
        return
    overrides = checkable
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        try:
            compose(config_name, overrides=overrides)
            return
        except HydraException as error:
            message = _explain_choice(str(error), Path(config_dir))
            if message is None and "Could not override" in str(error):
                choices = [o for o in overrides if (Path(config_dir) / o.split("=", 1)[0]).is_dir()]  # task=...
                try:
                    message = _explain_key(str(error), compose(config_name, overrides=choices))
                except HydraException:
                    message = None
    if message is None:
        return  # not a misspelling: Hydra says it its own way
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise ConfigError(message)
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def _explain_key(text: str, composed: DictConfig) -> str | None:
    """One line for Hydra's "Could not override 'a.b'" (no such key), with the closest existing keys."""
    found = re.search(r"Could not override '([^']+)'", text)
    if found is None:
        return None
    key = found.group(1)
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(composed, parent) if parent else composed
    if not isinstance(node, DictConfig):
        return f"{key} is not a setting: {parent} holds a value, not settings; check the spelling"
    keys = sorted(str(k) for k in node)
    close = difflib.get_close_matches(leaf, keys, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(f'{parent}.{k}' if parent else k for k in close)}? " if close else ""
    return (
        f"{key} is not a setting of {parent or 'the config'}; {hint}its settings are {', '.join(keys)} "
        f"(to add a new key on purpose, write +{key}=...)"
    )


def _explain_choice(text: str, config_dir: Path) -> str | None:
    """One line for Hydra's "Could not find 'group/option'", with the group's options and the closest ones."""
    found = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if found is None:
        return None
    folder, option = config_dir / found.group(1), found.group(2)
    group = found.group(1).replace("/", ".")
    options = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    close = difflib.get_close_matches(option, options, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(f'{group}={c}' for c in close)}? " if close else ""
    return f"{group}={option} is not a choice of {group}; {hint}choices: {', '.join(options)}"

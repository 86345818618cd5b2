"""What every entry point shares: a user's mistake is one message on stderr, not a traceback.

An error of the `dltemplate.errors.UserError` family (bad data, a wrong column, a checkpoint that
does not fit, an unknown choice) is printed as `error: <message>` and the command exits with
status 2. A run stopped by SIGTERM or SIGINT prints `interrupted: <what was saved>` and exits with
128 + the signal's number. `HYDRA_FULL_ERROR=1` shows the full traceback instead; any other exception is unexpected
and keeps its traceback. In a multirun, `train.main` records a failing job and the sweep goes on.
"""

import difflib
import errno
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from dltemplate.callbacks.interrupt import RunInterrupted
from dltemplate.errors import TORCH_WRITE_FAILED, ConfigError, UserError

T = TypeVar("T")
USAGE_ERROR = 2


def run_entry_point(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Call `task(cfg)` (an entry point's Hydra task function), reporting a user error in one message.

    Besides the `UserError` family, a setting left at ??? or naming an unset environment variable,
    and a file system that refuses a write (full, read-only, not permitted) are the user's to fix:
    one line each. Any other exception keeps its traceback.
    """
    try:
        return task(cfg)
    except RunInterrupted as stop:  # SIGTERM / Ctrl+C: recorded by train; the shell's status for a signal
        print(f"interrupted: {stop}", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    except Exception as error:
        message = user_message(error, cfg)
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None


def exit_with_error(error: UserError | MissingMandatoryValue) -> NoReturn:
    """Print a user error as one `error:` line on stderr and exit with status 2 (re-raise with HYDRA_FULL_ERROR=1)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"error: {user_message(error)}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR) from None


# errno → what it means for the user and how to fix it; `{path}` is the file or folder refused
DISK_ERRORS = {
    errno.ENOSPC: "no space left on the device holding {path}; free some space, or point paths.log_dir "
    "(paths.cache_dir for cached data) at another disk",
    errno.EDQUOT: "the disk quota is exceeded for {path}; free some space, or point paths.log_dir "
    "(paths.cache_dir for cached data) at another disk",
    errno.EROFS: "{path} is on a read-only file system; point paths.log_dir (or hydra.run.dir, "
    "paths.cache_dir) at a writable folder",
    errno.EACCES: "permission denied for {path}; make it writable, or point paths.log_dir (or hydra.run.dir, "
    "paths.cache_dir) at a folder you may write",
    errno.EPERM: "operation not permitted on {path}; point paths.log_dir (or hydra.run.dir, paths.cache_dir) "
    "at a folder you may write",
}
MISSING_ENV = re.compile(r"Environment variable '([^']+)' not found")


def user_message(error: BaseException, cfg: DictConfig | None = None) -> str | None:
    """The one-line message for an error the user can fix, or None for an unexpected one (a traceback).

    `cfg`: the run's config, whose output directory is named when a refused write does not say
    which file it was.
    """
    if isinstance(error, UserError):
        return str(error).strip()
    if isinstance(error, MissingMandatoryValue):
        key = getattr(error, "full_key", None) or "a required setting"
        return f"{key} is not set (its value is ???); pass {key}=<value> on the command line"
    if isinstance(error, InterpolationResolutionError):
        key = getattr(error, "full_key", None) or "a setting"
        missing = MISSING_ENV.search(str(error))
        if missing is not None:
            name = missing.group(1)
            return (
                f"{key} reads the environment variable {name}, which is not set; set it "
                f"({name}=... python ...) or give a default: ${{oc.env:{name},<default>}}"
            )
        return f"{key} cannot be resolved: {str(error).splitlines()[0]}"
    disk = _disk_error(error)
    if disk is not None:
        path = disk.filename or _output_dir(cfg)
        return DISK_ERRORS[disk.errno].format(path=path) + f" ({os.strerror(disk.errno)})"
    if isinstance(error, RuntimeError) and TORCH_WRITE_FAILED.search(str(error)):
        return (
            f"writing a file under {_output_dir(cfg)} failed ({str(error).splitlines()[0]}); the disk is "
            "likely full: free some space, or point paths.log_dir (paths.cache_dir for cached data) at another disk"
        )
    return None


def _output_dir(cfg: DictConfig | None) -> str:
    """The run's directory, for messages about a write that names no file."""
    try:
        found = OmegaConf.select(cfg, "paths.output_dir", default=None) if cfg is not None else None
    except Exception:  # an interpolation that cannot be resolved here
        found = None
    return f"the run directory {found}" if found else "a file being written"


def _disk_error(error: BaseException) -> OSError | None:
    """The OSError of a refused write behind `error` (itself, or what caused it: torch.save wraps them)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_ERRORS:
            return error
        error = error.__cause__ or error.__context__
    return None


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

    report_hydra_errors()
    if argv is None:  # what Hydra will parse: quote the paths its grammar would split
        sys.argv[1:] = quote_paths(sys.argv[1:])
    argv = quote_paths(sys.argv[1:] if argv is None else argv)
    unset = _unset_environment_variable(argv)
    if unset is not None:
        _refuse(unset)
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
    _refuse(message)


def _refuse(message: str) -> None:
    """Stop before Hydra starts: `error: message`, status 2 (a `ConfigError` with HYDRA_FULL_ERROR=1)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise ConfigError(message)
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def quote_paths(argv: Sequence[str]) -> list[str]:
    """`argv` with each `key=value` whose value is a path Hydra's grammar cannot take unquoted made a
    quoted string: `ckpt_path=logs/rings/runs/2025-01-01_lr=0.01_hidden=64,64` (run directories are
    named after their overrides) or `input=data/a=b.csv`.

    A value with `=` is never valid unquoted; one with `,` is a sweep unless it names an existing
    file or folder. Values already quoted, interpolations and sweep functions are left alone.
    """
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        plain = sep and not arg.startswith("-") and value and value[0] not in "'\"[{" and "${" not in value
        if plain and not SWEEP_FUNCTION.match(value) and ("=" in value or ("," in value and Path(value).exists())):
            if "'" not in value:
                arg = f"{key}='{value}'"
            elif '"' not in value:
                arg = f'{key}="{value}"'
        quoted.append(arg)
    return quoted


SWEEP_FUNCTION = re.compile(r"^(range|choice|glob|interval|tag|sort|shuffle|str|int|float|bool|json_str)\(")
ENV_INTERPOLATION = re.compile(r"\$\{oc\.env:([^,}]+)\}")  # ${oc.env:NAME} without a default


def _unset_environment_variable(argv: Sequence[str]) -> str | None:
    """The message for a command-line value reading an unset environment variable (`x=${oc.env:NAME}`).

    Hydra resolves the command line while naming the run directory, so the error would otherwise
    be a traceback about `hydra.run.dir`."""
    for arg in argv:
        key, _, value = arg.partition("=")
        for name in ENV_INTERPOLATION.findall(value):
            if name.strip() not in os.environ:
                name = name.strip()
                return (
                    f"{key.lstrip('+~')}={value} reads the environment variable {name}, which is not set; set it "
                    f"({name}=... python ...) or give a default: ${{oc.env:{name},<default>}}"
                )
    return None


def report_hydra_errors() -> None:
    """Have Hydra report a user's mistake it meets itself (a run directory it may not create, a value
    that cannot be resolved) as one `error:` line with status 2, like `run_entry_point`.

    Hydra prints its own failures through `hydra._internal.utils.run_and_report`, which is wrapped
    here; without that function (another Hydra version) Hydra reports them its own way.
    """
    try:
        from hydra._internal import utils
    except ImportError:  # pragma: no cover - another Hydra layout
        return
    original = getattr(utils, "run_and_report", None)
    if original is None or getattr(original, "reports_user_errors", False):
        return

    def run_and_report(func: Callable[[], T]) -> T:
        def checked() -> T:
            try:
                return func()
            except Exception as error:
                message = user_message(error)
                if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"error: {message}", file=sys.stderr)
                raise SystemExit(USAGE_ERROR) from None

        return original(checked)

    run_and_report.reports_user_errors = True
    utils.run_and_report = run_and_report


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

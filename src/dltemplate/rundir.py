"""A run's directory: claimed once and atomically, its record (result.json) written atomically.

A fresh run claims its directory by creating `.claimed` exclusively (O_EXCL), so of two runs started
with the same `hydra.run.dir` exactly one proceeds. `train.py` claims it before Hydra writes there
(`ClaimRunDir`), so a refused run leaves the other run's `.hydra/` and log as they were. A multirun
claims its sweep directory the same way before any job starts: Hydra writes each job's `.hydra/` and
log before the job runs, so its jobs' directories are safe only inside a sweep directory of its own
(each job then claims its subdirectory as a single run does). Only
global rank 0 claims: DDP ranks, torchrun processes and nodes share the directory on purpose. A
resumed run writes into the directory of the run it continues, under a lock held while it runs, so
two resumes of one run cannot interleave.
"""

import json
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.experimental.callback import Callback
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, open_dict, read_write
from omegaconf.errors import MissingMandatoryValue

from dltemplate.errors import OutputExistsError, UserError
from dltemplate.files import write_text_atomically

RESULT_FILE = "result.json"
CLAIM_FILE = ".claimed"
RESULTS = ("checkpoints", RESULT_FILE, "events.out.tfevents.*")  # what another run leaves in its directory
SWEEP_RESULTS = ("multirun.yaml", "summary.csv", f"*/{RESULT_FILE}")  # ... and another sweep in its own

_held: list[FileLock] = []  # resume locks, released when the resumed run ends
_claimed_at_start: set[Path] = set()  # claimed by ClaimRunDir, before the run itself asks for them


def claim(output_dir: str | Path, sweep: bool = False) -> bool:
    """Make `output_dir` this run's, or refuse it if another run has it; True on global rank 0 (which claims).

    `sweep`: `output_dir` is a multirun's sweep directory (`hydra.sweep.dir`), refused when another
    sweep or run has left its results there.
    """
    if rank_zero_only.rank != 0:
        return False
    output_dir = Path(output_dir)
    if output_dir.resolve() in _claimed_at_start:  # this process claimed it as Hydra started
        _claimed_at_start.discard(output_dir.resolve())
        return True
    output_dir.mkdir(parents=True, exist_ok=True)
    names = (*RESULTS, *SWEEP_RESULTS) if sweep else RESULTS
    used = [
        {"events.out.tfevents.*": "TensorBoard events", f"*/{RESULT_FILE}": f"jobs' {RESULT_FILE}"}.get(name, name)
        for name in names
        if any(_has_content(p) for p in output_dir.glob(name))
    ]
    try:
        if used:
            raise FileExistsError
        fd = os.open(output_dir / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        what = f"results of another run ({', '.join(used)})" if used else "another run started in it"
        if sweep:
            raise OutputExistsError(
                f"{output_dir} already holds {what}; choose a new hydra.sweep.dir (a multirun's jobs "
                "would rewrite the records of the runs there)"
            ) from None
        raise OutputExistsError(
            f"{output_dir} already holds {what}; choose a new hydra.run.dir, or pass ckpt_path=<that run> to resume it"
        ) from None
    with os.fdopen(fd, "w") as file:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, file)
    return True


class ClaimRunDir(Callback):
    """Hydra callback: claim `hydra.run.dir` before Hydra writes its `.hydra/` files and log there.

    Hydra writes `.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml` and `<job>.log` into the run
    directory before the task starts; a run refused there (`hydra.run.dir=<a finished run>`) would
    already have rewritten that run's records. Claimed here, a refused run stops before: one
    `error:` line, exit status 2, nothing written. The directory's name is fixed in the config
    (its `${now:...}` resolved once), so Hydra runs in the directory claimed.

    Args:
        job_names: The entry points (Hydra job names: the script's name) whose runs claim their
            directory (train); others, such as tune.py continuing a study in its directory, do not.
    """

    def __init__(self, job_names: Sequence[str] = ("train",)) -> None:
        self.job_names = set(job_names)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.job.name not in self.job_names or rank_zero_only.rank != 0:
            return
        from dltemplate.cli import exit_with_error

        try:
            run_dir = Path(str(config.hydra.run.dir))
            with read_write(config), open_dict(config):
                config.hydra.run.dir = str(run_dir)
            if _resumes_in(config.get("ckpt_path"), run_dir):
                return  # resumed in place: the run's own check (build.claim_output_dir) applies
            claim(run_dir)
        except (UserError, MissingMandatoryValue) as error:
            exit_with_error(error)
        _claimed_at_start.add(run_dir.resolve())

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Claim `hydra.sweep.dir` before the launcher starts a job there (as `on_run_start` a run's)."""
        if config.hydra.job.name not in self.job_names or rank_zero_only.rank != 0:
            return
        from dltemplate.cli import exit_with_error

        try:  # its ${now:...} resolved here is the one every job resolves (Hydra copies the cache)
            claim(Path(str(config.hydra.sweep.dir)), sweep=True)
        except (UserError, MissingMandatoryValue) as error:
            exit_with_error(error)


def _resumes_in(ckpt_path: Any, run_dir: Path) -> bool:
    """Whether `ckpt_path` is `run_dir` or a file in it (or "last", found later): a resume in place."""
    if ckpt_path is None:
        return False
    if str(ckpt_path) == "last":
        return True
    path, run_dir = Path(str(ckpt_path)).resolve(), run_dir.resolve()
    return path == run_dir or run_dir in path.parents


def hold_for_resume(run_dir: str | Path) -> None:
    """Lock `run_dir` for this process while it resumes the run there (global rank 0 only)."""
    if rank_zero_only.rank != 0:
        return
    lock = FileLock(Path(run_dir) / ".resume.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutputExistsError(f"{run_dir} is being resumed by another process; wait for it to end") from None
    _held.append(lock)


def release_resumed() -> None:
    """Release the locks `hold_for_resume` took (when the resumed run ends)."""
    while _held:
        _held.pop().release()


@rank_zero_only
def write_result(
    output_dir: str | Path,
    status: str,
    metrics: dict[str, float],
    error: str | None = None,
    **extra: Any,
) -> None:
    """Record how a run ended in `<output_dir>/result.json` (atomically): status, metrics, overrides, error."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    record = {
        "status": status,
        "overrides": overrides,
        "metrics": metrics,
        "output_dir": str(output_dir),
        "error": error,
        **extra,
    }
    write_text_atomically(Path(output_dir) / RESULT_FILE, json.dumps(record, indent=2, default=float))


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """The result record of a run, or None when it has none or it cannot be read."""
    try:
        record = json.loads((Path(run_dir) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _has_content(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))

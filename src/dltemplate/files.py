"""Writing files safely: atomic replacement, caches built once under a lock, outputs never clobbered.

Every writer of the project goes through these, so an interrupted or failed write (a kill, a full
disk) never leaves a half-written file where a complete one is expected.
"""

import errno
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import torch
from filelock import FileLock

from dltemplate.errors import TORCH_WRITE_FAILED, OutputExistsError

log = logging.getLogger(__name__)
T = TypeVar("T")


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary path)` beside `path`, flush it to disk, then rename it over `path` in one step.

    The temporary file is in `path`'s own folder (never $TMPDIR), so the rename is one step on one
    filesystem, not a copy. If `write` fails (a full disk, a kill), `path` keeps its previous
    content, or stays absent; after the rename, a power cut leaves the new content, not a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        try:
            write(partial)
        except RuntimeError as error:  # torch.save on a full disk: no errno, no file name
            if not TORCH_WRITE_FAILED.search(str(error)):
                raise
            raise OSError(errno.ENOSPC, f"writing failed ({str(error).splitlines()[0]})", str(path)) from error
        _fsync(partial)
        os.replace(partial, path)
        _fsync(path.parent)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk; folders are skipped where the OS cannot open them."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():
            return  # Windows cannot open a folder
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomically(path: str | Path, text: str) -> Path:
    """`write_atomically` for a text file."""
    return write_atomically(path, lambda p: p.write_text(text))


def locked(path: str | Path) -> FileLock:
    """An inter-process lock for work on `path` (parallel jobs, DDP ranks on one node)."""
    return FileLock(f"{path}.lock")


def cached(path: Path | None, build: Callable[[], T], what: str) -> T:
    """`build()`'s result, saved in `path` (torch.save of plain data) and loaded from there next time.

    Built once under a lock, whatever the number of processes; a cache file that cannot be read
    (an older format, a damaged disk) is rebuilt with a warning. `path=None` builds every time.
    """
    if path is None:
        return build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        remove_stale_parts(path)  # left by a write that was killed: no write runs without the lock
        if path.is_file():
            try:
                return torch.load(path, weights_only=True)
            except Exception as error:
                log.warning("%s cache %s is unreadable (%s); building it again", what, path, type(error).__name__)
        value = build()
        write_atomically(path, lambda p: torch.save(value, p))
        log.info("%s built once; cached in %s", what, path)
    return value


def cached_folder(folder: Path, build: Callable[[Path], None], marker: str, what: str) -> Path:
    """`folder`, filled once by `build(partial folder)` (which creates it and writes `marker` last), then reused.

    The folder counterpart of `cached`: built under a lock whatever the number of processes, into a
    partial folder that replaces `folder` in one rename only when complete, so a killed run leaves
    either the finished folder or none (an incomplete one, without `marker`, is built again).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with locked(folder):
        remove_stale_parts(folder)  # left by a build that was killed: no build runs without the lock
        if (folder / marker).is_file():
            return folder
        partial = folder.with_name(f".{folder.name}.{os.getpid()}.part")
        try:
            build(partial)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(partial, folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        log.info("%s built once; cached in %s", what, folder)
    return folder


def remove_stale_parts(path: Path) -> list[Path]:
    """Remove the partial files or folders of `path` (`.<name>.<pid>.part`, see `write_atomically` and
    `cached_folder`) that killed processes left behind; return them.

    Only for paths written under `locked(path)`: holding the lock, no other process is writing one.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.\d+\.part")
    stale = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)] if path.parent.is_dir() else []
    for part in stale:
        log.info("removing %s, left by an interrupted build", part)
        if part.is_dir() and not part.is_symlink():
            shutil.rmtree(part, ignore_errors=True)
        else:
            part.unlink(missing_ok=True)
    return stale


def files_key(paths: Iterable[Path], *settings: object) -> str:
    """A key that changes when any of `paths` is added, removed, resized or touched, or `settings` change.

    Content is not read (hashing every image of a folder on every run would cost more than the
    cache saves): a file replaced by one of the same size with its modification time kept keeps the
    key. The README says so where the caches are described.
    """
    key = hashlib.sha1(repr(settings).encode())
    for path in paths:
        stat = path.stat()
        key.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return key.hexdigest()[:16]


def output_path(path: str | Path, overwrite: bool) -> Path:
    """`path` for a new output file; an existing one is refused unless `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another output=... or pass overwrite=true")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path

"""Fetch a dataset file from its public source when it is not already on disk, and check its MD5."""

import contextlib
import logging
import shutil
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse
from urllib.request import url2pathname

from torchvision.datasets.utils import calculate_md5, check_integrity, download_url

from dltemplate.errors import MissingFileError
from dltemplate.files import locked, write_atomically, write_text_atomically

log = logging.getLogger(__name__)
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip", ".gz", ".bz2", ".xz")  # truncation shows only when unpacked


def ensure_file(path: str | Path, url: str | None, md5: str | None, layout: str) -> Path:
    """Return `path`, downloading it from `url` first if it is missing; with `md5`, check it either way.

    The download is written beside `path` and renamed only once complete and checked, so an
    interrupted download never looks like data. A lock keeps parallel jobs and DDP ranks from
    downloading the same file twice. An archive already there is checked against `md5` too, and
    named in a warning if it differs (see `verify_md5`); a plain file (a CSV) is checked by reading it.

    Args:
        path: Where the file should be.
        url: Its public source (http(s):// or file://); None means it must already be there.
        md5: Expected checksum of the file, or None to skip the check.
        layout: The expected layout, quoted in the error when the file cannot be had.

    Raises:
        MissingFileError: The file is missing and could not be downloaded; says where it was looked
            for, what layout is expected and why the download failed.
    """
    path = Path(path)
    if path.is_file():
        if md5 is not None and path.name.endswith(ARCHIVES):
            verify_md5(path, md5)
        return path
    hint = f"expected layout: {layout}. Point DATA_DIR (or paths.data_dir) at a folder with that layout"
    if url is None:
        raise MissingFileError(f"{path} does not exist; {hint}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        if path.is_file():  # another process finished the download while we waited
            return path
        try:
            write_atomically(path, lambda partial: _fetch(url, partial, md5))
        except (URLError, OSError, RuntimeError) as error:
            raise MissingFileError(f"{path} does not exist and downloading {url} failed ({error}); {hint}") from None
        if md5 is not None:
            _remember_md5(path, md5)
    return path


def verify_md5(path: Path, md5: str) -> bool:
    """Whether `path` has the MD5 `md5`; if not, a warning names it and says what to do.

    A file whose MD5 differs is damaged (an interrupted copy: reading it then fails with an error
    that names it) or another version of the data (a repacked archive, an edited CSV), which may
    be what the user wants; so it is a warning, not an error.
    """
    actual = file_md5(path)
    if actual != md5:
        log.warning(
            "%s is not the published file: its MD5 is %s, not %s. It is damaged (an interrupted download or "
            "copy?) or another version of it; if it is damaged, delete it to download it again",
            path,
            actual,
            md5,
        )
    return actual == md5


def file_md5(path: Path) -> str:
    """The MD5 of `path`, hashed once per version of the file.

    It is remembered in a small sidecar (`.<name>.md5`) with the file's size and modification time,
    so an archive of many megabytes is not hashed on every run.
    """
    stamp = _stamp(path)
    sidecar = _sidecar(path)
    if sidecar.is_file():
        md5, _, remembered = sidecar.read_text().strip().partition(" ")
        if remembered == stamp:
            return md5
    md5 = calculate_md5(str(path))
    _remember_md5(path, md5)
    return md5


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.md5")


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def _remember_md5(path: Path, md5: str) -> None:
    with contextlib.suppress(OSError):  # a read-only data folder: the file is hashed again next time
        write_text_atomically(_sidecar(path), f"{md5} {_stamp(path)}\n")


def _fetch(url: str, destination: Path, md5: str | None) -> None:
    """Download (or, for file:// URLs, copy) `url` to `destination` and check its MD5."""
    if urlparse(url).scheme == "file":  # torchvision's downloader cannot read file:// responses
        shutil.copyfile(url2pathname(urlparse(url).path), destination)
        if not check_integrity(str(destination), md5):
            raise RuntimeError(f"MD5 of the copy is not {md5}")
    else:
        download_url(url, root=str(destination.parent), filename=destination.name, md5=md5)

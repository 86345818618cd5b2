"""Fetch a dataset file from its public source when it is not already on disk."""

import os
import shutil
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse
from urllib.request import url2pathname

from filelock import FileLock
from torchvision.datasets.utils import check_integrity, download_url

from dltemplate.errors import MissingFileError


def ensure_file(path: str | Path, url: str | None, md5: str | None, layout: str) -> Path:
    """Return `path`, downloading it from `url` first if it is missing.

    The download goes to `<name>.part` and is renamed only once complete and checked, so an
    interrupted download never looks like data. A lock file keeps parallel jobs and DDP ranks from
    downloading the same file twice.

    Args:
        path: Where the file should be.
        url: Its public source (http(s):// or file://); None means it must already be there.
        md5: Expected checksum of the download, or None to skip the check.
        layout: The expected layout, quoted in the error when the file cannot be had.

    Raises:
        FileNotFoundError: The file is missing and could not be downloaded; says where it was looked
            for, what layout is expected and why the download failed.
    """
    path = Path(path)
    if path.is_file():
        return path
    hint = f"expected layout: {layout}. Point DATA_DIR (or paths.data_dir) at a folder with that layout"
    if url is None:
        raise MissingFileError(f"{path} does not exist; {hint}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if path.is_file():  # another process finished the download while we waited
            return path
        partial = path.with_name(path.name + ".part")
        try:
            _fetch(url, partial, md5)
        except (URLError, OSError, RuntimeError) as error:
            partial.unlink(missing_ok=True)
            raise MissingFileError(f"{path} does not exist and downloading {url} failed ({error}); {hint}") from None
        os.replace(partial, path)
    return path


def _fetch(url: str, destination: Path, md5: str | None) -> None:
    """Download (or, for file:// URLs, copy) `url` to `destination` and check its MD5."""
    if urlparse(url).scheme == "file":  # torchvision's downloader cannot read file:// responses
        shutil.copyfile(url2pathname(urlparse(url).path), destination)
        if not check_integrity(str(destination), md5):
            raise RuntimeError(f"MD5 of the copy is not {md5}")
    else:
        download_url(url, root=str(destination.parent), filename=destination.name, md5=md5)

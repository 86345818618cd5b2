"""Pretrained files from the Hugging Face hub without a network: the cache or one clear error, not retries.

`huggingface_hub` retries a download that cannot connect several times per file, and timm and
transformers log each failure before the last one's traceback (about a minute and a hundred lines
here). `from_hub` looks first: when the hub cannot be reached (`HF_HUB_OFFLINE=1`, or its host does
not answer within `PROBE_SECONDS`) it turns the libraries' offline mode on for the load, so the file
comes from the cache or not at all, and a miss is one `MissingFileError` that says what was looked
for, in which cache, and how to provide it.
"""

import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from dltemplate.errors import MissingFileError

log = logging.getLogger(__name__)
T = TypeVar("T")
PROBE_SECONDS = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_reachable() -> bool:
    """False under `HF_HUB_OFFLINE=1`, or when the hub's host does not accept a connection in `PROBE_SECONDS`.

    Behind a proxy the host is not probed (the libraries go through the proxy themselves): True.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return True
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=PROBE_SECONDS).close()
    except OSError:
        return False
    return True


@contextmanager
def offline_mode() -> Iterator[None]:
    """huggingface_hub (and so timm and transformers) in offline mode: files come from the cache only."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def hub_cache() -> Path:
    """The Hugging Face hub cache folder (`HF_HUB_CACHE`, else `HF_HOME/hub`, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def from_hub(load: Callable[[], T], what: str, setting: str, provide: str, cache: Path | None = None) -> T:
    """`load()`, which reads `what` from the hub (or its cache); offline, from the cache alone.

    When the hub cannot be reached and the cache lacks the file, the error names `what`, the cache
    folder (`cache`, default the hub's), and how to provide it: `provide` (e.g. "net.weights=<file>"),
    filling the cache, or running once online. `setting` is what asked for it (e.g. "net.pretrained=true").
    """
    if hub_reachable():
        return load()
    cache = cache or hub_cache()
    try:
        with offline_mode():
            return load()
    except (OSError, ValueError, RuntimeError) as error:
        log.debug("offline load of %s failed: %r", what, error)
        raise MissingFileError(
            f"{setting}: {what} not found in the cache {cache}, and the hub cannot be reached "
            f"({'HF_HUB_OFFLINE=1' if _offline_by_choice() else 'no network'}); provide it: {provide}, or fill "
            "the cache (run once online, or copy a cache that has it and set HF_HOME to it)"
        ) from None


def _offline_by_choice() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on") for name in ("HF_HUB_OFFLINE",))

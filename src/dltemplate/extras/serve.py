"""Serve entry point: an HTTP server (LitServe) that answers with the predictions `predict.py` writes.

One request is a JSON object whose key says what it holds; which key a model takes follows from its
data module (the server's `/info` names it):

    {"rows": [{"Pclass": 3, "Sex": "male", ...}, ...]}     tables: one object per row, raw columns
    {"texts": ["A gripping film", ...]}                   texts
    {"images": ["<base64 of a PNG/JPEG file>", ...]}       images
    {"horizon": 7, "series": [{"date": ..., ...}, ...]}   series: steps to forecast; the series
                                                          defaults to the one trained on
    {"features": [[1.0, 2.0], ...]}                       the synthetic tasks: input vectors

The answer is {"predictions": [...]}, one object per input (per future step for series) with the
columns of predict.py's CSV. Requests that arrive together are predicted in one batch
(`max_batch_size`, `batch_timeout`); a request the model cannot take gets a 4xx status and
{"detail": <what is wrong>}, and never fails the requests batched with it.
"""

import base64
import binascii
import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import litserve
import pandas as pd
import torch
from fastapi.responses import JSONResponse
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from dltemplate.build import build_trainer
from dltemplate.checkpoint import find_checkpoint, restore
from dltemplate.data.predictions import class_table
from dltemplate.data.protocols import Forecasts, HasClasses, PredictsInputs
from dltemplate.errors import CheckpointError, DataError, UserError
from dltemplate.forecast import forecast_table, with_written_dates
from dltemplate.predict import finite_outputs, predict_table
from dltemplate.settings import check_settings

log = logging.getLogger(__name__)

# what a request for each kind of data module holds, and how to describe it in an error
INPUT_KEYS = {
    "table": ("rows", "a list of objects, one per row, with the raw columns (no target)"),
    "texts": ("texts", "a list of strings"),
    "images": ("images", "a list of base64-encoded image files (PNG, JPEG, ...)"),
    "series": ("horizon", "the number of steps to forecast (an integer ≥ 1), optionally with 'series': rows"),
    "features": ("features", "a list of input vectors (lists of numbers)"),
}
# errors the prediction code raises for inputs it cannot take: a 400 for the request at fault
INPUT_ERRORS = (UserError, ValueError, KeyError, TypeError, FileNotFoundError)


def input_kind(datamodule: Any) -> str:
    """What a data module predicts from, by the protocols it implements (`dltemplate.data.protocols`):
    a series (`Forecasts`), its own `input_kind` (`PredictsInputs`), else the net's input vectors."""
    if isinstance(datamodule, Forecasts):
        return "series"
    if not isinstance(datamodule, PredictsInputs):
        return "features"
    if datamodule.input_kind not in ("table", "texts", "images"):
        raise CheckpointError(
            f"this checkpoint's data ({type(datamodule).__name__}) declares input_kind={datamodule.input_kind!r}, "
            "which serve.py cannot take: its requests hold a 'table', 'texts' or 'images'"
        )
    return datamodule.input_kind


@dataclass
class Rejected:
    """A request refused before prediction: the HTTP status and what is wrong."""

    status: int
    detail: str


@dataclass
class Decoded:
    """A request's inputs, ready to be predicted alone or batched with others."""

    inputs: Any  # rows (DataFrame), texts, image bytes, feature vectors, or the series request
    count: int  # inputs in this request, to split a batch's predictions back


class CheckpointAPI(litserve.LitAPI):
    """LitServe API around a checkpoint: decode JSON, predict with the project's own prediction code, encode.

    Args:
        ckpt_path: A checkpoint (or run directory) written by train.py.
        cfg: The serve config: `paths`, `trainer` and the limits `max_items` and `max_horizon`.
        max_batch_size: Requests predicted together at most; 1 turns batching off.
        batch_timeout: Seconds to wait for a batch to fill.
    """

    def __init__(self, ckpt_path: str, cfg: DictConfig, max_batch_size: int = 1, batch_timeout: float = 0.0) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.ckpt_path = ckpt_path
        self.cfg = OmegaConf.to_container(cfg, resolve=True)  # plain data: pickled into the worker process

    def setup(self, device: str) -> None:
        # said by Lightning's own predict loop on every call with this torch; nothing to act on here
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        cfg = OmegaConf.create(self.cfg)
        self.module, self.datamodule, _ = restore(self.ckpt_path, paths=cfg.paths)
        self.module.eval()
        self.kind = input_kind(self.datamodule)
        if str(device).startswith("cuda"):  # the device LitServe gave this worker (accelerator=auto|cuda)
            cfg.trainer.accelerator, cfg.trainer.devices = "gpu", [int(str(device).partition(":")[2] or 0)]
        self.trainer = build_trainer(cfg)
        self.max_items, self.max_horizon = cfg.max_items, cfg.max_horizon
        self.max_chars, self.max_image_pixels = cfg.max_chars, cfg.max_image_pixels

    def decode_request(self, request: dict) -> Decoded | Rejected:
        """Check the request's shape and size; the prediction code checks the values themselves."""
        key, expected = INPUT_KEYS[self.kind]
        if key not in request:
            return Rejected(422, f"this {self.kind} model needs '{key}': {expected}; the request has {sorted(request)}")
        value = request[key]
        if self.kind == "series":
            return self._decode_series(request)
        if not isinstance(value, list) or not value:
            return Rejected(422, f"'{key}' must be {expected}, not empty; got {type(value).__name__}")
        if len(value) > self.max_items:
            return Rejected(413, f"{len(value)} {key} in one request; at most {self.max_items} (max_items)")
        if self.kind == "table":
            if not all(isinstance(row, dict) for row in value):
                return Rejected(422, f"'rows' must be {expected}")
            empty = next((i for i, row in enumerate(value) if not row), None)
            if empty is not None:
                return Rejected(422, f"rows[{empty}] is an empty object; each row needs the raw columns (no target)")
            return self._checked_text(value, "rows") or Decoded(pd.DataFrame.from_records(value), len(value))
        if self.kind == "texts":
            if not all(isinstance(text, str) for text in value):
                return Rejected(422, f"'texts' must be {expected}")
            return self._checked_text(value, "texts") or Decoded(value, len(value))
        if self.kind == "images":
            return self._decode_images(value, expected)
        width = self.datamodule.dims["in_features"]
        if not all(
            isinstance(v, list) and len(v) == width and all(isinstance(x, (int, float)) for x in v) for v in value
        ):
            return Rejected(422, f"'features' must be {expected} of length {width}")
        return Decoded(torch.tensor(value, dtype=torch.float32), len(value))

    def _checked_text(self, value: Any, where: str) -> Rejected | None:
        """Refuse a string that is not valid Unicode (a lone surrogate) or longer than `max_chars`."""
        for place, text in _strings(value, where):
            if len(text) > self.max_chars:
                return Rejected(413, f"{place} holds {len(text)} characters; at most {self.max_chars} (max_chars)")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                return Rejected(
                    422,
                    f"{place} is not valid Unicode text: character {error.start} is a lone surrogate "
                    f"({text[error.start]!a}); send the text as UTF-8",
                )
        return None

    def _decode_images(self, value: list, expected: str) -> Decoded | Rejected:
        """Each image decoded from base64 and its size read from its header, before any pixel is decoded."""
        from dltemplate.image.data.image_files import image_pixels  # the image family's: only image models get here

        images = []
        for i, image in enumerate(value):
            try:
                data = base64.b64decode(image, validate=True)
            except (binascii.Error, TypeError, ValueError):
                return Rejected(422, f"'images' must be {expected}; images[{i}] is not valid base64")
            if not data:
                return Rejected(422, f"images[{i}] is empty: send the base64 of an image file (PNG, JPEG, ...)")
            size = image_pixels(data)
            if size is not None and size[0] > self.max_image_pixels:
                return Rejected(
                    413,
                    f"images[{i}] is {size[1]} pixels; at most {self.max_image_pixels} pixels "
                    "(max_image_pixels): send a smaller image",
                )
            images.append(data)
        return Decoded(images, len(images))

    def _decode_series(self, request: dict) -> Decoded | Rejected:
        horizon, rows = request["horizon"], request.get("series")
        if not isinstance(horizon, int) or isinstance(horizon, bool) or not 1 <= horizon <= self.max_horizon:
            return Rejected(422, f"'horizon' must be an integer from 1 to {self.max_horizon}; got {horizon!r}")
        if rows is not None and (not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows)):
            return Rejected(422, "'series' must be a list of objects, one per time step, with the series' columns")
        if rows is not None and len(rows) > self.max_items:
            return Rejected(413, f"{len(rows)} series rows in one request; at most {self.max_items} (max_items)")
        refused = None if rows is None else self._checked_text(rows, "series")
        if refused is not None:
            return refused
        return Decoded((horizon, None if rows is None else pd.DataFrame.from_records(rows)), horizon)

    def predict(self, x: Any) -> Any:
        """Predict one request, or a batch of them (a list) when batching is on."""
        if self.max_batch_size == 1:
            return self._predict_batch([x])[0]
        return self._predict_batch(x)

    def _predict_batch(self, requests: list[Decoded | Rejected]) -> list[pd.DataFrame | Rejected]:
        """All valid requests in one call; if that call fails on bad input, each request alone,
        so that only the request at fault gets the error."""
        valid = [r for r in requests if isinstance(r, Decoded)]
        tables: list[pd.DataFrame | Rejected] = []
        if valid:
            try:
                tables = self._predict_together(valid)
            except INPUT_ERRORS as error:
                if len(valid) == 1:
                    tables = [Rejected(400, _message(error))]
                else:
                    tables = [self._predict_batch([r])[0] for r in valid]
        answers = iter(tables)
        return [next(answers) if isinstance(r, Decoded) else r for r in requests]

    def _predict_together(self, requests: list[Decoded]) -> list[pd.DataFrame]:
        if self.kind == "series":  # recursive forecasts: one request at a time
            return [self._forecast(*r.inputs) for r in requests]
        if self.kind == "table":
            columns = {tuple(r.inputs.columns) for r in requests}
            if len(columns) > 1:  # joined, a request lacking a column would get it imputed instead of refused
                groups = {c: [r for r in requests if tuple(r.inputs.columns) == c] for c in columns}
                tables = {c: iter(self._predict_together(group)) for c, group in groups.items()}
                return [next(tables[tuple(r.inputs.columns)]) for r in requests]
            table = predict_table(self.module, self.datamodule, pd.concat([r.inputs for r in requests]), self.trainer)
        elif self.kind == "texts":
            table = predict_table(self.module, self.datamodule, [t for r in requests for t in r.inputs], self.trainer)
        elif self.kind == "images":
            table = self._predict_images([image for r in requests for image in r.inputs])
        else:
            table = self._predict_features(torch.cat([r.inputs for r in requests]))
        bounds = itertools.accumulate((r.count for r in requests), initial=0)
        return [table.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(bounds)]

    def _predict_images(self, images: list[bytes]) -> pd.DataFrame:
        """Images go through the data module's own file decoding, from a temporary folder."""
        with tempfile.TemporaryDirectory(prefix="serve-") as folder:
            files = [Path(folder) / f"image{i}" for i in range(len(images))]
            for path, data in zip(files, images, strict=True):
                path.write_bytes(data)
            try:
                table = predict_table(self.module, self.datamodule, [str(f) for f in files], self.trainer)
            except INPUT_ERRORS as error:  # name the image by its place in the request, not by the temporary file
                raise ValueError(_message(error).replace(f"{folder}/", "")) from None
        if len(table) != len(images):  # data.skip_corrupt dropped some
            raise ValueError(f"{len(images) - len(table)} image(s) could not be decoded")
        return table.drop(columns="file")

    def _predict_features(self, x: torch.Tensor) -> pd.DataFrame:
        """The synthetic tasks have no file format: their inputs are the net's input vectors."""
        loader = DataLoader(TensorDataset(x), batch_size=self.datamodule.batch_size)
        predictions = finite_outputs(torch.cat(self.trainer.predict(self.module, dataloaders=loader)))
        names = self.datamodule.class_names if isinstance(self.datamodule, HasClasses) else None
        if names:
            return class_table(predictions, names)
        return pd.DataFrame({"prediction": predictions.reshape(len(x), -1)[:, 0].numpy()})

    def _forecast(self, horizon: int, series: pd.DataFrame | None) -> pd.DataFrame:
        if series is not None:  # the data module checks dates and values; the number of series is the model's
            columns = list(self.datamodule.read(series)[1].columns)
            if len(columns) != len(self.datamodule.scale):
                raise DataError(
                    f"the model forecasts {len(self.datamodule.scale)} series; the request's rows have "
                    f"{len(columns)} value column(s) {columns}"
                )
        table = forecast_table(self.module, self.datamodule, series, horizon, self.cfg["floor"])
        return with_written_dates(table, self.datamodule).reset_index()  # dates as forecast.py writes them

    def encode_response(self, output: pd.DataFrame | Rejected) -> Any:
        if isinstance(output, Rejected):
            return JSONResponse({"detail": output.detail}, status_code=output.status)
        # through pandas' JSON writer: NaN becomes null (forecast dates are already text)
        return {"predictions": json.loads(output.to_json(orient="records", date_format="iso"))}


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """(place, string) for every string in a request's value (keys of row objects too)."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key, f"{where} (a column name)")
            yield from _strings(item, f"{where}.{key}" if isinstance(key, str) and key.isprintable() else where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")


def _message(error: Exception) -> str:
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return message.replace("the given DataFrame", "the request")


def build_server(cfg: DictConfig) -> litserve.LitServer:
    """The LitServe server for `cfg.ckpt_path`; the checkpoint is checked here, before any worker starts."""
    check_settings(cfg)  # LitServe's own checks come after the checkpoint is read, as tracebacks
    ckpt_path = find_checkpoint(cfg.ckpt_path)
    module, datamodule, run_cfg = restore(ckpt_path, paths=cfg.paths)
    kind = input_kind(datamodule)
    key, expected = INPUT_KEYS[kind]
    names = datamodule.class_names if isinstance(datamodule, HasClasses) else None
    metadata = {
        "checkpoint": str(ckpt_path),
        "task": run_cfg.get("task_name"),
        "input": {key: expected},
        "classes": list(names) if names else None,
    }
    del module, datamodule
    batch = cfg.max_batch_size if cfg.batching else 1
    api = CheckpointAPI(str(ckpt_path), cfg, max_batch_size=batch, batch_timeout=cfg.batch_timeout)
    return litserve.LitServer(
        api,
        accelerator=cfg.accelerator,
        devices=1,
        workers_per_device=cfg.workers,
        timeout=cfg.timeout,
        max_payload_size=int(cfg.max_payload_mb * 2**20),
        model_metadata=metadata,
    )


class ProcessWatch:
    """Watch the server's child processes (the HTTP server, the model worker, LitServe's manager) from a
    thread; when one exits while serving, stop the server (SIGTERM to this process) and remember which.

    LitServe notices neither a dead HTTP server process (the command would stay alive, not
    listening, silent) nor, cleanly, a dead model worker (its shutdown ends in an EOFError
    traceback); with the watch, `main` ends with one line and a non-zero status instead.
    """

    def __init__(self, interval: float = 0.5, grace: float = 20.0) -> None:
        self.interval, self.grace = interval, grace  # seconds between looks; for the graceful shutdown
        self.stopping = False  # set on a requested stop: children exiting then are expected
        self.died: str | None = None
        self.reported = False  # `main` printed the error line itself
        self.pid = os.getpid()  # the serving process; its forked children inherit the SIGTERM handler
        self._seen: dict[int, Any] = {}
        self._thread = threading.Thread(target=self._watch, daemon=True, name="dltemplate-process-watch")

    def start(self) -> "ProcessWatch":
        self._thread.start()
        return self

    def check(self) -> str | None:
        """What died among the children seen so far (recorded in `died`), or None."""
        # the set multiprocessing keeps of this process's children, read as it is: `active_children()`
        # first drops those that have exited, so a child killed before this watch's first look (the HTTP
        # server, right after it started) would never be seen
        for child in list(multiprocessing.process._children):
            self._seen.setdefault(child.pid, child)
        for pid, child in self._seen.items():
            if child.exitcode is not None and self.died is None:
                code = child.exitcode
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                self.died = f"the server's process {child.name} (pid {pid}) {how}"
        return self.died

    def _watch(self) -> None:
        while not self.stopping:
            try:
                died = self.check()
            except Exception as error:  # the watch must outlive a surprise in what it reads
                log.warning("the process watch could not look at the server's processes: %s", error)
                died = None
            if died is not None and not self.stopping:
                self.stopping = True
                os.kill(os.getpid(), signal.SIGTERM)  # LitServe's graceful shutdown of the rest
                time.sleep(self.grace)  # a shutdown that needs the dead process (its manager) may hang:
                self._end()  # end it here if `main` has not by then
                return
            time.sleep(self.interval)

    def stop_children(self, wait: float = 5.0) -> None:
        """Terminate the children still alive, then kill those that did not end within `wait` seconds.

        Needed because Python joins non-daemon children at exit without a time limit, and a LitServe
        process whose peer died may wait forever on a queue.
        """
        alive = [child for child in self._seen.values() if child.exitcode is None]
        for child in alive:
            with contextlib.suppress(Exception):
                child.terminate()
        deadline = time.monotonic() + wait
        for child in alive:
            with contextlib.suppress(Exception):
                child.join(max(0.0, deadline - time.monotonic()))
                if child.exitcode is None:
                    child.kill()

    def _end(self) -> None:
        """Stop what is left of the server and exit with status 1, printing the one line unless `main`
        did: `main` may have reported and still be waiting on a child at interpreter exit."""
        self.stop_children(wait=1.0)
        if not self.reported:
            print(f"error: {self.died}, so the server stopped; start it again", file=sys.stderr, flush=True)
        os._exit(1)


_watch: ProcessWatch | None = None


def _interrupt(signum: int, frame: Any) -> None:
    if _watch is None or _watch.pid != os.getpid():  # a forked HTTP server process, stopped by LitServe:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # uvicorn has shut down and re-raised the signal:
        os.kill(os.getpid(), signal.SIGTERM)  # end as SIGTERM ends a process, without a Python traceback
    _watch.stopping = True
    raise KeyboardInterrupt  # LitServe's graceful shutdown: it stops its worker processes


def main(cfg: DictConfig) -> None:
    """Hydra task function: serve until interrupted (Ctrl+C or SIGTERM), or until a process of the
    server dies: then one `error:` line and exit status 1."""
    global _watch
    signal.signal(signal.SIGTERM, _interrupt)  # `docker stop`, `kill`: stop the workers too
    server = build_server(cfg)
    log.info("serving %s on http://%s:%d/predict", cfg.ckpt_path, cfg.host, cfg.port)
    _watch = ProcessWatch().start()
    try:
        server.run(host=cfg.host, port=cfg.port, num_api_servers=1, generate_client_file=False, log_level="warning")
    except (KeyboardInterrupt, EOFError, OSError) as error:  # LitServe's manager gone with a dead worker: EOFError
        deadline = time.monotonic() + 5  # the watch may not have seen the death yet on a busy machine
        while _watch.check() is None and time.monotonic() < deadline:
            time.sleep(_watch.interval)
        if _watch.check() is None:
            if not isinstance(error, EOFError):
                raise
            # a connection to one of LitServe's processes closed: one of them is gone, which this process
            # can no longer name
            _watch.died = "a process of the server closed its connection to this one"
    finally:
        _watch.stopping = True
    if _watch.died is not None:
        _watch.reported = True
        print(f"error: {_watch.died}, so the server stopped; start it again", file=sys.stderr, flush=True)
        _watch.stop_children()
        raise SystemExit(1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LocalServer:
    """A server started by `local_server`: its URL, and its process id (also its process group's)."""

    url: str
    pid: int


@contextmanager
def local_server(command: Sequence[str], port: int, cwd: str | Path, timeout: float = 240) -> Iterator[LocalServer]:
    """Run a serve command (`python serve.py ... port=<port>`) on this machine; yield it once `/health`
    answers, and stop it (SIGTERM, then SIGKILL to its process group after 30 s) when the block ends.

    For tests and benchmarks; the command must bind 127.0.0.1 (the default `host`).
    """
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log_file:
        process = subprocess.Popen(command, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    log_file.seek(0)
                    output = log_file.read().decode(errors="replace")[-4000:]
                    state = f"exited with {process.returncode}" if process.poll() is not None else "not up in time"
                    raise RuntimeError(f"server {state}:\n{output}")
                time.sleep(0.5)
            yield LocalServer(url, process.pid)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)  # its own session: the server and its workers only
                    process.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False

"""Serving: the LitServe API in-process, and real HTTP requests on 127.0.0.1 for one model of every task family."""

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch

from dltemplate import api
from dltemplate.config import compose_config
from dltemplate.errors import CheckpointError
from dltemplate.extras.serve import CheckpointAPI, free_port, local_server
from dltemplate.forecast import with_written_dates
from dltemplate.train import train
from tests.datasets import covid_like_frame, provide_task_data, titanic_frame
from tests.helpers import CONFIG_DIR, ROOT, TASKS, run_script

FAMILIES = {  # one task per family, trained for a few batches
    "linear_regression": [],
    "titanic": [],
    "cifar2": ["net=simple_cnn"],
    "imdb": ["data.min_frequency=1", "net.buckets=4096"],
    "covid": [],
}


def trained(make_cfg, tmp_path: Path, task: str) -> str:
    overrides = provide_task_data(task, tmp_path / "data")
    extra = FAMILIES.get(task, [])
    return train(make_cfg(f"task={task}", "debug=limit_batches", "test=false", *extra, *overrides)).best_checkpoint


def records(table: pd.DataFrame) -> list[dict]:
    """A prediction table as the server writes it: JSON records (NaN → null, dates ISO 8601)."""
    return json.loads(table.to_json(orient="records", date_format="iso"))


def assert_same(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for row, want in zip(got, expected, strict=True):
        assert row.keys() == want.keys()
        for key, value in want.items():
            assert row[key] == (pytest.approx(value, rel=1e-5, abs=1e-6) if isinstance(value, float) else value), key


def requests_for(
    task: str, data_dir: Path, model: api.Model
) -> tuple[list[tuple[dict, list]], list[tuple[dict, int, str]]]:
    """Good requests with the predictions predict.py gives for them, and bad ones with their status and message."""
    if task == "linear_regression":
        x = [[1.0, 2.0], [0.0, 0.0], [-3.0, 4.5]]
        with torch.no_grad():
            expected = model.module(torch.tensor(x)).reshape(-1).tolist()
        good = [({"features": x}, [{"prediction": v} for v in expected])]
        bad = [({"features": [[1.0]]}, 422, "of length 2"), ({"rows": [{}]}, 422, "needs 'features'")]
    elif task == "titanic":
        frame = titanic_frame(6, seed=5).drop(columns="Survived")
        good = [({"rows": records(frame)}, records(model.predict(frame)))]
        bad = [
            ({"rows": records(frame.drop(columns="Sex"))}, 400, "Sex"),
            ({"rows": "all of them"}, 422, "'rows' must be"),
            ({"rows": [{**records(frame)[0], "Name": "\ud800"}]}, 422, "rows[0].Name is not valid Unicode text"),
            ({"rows": [{}]}, 422, "rows[0] is an empty object"),
        ]
    elif task == "cifar2":
        files = sorted((data_dir / "cifar2" / "test").rglob("*.*"))[:5]
        images = [base64.b64encode(f.read_bytes()).decode() for f in files]
        good = [({"images": images}, records(model.predict([str(f) for f in files]).drop(columns="file")))]
        bad = [
            ({"images": ["not base64 at all!"]}, 422, "not valid base64"),
            ({"images": [base64.b64encode(b"no image here").decode()]}, 400, "cannot decode image image0"),
            ({"images": [images[0], ""]}, 422, "images[1] is empty"),
        ]
    elif task == "imdb":
        texts = ["A wonderful, moving film.", "Boring and dull; a waste.", "", "zzz qqq"]
        good = [({"texts": texts}, records(model.predict(texts)))]
        bad = [({"texts": "one text"}, 422, "'texts' must be"), ({"texts": [1, 2]}, 422, "a list of strings")]
    elif task == "covid":
        series = covid_like_frame().iloc[:30]

        def forecast(steps: int, series: pd.DataFrame | None = None) -> pd.DataFrame:
            return model.forecast(steps=steps, series=series)

        written = [with_written_dates(t, model.datamodule).reset_index() for t in (forecast(5), forecast(3, series))]
        good = [({"horizon": 5}, records(written[0])), ({"horizon": 3, "series": records(series)}, records(written[1]))]
        bad = [
            ({"horizon": 0}, 422, "'horizon' must be an integer"),
            (
                {"horizon": 2, "series": [{"date": f"2020-01-{d:02}", "other": 1} for d in range(1, 13)]},
                400,
                "lacks the value column(s)",
            ),
        ]
    else:
        raise KeyError(task)
    return good, bad


def post(url: str, payload: dict | bytes) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(f"{url}/predict", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# ---- in-process: the API object LitServe runs in its worker ---------------------------------------


def serve_config(ckpt_path: str, tmp_path: Path, *overrides: str):
    return compose_config(
        CONFIG_DIR,
        [f"ckpt_path={ckpt_path}", f"paths.data_dir={tmp_path / 'data'}", *overrides],
        output_dir=tmp_path / "serve",
        config_name="serve",
    )


def answer(api_: CheckpointAPI, payloads: list[dict]) -> list:
    """What LitServe's batched loop does: decode each, predict the batch, encode each."""
    outputs = api_.predict([api_.decode_request(p) for p in payloads])
    return [api_.encode_response(o) for o in outputs]


@pytest.mark.skipif("titanic" not in TASKS, reason="the tabular family is not in this project")
def test_a_bad_request_does_not_fail_the_requests_batched_with_it(make_cfg, tmp_path):
    ckpt = trained(make_cfg, tmp_path, "titanic")
    served = CheckpointAPI(ckpt, serve_config(ckpt, tmp_path), max_batch_size=8)
    served.setup("cpu")
    frame = titanic_frame(5, seed=7).drop(columns="Survived")
    surrogate, commas, too_long = (records(frame.iloc[:1]) for _ in range(3))
    surrogate[0]["Name"] = "Smith, Mr. \ud800"  # a lone surrogate: not text any encoder can write
    commas[0]["Name"] = "," * 100_000  # the title pattern once took minutes on this
    too_long[0]["Name"] = "x" * 100_001
    payloads = [
        {"rows": records(frame.iloc[:2])},
        {"rows": records(frame.iloc[2:3].drop(columns="Fare"))},  # missing a column: fails the joint call
        {"texts": ["wrong key"]},  # refused before prediction
        {"rows": surrogate},
        {"rows": [{}]},
        {"rows": too_long},
        {"rows": commas},
        {"rows": records(frame.iloc[3:])},
    ]
    start = time.perf_counter()
    first, missing, wrong, lone, empty, long_, many_commas, last = answer(served, payloads)
    assert time.perf_counter() - start < 20
    expected = records(api.load(ckpt, data_dir=str(tmp_path / "data")).predict(frame))
    assert_same(first["predictions"], expected[:2])
    assert_same(last["predictions"], expected[3:])
    assert missing.status_code == 400 and b"Fare" in missing.body
    assert wrong.status_code == 422 and b"needs 'rows'" in wrong.body
    assert lone.status_code == 422 and b"rows[0].Name is not valid Unicode text" in lone.body
    assert empty.status_code == 422 and b"rows[0] is an empty object" in empty.body
    assert long_.status_code == 413 and b"100001 characters; at most 100000 (max_chars)" in long_.body
    assert len(many_commas["predictions"]) == 1
    for refused in (missing, wrong, lone, empty, long_):
        assert "\n" not in json.loads(refused.body)["detail"]


@pytest.mark.skipif("cifar2" not in TASKS, reason="the image family is not in this project")
def test_images_are_checked_one_by_one_before_any_is_decoded(tmp_path):
    from tests.test_images import png_claiming

    served = CheckpointAPI("unused.ckpt", serve_config("unused.ckpt", tmp_path))  # decoding needs no model
    served.kind, served.max_items, served.max_chars, served.max_image_pixels = "images", 10, 100, 4096 * 4096
    small = base64.b64encode(png_claiming(32, 32)).decode()
    for images, status, detail in [
        ([small, ""], 422, "images[1] is empty"),
        ([small, "not base64!"], 422, "images[1] is not valid base64"),
        ([base64.b64encode(png_claiming(30000, 30000)).decode()], 413, "images[0] is 900000000 pixels; at most"),
        ([small, base64.b64encode(png_claiming(5000, 4000)).decode()], 413, "images[1] is 5000×4000 pixels"),
    ]:
        refused = served.decode_request({"images": images})
        assert (refused.status, detail in refused.detail) == (status, True), refused
    assert served.decode_request({"images": [small, small]}).count == 2


@pytest.mark.skipif("covid" not in TASKS, reason="the series family is not in this project")
def test_forecast_dates_are_written_as_forecast_py_writes_them(make_cfg, tmp_path):
    ckpt = trained(make_cfg, tmp_path, "covid")
    served = CheckpointAPI(ckpt, serve_config(ckpt, tmp_path))
    served.setup("cpu")
    rows = served.encode_response(served.predict(served.decode_request({"horizon": 3})))["predictions"]
    model = api.load(ckpt, data_dir=str(tmp_path / "data"))
    last = model.datamodule.read(model.datamodule.hparams.file)[1].index[-1]  # daily data
    assert [row["date"] for row in rows] == [str((last + pd.Timedelta(days=d)).date()) for d in (1, 2, 3)]


@pytest.mark.skipif("covid" not in TASKS, reason="the series family is not in this project")
def test_a_checkpoint_cannot_make_the_server_read_a_file_or_a_variable(make_cfg, tmp_path, monkeypatch):
    ckpt = trained(make_cfg, tmp_path, "covid")
    secret = tmp_path / "private" / "passwd"
    secret.parent.mkdir()
    secret.write_text("SECRET-FIRST-LINE:x:0:0\n")
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["config"]["data"]["file"] = str(secret)
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    served = CheckpointAPI(str(tmp_path / "evil.ckpt"), serve_config(tmp_path / "evil.ckpt", tmp_path))
    served.setup("cpu")
    refused = served.encode_response(served.predict(served.decode_request({"horizon": 3})))
    assert refused.status_code == 400 and b"SECRET" not in refused.body and b"input=<file>" in refused.body
    series = records(covid_like_frame().iloc[:30])  # the series given in the request is read
    rows = served.encode_response(served.predict(served.decode_request({"horizon": 2, "series": series})))
    assert len(rows["predictions"]) == 2
    monkeypatch.setenv("DLTEMPLATE_SECRET", "hunter2-secret-value")
    checkpoint["config"]["data"]["file"] = "${oc.env:DLTEMPLATE_SECRET}"
    torch.save(checkpoint, tmp_path / "env.ckpt")
    served = CheckpointAPI(str(tmp_path / "env.ckpt"), serve_config(tmp_path / "env.ckpt", tmp_path))
    with pytest.raises(CheckpointError, match="is an interpolation") as refused_env:
        served.setup("cpu")
    assert "hunter2" not in str(refused_env.value)


@pytest.mark.skipif("rings" not in TASKS, reason="the regression family is not in this project")
def test_feature_vectors_get_class_probabilities(make_cfg, tmp_path):
    ckpt = trained(make_cfg, tmp_path, "rings")
    served = CheckpointAPI(ckpt, serve_config(ckpt, tmp_path))  # batching off: one request per call
    served.setup("cpu")
    output = served.encode_response(served.predict(served.decode_request({"features": [[0.0, 5.0], [0.0, 8.0]]})))
    rows = output["predictions"]
    assert [sorted(r) for r in rows] == [["prediction", "prob_inner", "prob_outer"]] * 2
    assert all(abs(r["prob_inner"] + r["prob_outer"] - 1) < 1e-6 for r in rows)
    too_many = served.decode_request({"features": [[0.0, 0.0]] * 1001})
    assert too_many.status == 413 and "max_items" in too_many.detail


@pytest.mark.slow
def test_a_missing_checkpoint_is_one_message_before_any_worker_starts(tmp_path):
    result = run_script(["serve.py", f"ckpt_path={tmp_path / 'nowhere.ckpt'}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 2 and "nowhere.ckpt" in result.stderr and "Traceback" not in result.stderr


# ---- over HTTP -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("task", [t for t in FAMILIES if t in TASKS])
def test_the_server_answers_as_predict_does(make_cfg, tmp_path, task):
    ckpt = trained(make_cfg, tmp_path, task)
    model = api.load(ckpt, data_dir=str(tmp_path / "data"))
    good, bad = requests_for(task, tmp_path / "data", model)
    port = free_port()
    command = [
        sys.executable,
        "serve.py",
        f"ckpt_path={ckpt}",
        f"port={port}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'serve'}",
    ]
    with local_server(command, port, cwd=ROOT) as server:
        url = server.url
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            assert response.read() == b"ok"
        with urllib.request.urlopen(f"{url}/info", timeout=10) as response:
            info = json.loads(response.read())["model"]
        assert info["task"] == model.config.task_name and len(info["input"]) == 1
        for payload, expected in good:
            status, body = post(url, payload)
            assert status == 200, body
            assert_same(body["predictions"], expected)
        for payload, status, fragment in [*bad, (b"{not json", 422, "JSON decode error")]:
            got, body = post(url, payload)
            assert got == status and fragment in json.dumps(body), (payload, got, body)
        # requests arriving together are batched; the bad one among them fails alone
        payloads = [good[0][0]] * 5 + [bad[0][0]]
        with ThreadPoolExecutor(len(payloads)) as pool:
            answers = list(pool.map(lambda p: post(url, p), payloads))
        for status, body in answers[:-1]:
            assert status == 200, body
            assert_same(body["predictions"], good[0][1])
        assert answers[-1][0] == bad[0][1]
    assert process_group_ends(server.pid), "SIGTERM left processes of the server running"


def process_group_ends(group: int, within: float = 15) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False

"""POST /predict and /predict/batch: answers, request ids, and every kind of bad input
(each gets a 4xx that names the problem without echoing the input; never a 500)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

import serving.model
from fraud_detection.inference import Scorer, pipeline_scorer
from serving.app import create_app
from serving.settings import Settings
from serving.state import state_of
from tests.model_helpers import mixed_model_folder
from tests.serving.conftest import ServedModel

HEX_ID = re.compile(r"[0-9a-f]{32}")


def assert_ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- answers ---------------------------------------------------------------------------


def test_predict_answers_with_the_models_probability_and_decision(client, served):
    body = assert_ok(client.post("/predict", json=served.legit_row))
    assert set(body) == {"request_id", "probability", "is_fraud", "threshold", "model"}
    assert body["probability"] == pytest.approx(served.probability(served.legit_row), abs=1e-9)
    assert 0.0 <= body["probability"] < 0.5
    assert body["is_fraud"] is False
    assert body["threshold"] == 0.5
    assert body["model"] == {"name": "model", "version": "local"}


def test_fraud_is_flagged_at_the_threshold(client, served):
    body = assert_ok(client.post("/predict", json=served.fraud_row))
    assert body["probability"] == pytest.approx(served.probability(served.fraud_row), abs=1e-9)
    assert 0.5 <= body["probability"] <= 1.0
    assert body["is_fraud"] is True


def with_threshold(served: ServedModel, folder: Path, threshold: float) -> Path:
    copy = Path(shutil.copytree(served.folder, folder))
    mlmodel = yaml.safe_load((copy / "MLmodel").read_text())
    mlmodel["metadata"]["threshold"] = threshold
    (copy / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return copy


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_is_fraud_means_probability_at_or_above_the_threshold(
    client, served, make_app, tmp_path, path
):
    """The model's own threshold decides, inclusive: exactly at it is fraud."""
    probability = assert_ok(client.post("/predict", json=served.legit_row))["probability"]
    above = float(np.nextafter(probability, 1.0))
    for threshold, expected in [(probability, True), (above, False)]:
        folder = with_threshold(served, tmp_path / f"t{threshold!r}", threshold)
        app = make_app(model_uri=str(folder), prediction_log=tmp_path / "other.db")
        with TestClient(app) as other:
            assert assert_ok(other.get("/model"))["threshold"] == threshold
            if path == "/predict":
                body = assert_ok(other.post(path, json=served.legit_row))
                answer = body
            else:
                body = assert_ok(other.post(path, json={"transactions": [served.legit_row]}))
                answer = body["predictions"][0]
        assert body["threshold"] == threshold
        assert answer["probability"] == probability
        assert answer["is_fraud"] is expected


def test_a_new_request_id_when_none_is_given(client, served):
    first = client.post("/predict", json=served.legit_row)
    second = client.post("/predict", json=served.legit_row)
    ids = [assert_ok(first)["request_id"], assert_ok(second)["request_id"]]
    assert all(HEX_ID.fullmatch(rid) for rid in ids)
    assert ids[0] != ids[1]
    assert first.headers["x-request-id"] == ids[0]


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_the_callers_request_id_is_honoured(client, served, path):
    body = {"transactions": [served.legit_row]} if path.endswith("batch") else served.legit_row
    response = client.post(path, json=body, headers={"X-Request-ID": "order-42:retry.1"})
    assert assert_ok(response)["request_id"] == "order-42:retry.1"
    assert response.headers["x-request-id"] == "order-42:retry.1"


@pytest.mark.parametrize("given", ["has spaces", "x" * 129, "<script>", "é"])
def test_an_unusable_request_id_is_replaced(client, served, given):
    response = client.post(
        "/predict", json=served.legit_row, headers={"X-Request-ID": given.encode()}
    )
    assert HEX_ID.fullmatch(assert_ok(response)["request_id"])


def test_batch_returns_one_prediction_per_row_in_order(client, served):
    rows = [served.legit_row, served.fraud_row, {**served.legit_row, "TX_AMOUNT": 20.0}]
    body = assert_ok(client.post("/predict/batch", json={"transactions": rows}))
    assert set(body) == {"request_id", "threshold", "model", "predictions"}
    assert body["model"] == {"name": "model", "version": "local"}
    assert HEX_ID.fullmatch(body["request_id"])
    singles = [assert_ok(client.post("/predict", json=row)) for row in rows]
    assert body["predictions"] == [
        {"probability": single["probability"], "is_fraud": single["is_fraud"]} for single in singles
    ]
    assert [p["is_fraud"] for p in body["predictions"]][:2] == [False, True]


def test_large_batches_are_scored_the_same(client, served):
    """Past 64 rows the batch is scored in a worker thread."""
    rows = [{**served.legit_row, "TX_AMOUNT": float(amount)} for amount in range(0, 700, 7)]
    rows[50] = served.fraud_row
    body = assert_ok(client.post("/predict/batch", json={"transactions": rows}))
    assert len(body["predictions"]) == len(rows) == 100
    expected = [served.probability(row) for row in rows]
    assert [p["probability"] for p in body["predictions"]] == pytest.approx(expected, abs=1e-9)
    assert body["predictions"][50]["is_fraud"] is True


def test_json_with_a_charset_is_json(client, served):
    response = client.post(
        "/predict",
        content=json.dumps(served.legit_row).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert_ok(response)


# --- bad input -------------------------------------------------------------------------

SENTINEL = 98765.4321  # a value that must never come back in an error body


def raw(row: dict[str, Any], name: str, literal: str) -> bytes:
    """JSON text with ``literal`` (NaN, Infinity, 1e999...) as the value of ``name``."""
    return json.dumps({**row, name: "__LITERAL__"}).replace('"__LITERAL__"', literal).encode()


def without(row: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != name}


def bad_single(row: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """case -> (JSON body or raw bytes, the field the error must name)."""
    return {
        "missing field": (without(row, "TX_AMOUNT"), "TX_AMOUNT"),
        "extra field": ({**row, "EVIL_FIELD": SENTINEL}, "EVIL_FIELD"),
        "string for a number": ({**row, "TX_AMOUNT": str(SENTINEL)}, "TX_AMOUNT"),
        "bool for a number": ({**row, "TX_DURING_NIGHT": True}, "TX_DURING_NIGHT"),
        "null for a number": ({**row, "TX_AMOUNT": None}, "TX_AMOUNT"),
        "list for a number": ({**row, "TX_AMOUNT": [SENTINEL]}, "TX_AMOUNT"),
        "object for a number": ({**row, "TX_AMOUNT": {"v": SENTINEL}}, "TX_AMOUNT"),
        "below the minimum": ({**row, "TX_AMOUNT": -SENTINEL}, "TX_AMOUNT"),
        "above the maximum": ({**row, "TX_DURING_WEEKEND": SENTINEL}, "TX_DURING_WEEKEND"),
        "count below one": (
            {**row, "CUSTOMER_ID_NB_TX_1DAY_WINDOW": 0.0},
            "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
        ),
        "NaN": (raw(row, "TX_AMOUNT", "NaN"), "TX_AMOUNT"),
        "Infinity": (raw(row, "TX_AMOUNT", "Infinity"), "TX_AMOUNT"),
        "-Infinity": (
            raw(row, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW", "-Infinity"),
            "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
        ),
        "1e999": (raw(row, "TX_AMOUNT", "1e999"), "TX_AMOUNT"),
        "a list, not an object": ([row], "body"),
        "a number, not an object": (SENTINEL, "body"),
        "empty object": ({}, "TX_AMOUNT"),
    }


def post(client: TestClient, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    response: httpx.Response
    if isinstance(body, bytes):
        headers = {"Content-Type": "application/json"} | kwargs.pop("headers", {})
        response = client.post(path, content=body, headers=headers, **kwargs)
    else:
        response = client.post(path, json=body, **kwargs)
    return response


def assert_problem(
    response: httpx.Response, status: int, field: str | None = None
) -> dict[str, Any]:
    """A problem body: the status, a detail naming the field, no echo of the input."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str)
    assert body["detail"]
    text = response.text
    for echo in (str(SENTINEL), "NaN", "Infinity", "1e999", "Traceback", '"input"'):
        assert echo not in text, f"{echo!r} echoed in {text}"
    if field is not None:
        assert field in body["detail"]
        assert field in [error["field"] for error in body["errors"]]
        assert all(set(error) == {"field", "message", "type"} for error in body["errors"])
    return body


def still_serving(client: TestClient, served: ServedModel) -> None:
    assert_ok(client.post("/predict", json=served.legit_row))


@pytest.mark.parametrize("case", list(bad_single({})))
def test_bad_transactions_get_422_naming_the_field(shared_client, served, case):
    body, field = bad_single(served.legit_row)[case]
    problem = assert_problem(post(shared_client, "/predict", body), 422, field)
    assert problem["detail"].startswith("invalid request: ")
    still_serving(shared_client, served)


def test_all_missing_fields_are_counted_but_the_list_is_short(shared_client, served):
    problem = assert_problem(shared_client.post("/predict", json={}), 422)
    assert len(problem["errors"]) == len(served.schema.names) == 15
    assert problem["detail"].endswith("(and 12 more)")


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("empty batch", "transactions"),
        ("no transactions key", "transactions"),
        ("a bad row", "transactions[1].TX_AMOUNT"),
        ("NaN in a row", "transactions[0].TX_AMOUNT"),
        ("an extra key", "EVIL_FIELD"),
        ("rows not a list", "transactions"),
    ],
)
def test_bad_batches_get_422(shared_client, served, case, field):
    row = served.legit_row
    body = {
        "empty batch": {"transactions": []},
        "no transactions key": {},
        "a bad row": {"transactions": [row, {**row, "TX_AMOUNT": str(SENTINEL)}]},
        "NaN in a row": b'{"transactions": [' + raw(row, "TX_AMOUNT", "NaN") + b"]}",
        "an extra key": {"transactions": [row], "EVIL_FIELD": SENTINEL},
        "rows not a list": {"transactions": row},
    }[case]
    assert_problem(post(shared_client, "/predict/batch", body), 422, field)
    still_serving(shared_client, served)


def test_a_bad_10000_row_batch_lists_only_20_errors(shared_client, served):
    rows = [{**served.legit_row, "TX_AMOUNT": "x"} for _ in range(10_000)]
    problem = assert_problem(shared_client.post("/predict/batch", json={"transactions": rows}), 422)
    assert len(problem["errors"]) == 20
    assert "(and 9997 more)" in problem["detail"]


def test_oversize_batch_gets_413_naming_the_limit(shared_client, served):
    """The shared service allows 5 rows a batch."""
    five = {"transactions": [served.legit_row] * 5}
    assert len(assert_ok(shared_client.post("/predict/batch", json=five))["predictions"]) == 5
    six = {"transactions": [served.legit_row] * 6}
    problem = assert_problem(shared_client.post("/predict/batch", json=six), 413)
    assert "6 transactions in one batch; the limit is 5" in problem["detail"]
    assert "SERVING_MAX_BATCH_ROWS" in problem["detail"]
    still_serving(shared_client, served)


@pytest.mark.parametrize(
    "content",
    [b'{"TX_AMOUNT": ', b"{'TX_AMOUNT': 1.0}", b"not json at all", b'{"TX_AMOUNT": 1.0,}'],
)
@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_malformed_json_gets_400(shared_client, served, content, path):
    response = shared_client.post(
        path, content=content, headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 400)
    assert problem["detail"].startswith("malformed JSON: ")
    assert problem["errors"][0]["type"] == "json_invalid"
    still_serving(shared_client, served)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", None, "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_a_body_that_is_not_json_gets_415(shared_client, served, content_type, path):
    headers = {} if content_type is None else {"Content-Type": content_type}
    content = json.dumps(served.legit_row).encode()
    problem = assert_problem(shared_client.post(path, content=content, headers=headers), 415)
    assert "Content-Type: application/json" in problem["detail"]
    assert repr(content_type or "no content type") in problem["detail"]
    still_serving(shared_client, served)


def test_an_empty_json_body_is_malformed_json(shared_client, served):
    response = shared_client.post(
        "/predict", content=b"", headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 400)
    assert problem["detail"].startswith("malformed JSON: ")

    still_serving(shared_client, served)


def test_problem_bodies_carry_the_request_id(shared_client, served):
    response = shared_client.post(
        "/predict", json=without(served.legit_row, "TX_AMOUNT"), headers={"X-Request-ID": "abc-1"}
    )
    assert assert_problem(response, 422, "TX_AMOUNT")["request_id"] == "abc-1"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/predict", 405), ("PUT", "/predict/batch", 405), ("GET", "/nowhere", 404)],
)
def test_wrong_method_or_path(shared_client, method, path, status):
    response = shared_client.request(method, path)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)


# --- server errors ---------------------------------------------------------------------


def test_a_failing_model_gets_a_bare_500_and_the_service_keeps_serving(make_app, served, caplog):
    app = make_app()
    with TestClient(app, raise_server_exceptions=False) as client:
        state = state_of(app)
        model = state.model
        assert model is not None

        def explode(rows):
            raise RuntimeError(f"secret internal detail {SENTINEL}")

        # The prediction endpoints read the model from the service state on every request.
        state.model = dataclasses.replace(model, scorer=Scorer("compiled", "broken", explode))
        with caplog.at_level(logging.ERROR, logger="serving.errors"):
            response = client.post(
                "/predict", json=served.legit_row, headers={"X-Request-ID": "r-500"}
            )
        assert response.status_code == 500
        assert response.json() == {
            "detail": "internal error; the service log has the details",
            "request_id": "r-500",
        }
        assert "secret" not in response.text
        assert "unhandled error on POST /predict" in caplog.text
        assert "secret internal detail" in caplog.text  # the log has what the body has not

        state.model = model
        still_serving(client, served)
        metrics = client.get("/metrics").text
        assert 'http_requests_total{endpoint="/predict",method="POST",status="500"} 1.0' in metrics


@pytest.mark.parametrize("scoring", ["compiled", "pipeline"])
@pytest.mark.parametrize("amount", [1e300, 1.7e308])
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_huge_but_finite_numbers_are_not_a_server_error(
    make_app, served, monkeypatch, scoring, amount
):
    if scoring == "pipeline":  # what the service does when compile_scorer falls back
        monkeypatch.setattr(
            serving.model,
            "compile_scorer",
            lambda pipeline, schema, example: pipeline_scorer(pipeline, schema, "forced"),
        )
    with TestClient(make_app(), raise_server_exceptions=False) as client:
        assert client.get("/model").json()["scoring"]["method"] == scoring
        response = client.post("/predict", json={**served.legit_row, "TX_AMOUNT": amount})
        still_serving(client, served)
    assert response.status_code < 500, response.text
    if response.status_code == 422:
        assert "cannot score these values" in response.json()["detail"]


# --- a schema with a categorical feature -----------------------------------------------


@pytest.fixture(scope="module")
def mixed_client(tmp_path_factory: pytest.TempPathFactory):
    folder, schema, pipeline = mixed_model_folder(tmp_path_factory.mktemp("mixed") / "model")
    settings = Settings(
        model_uri=str(folder), prediction_log=tmp_path_factory.mktemp("log") / "p.db"
    )
    with TestClient(create_app(settings)) as client:
        yield client, schema, pipeline


@pytest.mark.parametrize("channel", ["web", "store", "kiosk (never seen)"])
def test_categorical_features_take_strings_including_unseen_ones(mixed_client, channel):
    client, _, pipeline = mixed_client
    row = {"amount": 120.0, "score": 0.7, "channel": channel}
    body = assert_ok(client.post("/predict", json=row))
    expected = pipeline.predict_proba(pd.DataFrame([row]))[0, 1]
    assert body["probability"] == pytest.approx(expected, abs=1e-9)
    assert assert_ok(client.get("/model"))["scoring"]["method"] == "compiled"


@pytest.mark.parametrize("channel", [3.0, "", None, True])
def test_categorical_features_refuse_non_strings(mixed_client, channel):
    client, _, _ = mixed_client
    row = {"amount": 120.0, "score": 0.7, "channel": channel}
    assert_problem(client.post("/predict", json=row), 422, "channel")


def test_no_bound_means_negative_numbers_are_fine(mixed_client):
    client, _, _ = mixed_client
    assert_ok(client.post("/predict", json={"amount": 1.0, "score": -5.0, "channel": "web"}))


# --- /predict/split: the batch as a table ------------------------------------------------


def table(served: ServedModel, rows: list[dict[str, Any]]) -> dict[str, Any]:
    names = list(served.schema.names)
    return {"columns": names, "data": [[row[name] for name in names] for row in rows]}


def test_split_answers_as_the_batch_does_and_logs_the_same_rows(client, served):
    rows = [served.legit_row, served.fraud_row, {**served.legit_row, "TX_AMOUNT": 20.0}]
    body = assert_ok(client.post("/predict/split", json=table(served, rows)))
    assert set(body) == {"request_id", "threshold", "model", "probability", "is_fraud"}
    batch = assert_ok(client.post("/predict/batch", json={"transactions": rows}))
    assert body["probability"] == [p["probability"] for p in batch["predictions"]]
    assert (
        body["is_fraud"]
        == [p["is_fraud"] for p in batch["predictions"]]
        == [
            False,
            True,
            False,
        ]
    )
    log = state_of(client.app).log.store.path  # type: ignore[attr-defined]
    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(log) as connection:
        logged = connection.execute(
            "SELECT row_index, features, probability FROM predictions WHERE request_id = ?",
            [body["request_id"]],
        ).fetchall()
    names = list(served.schema.names)
    assert [(i, json.loads(f), p) for i, f, p in logged] == [
        (i, [row[n] for n in names], body["probability"][i]) for i, row in enumerate(rows)
    ]


def test_split_scores_large_tables_the_same(client, served):
    rows = [{**served.legit_row, "TX_AMOUNT": float(amount)} for amount in range(0, 700, 7)]
    body = assert_ok(client.post("/predict/split", json=table(served, rows)))
    expected = [served.probability(row) for row in rows]
    assert body["probability"] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("columns in another order", "columns"),
        ("a missing column name", "columns"),
        ("no columns", "columns"),
        ("a short row", "data[1][14]"),
        ("a long row", "data[0]"),
        ("text for a number", "data[0][0]"),
        ("below a bound", "data[0][0]"),
        ("NaN", "data[0][0]"),
        ("no rows", "data"),
        ("an extra key", "index"),
    ],
)
def test_bad_tables_get_422_naming_the_place(shared_client, served, case, field):
    good = table(served, [served.legit_row, served.legit_row])
    names, first = good["columns"], good["data"][0]
    body = {
        "columns in another order": {**good, "columns": names[::-1]},
        "a missing column name": {**good, "columns": names[:-1]},
        "no columns": {"data": good["data"]},
        "a short row": {**good, "data": [first, first[:-1]]},
        "a long row": {**good, "data": [[*first, SENTINEL]]},
        "text for a number": {**good, "data": [[str(SENTINEL), *first[1:]]]},
        "below a bound": {**good, "data": [[-SENTINEL, *first[1:]]]},
        "NaN": json.dumps({**good, "data": [["__NAN__", *first[1:]]]})
        .replace('"__NAN__"', "NaN")
        .encode(),
        "no rows": {**good, "data": []},
        "an extra key": {**good, "index": [0, 1]},
    }[case]
    assert_problem(post(shared_client, "/predict/split", body), 422, field)
    still_serving(shared_client, served)


def test_an_oversize_table_gets_413_naming_the_limit(shared_client, served):
    """The shared service allows 5 rows a batch, whatever its shape."""
    assert_ok(shared_client.post("/predict/split", json=table(served, [served.legit_row] * 5)))
    problem = assert_problem(
        shared_client.post("/predict/split", json=table(served, [served.legit_row] * 6)), 413
    )
    assert "6 transactions in one batch; the limit is 5" in problem["detail"]

"""/health, /ready, /model, /metrics and the OpenAPI document; a service whose model
cannot be loaded stays up and says why."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler

import serving.model
from fraud_detection.io.model_package import SCHEMA_FILE
from serving.dependencies import get_model
from tests.model_helpers import METADATA, save_folder
from tests.serving.conftest import AppFactory, ServedModel


def metric_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric from a /metrics page: sorted label pairs -> value."""
    samples: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                samples[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


# --- a loaded model --------------------------------------------------------------------


def test_health(shared_client):
    response = shared_client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready(shared_client):
    response = shared_client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "model": "model",
        "version": "local",
        "prediction_log": "ok",
    }


def test_model_card(shared_client, served):
    response = shared_client.get("/model")
    assert response.status_code == 200
    card = response.json()
    assert card["name"] == "model"  # the folder's name: no registry record
    assert card["version"] == "local"
    assert card["alias"] is None
    assert card["run_id"] is None
    assert card["source"] == str(served.folder)
    assert card["threshold"] == METADATA["threshold"]
    assert card["threshold_rule"] == METADATA["threshold_rule"]
    assert card["candidate"] == METADATA["candidate"]
    assert card["cv_average_precision"] == METADATA["cv_average_precision"]
    assert card["test_metrics"] == METADATA["test_metrics"]
    assert card["feature_schema"] == served.schema.model_dump(mode="json")
    assert card["scoring"]["method"] == "compiled"
    assert "RandomForestClassifier (20 trees" in card["scoring"]["detail"]
    assert len(card["schema_fingerprint"]) == 16


def test_metrics(make_app, served):
    with TestClient(make_app()) as client:
        for row in (served.legit_row, served.legit_row, served.fraud_row):
            assert client.post("/predict", json=row).status_code == 200
        batch = {"transactions": [served.fraud_row, served.legit_row]}
        assert client.post("/predict/batch", json=batch).status_code == 200
        assert client.post("/predict", json={}).status_code == 422
        assert client.get("/no/such/page").status_code == 404
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text

    requests = metric_samples(text, "http_requests_total")
    assert requests[(("endpoint", "/predict"), ("method", "POST"), ("status", "200"))] == 3
    assert requests[(("endpoint", "/predict"), ("method", "POST"), ("status", "422"))] == 1
    assert requests[(("endpoint", "/predict/batch"), ("method", "POST"), ("status", "200"))] == 1
    # A scanner's URLs share one series.
    assert requests[(("endpoint", "unmatched"), ("method", "GET"), ("status", "404"))] == 1
    latency = metric_samples(text, "http_request_duration_seconds_count")
    assert latency[(("endpoint", "/predict"), ("method", "POST"), ("status", "200"))] == 3

    decisions = metric_samples(text, "fraud_predictions_total")
    assert decisions == {(("decision", "fraud"),): 2, (("decision", "legit"),): 3}

    info = metric_samples(text, "fraud_model_info")
    key = (("alias", ""), ("name", "model"), ("scoring", "compiled"), ("version", "local"))
    assert info == {key: 1.0}
    assert metric_samples(text, "fraud_model_loaded") == {(): 1.0}
    assert set(metric_samples(text, "fraud_prediction_log_pending_rows")) == {()}
    assert metric_samples(text, "fraud_prediction_log_write_failures") == {(): 0.0}


def test_each_app_has_its_own_metrics(make_app, served):
    with TestClient(make_app()) as first:
        first.post("/predict", json=served.legit_row)
    with TestClient(make_app()) as second:
        text = second.get("/metrics").text
    assert metric_samples(text, "fraud_predictions_total") == {}


def test_a_failing_dependency_gets_a_bare_500(make_app, caplog):
    """Dependencies are overridable; an exception in one is a 500 without details."""
    app = make_app()

    def broken_model():
        raise RuntimeError("secret: the model store password is hunter2")

    app.dependency_overrides[get_model] = broken_model
    with (
        TestClient(app, raise_server_exceptions=False) as client,
        caplog.at_level(logging.ERROR, logger="serving.errors"),
    ):
        response = client.get("/model")
        assert response.status_code == 500
        assert response.json()["detail"] == "internal error; the service log has the details"
        assert "hunter2" not in response.text
        assert "hunter2" in caplog.text
        app.dependency_overrides.clear()
        assert client.get("/model").status_code == 200


# --- the OpenAPI document --------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi(shared_client) -> dict[str, Any]:
    response = shared_client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def component(document: dict[str, Any], ref: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return schema


def request_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    body = document["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    return component(document, body["content"]["application/json"]["schema"]["$ref"])


def test_openapi_lists_every_feature_with_description_and_bounds(openapi, served):
    transaction = request_schema(openapi, "/predict")
    assert transaction["additionalProperties"] is False
    assert list(transaction["properties"]) == served.schema.names
    assert sorted(transaction["required"]) == sorted(served.schema.names)
    for feature in served.schema.features:
        field = transaction["properties"][feature.name]
        assert field["type"] == "number"
        assert field["description"] == feature.description
        assert field.get("minimum") == feature.minimum
        assert field.get("maximum") == feature.maximum
        assert field["examples"] == [served.schema.example[feature.name]]
    assert transaction["properties"]["TX_AMOUNT"]["minimum"] == 0
    assert transaction["properties"]["TX_DURING_NIGHT"]["maximum"] == 1


def test_openapi_batch_body_and_error_responses(openapi):
    batch = request_schema(openapi, "/predict/batch")
    transactions = batch["properties"]["transactions"]
    assert transactions["minItems"] == 1
    assert transactions["items"]["$ref"].endswith("/Transaction")
    assert "1 to 5 transactions" in transactions["description"]
    predict = openapi["paths"]["/predict"]["post"]["responses"]
    assert set(predict) >= {"200", "400", "415", "422", "503"}
    assert "413" in openapi["paths"]["/predict/batch"]["post"]["responses"]
    assert predict["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")


def test_the_documented_example_is_accepted(openapi, shared_client):
    example = request_schema(openapi, "/predict")["examples"][0]
    response = shared_client.post("/predict", json=example)
    assert response.status_code == 200, response.text
    batch = shared_client.post("/predict/batch", json={"transactions": [example, example]})
    assert batch.status_code == 200, batch.text


def test_the_docs_page_is_served(shared_client):
    response = shared_client.get("/docs")
    assert response.status_code == 200
    assert "openapi.json" in response.text


# --- a model that scores through its pipeline ------------------------------------------


def test_a_pipeline_the_scorer_cannot_compile_is_served_through_predict_proba(
    served, make_app, tmp_path, caplog
):
    numeric = make_pipeline(SimpleImputer(strategy="median"), MinMaxScaler())
    pipeline = Pipeline(
        [
            ("preprocess", ColumnTransformer([("numeric", numeric, served.schema.names)])),
            ("model", LogisticRegression(max_iter=500)),
        ]
    )
    rows = pd.DataFrame([served.legit_row, served.fraud_row] * 20)
    labels = [0, 1] * 20
    folder = save_folder(pipeline.fit(rows, labels), tmp_path / "minmax", served.schema, rows)
    with caplog.at_level(logging.WARNING, logger="serving.model"):
        app = make_app(model_uri=str(folder))
        with TestClient(app) as client:
            scoring = client.get("/model").json()["scoring"]
            body = client.post("/predict", json=served.fraud_row).json()
    assert scoring["method"] == "pipeline"
    assert "MinMaxScaler" in scoring["detail"]
    assert "scoring through predict_proba" in caplog.text
    expected = pipeline.predict_proba(pd.DataFrame([served.fraud_row]))[0, 1]
    assert body["probability"] == pytest.approx(expected, abs=1e-12)


# --- no model --------------------------------------------------------------------------


def break_folder(served: ServedModel, tmp_path: Path, how: str) -> Path:
    folder = Path(shutil.copytree(served.folder, tmp_path / "broken"))
    if how == "no MLmodel":
        (folder / "MLmodel").unlink()
    elif how == "corrupt model.skops":
        (folder / "model.skops").write_bytes(b"\x00garbage, not a skops zip\xff" * 100)
    elif how == "schema of another model":
        schema = json.loads((folder / SCHEMA_FILE).read_text())
        schema["features"][0]["name"] = "AMOUNT_IN_CENTS"
        schema["example"] = {}
        (folder / SCHEMA_FILE).write_text(json.dumps(schema))
    return folder


BROKEN: dict[str, tuple[Callable[[ServedModel, Path], str], str]] = {
    "no folder": (lambda served, tmp: str(tmp / "nowhere"), "no model folder at"),
    "no MLmodel": (
        lambda served, tmp: str(break_folder(served, tmp, "no MLmodel")),
        "is not a model folder (no MLmodel file)",
    ),
    "corrupt model.skops": (
        lambda served, tmp: str(break_folder(served, tmp, "corrupt model.skops")),
        "is damaged or not a skops file",
    ),
    "schema of another model": (
        lambda served, tmp: str(break_folder(served, tmp, "schema of another model")),
        "the folder mixes two models",
    ),
    "registry URI without version": (
        lambda served, tmp: "models:/fraud-detector",
        "the version after the model name must be a number",
    ),
    "registry store missing": (
        lambda served, tmp: "models:/fraud-detector@champion",
        "no MLflow store at",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_without_a_model_the_service_stays_up_and_says_why(
    case, served, make_app: AppFactory, tmp_path, caplog
):
    uri_of, reason = BROKEN[case]
    store = f"sqlite:///{tmp_path / 'no-store' / 'mlflow.db'}"
    with caplog.at_level(logging.ERROR, logger="serving"):
        app = make_app(model_uri=uri_of(served, tmp_path), tracking_uri=store)
        with TestClient(app) as client:
            assert client.get("/health").status_code == 200

            ready = client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "not ready"
            assert reason in ready.json()["detail"]

            for path, body in [
                ("/predict", served.legit_row),
                ("/predict/batch", {"transactions": [served.legit_row]}),
            ]:
                response = client.post(path, json=body)
                assert response.status_code == 503
                assert response.json()["detail"].startswith("no model loaded: ")
                assert reason in response.json()["detail"]
            assert client.post("/predict", content=b"{not json").status_code == 503

            card = client.get("/model")
            assert card.status_code == 503
            assert reason in card.json()["detail"]

            metrics = client.get("/metrics").text
            assert metric_samples(metrics, "fraud_model_loaded") == {(): 0.0}
            assert metric_samples(metrics, "fraud_model_info") == {}
            assert client.get("/openapi.json").status_code == 200
    assert "no model loaded, /ready answers 503" in caplog.text
    assert reason in caplog.text


def test_an_unforeseen_load_failure_also_keeps_the_service_up(make_app, monkeypatch, caplog):
    def broken_compiler(pipeline, schema, example):
        raise ValueError("could not convert string to float: 'web'")

    monkeypatch.setattr(serving.model, "compile_scorer", broken_compiler)
    with caplog.at_level(logging.ERROR, logger="serving"), TestClient(make_app()) as client:
        ready = client.get("/ready")
        assert client.get("/health").status_code == 200
    assert ready.status_code == 503
    assert "failed (ValueError: could not convert string to float: 'web')" in ready.json()["detail"]
    assert "Traceback" in caplog.text  # the log keeps the stack for whoever debugs it

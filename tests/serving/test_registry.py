"""Serving straight from the MLflow registry (``models:/<name>@<alias>``): the service
reports the registered name, version, alias and run. Slow: MLflow builds a store."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.model_helpers import RegistryStore, registry_store
from tests.serving.test_service import metric_samples

pytestmark = pytest.mark.slow

ROW: dict[str, Any] = {"amount": 35.0, "score": 0.3, "channel": "web"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> RegistryStore:
    return registry_store(tmp_path_factory)


@pytest.mark.parametrize(
    ("suffix", "version", "alias"),
    [("@champion", "1", "champion"), ("@challenger", "2", "challenger"), ("/2", "2", None)],
)
def test_serves_a_registered_model(store, make_app, suffix, version, alias):
    uri = f"models:/{store.name}{suffix}"
    with TestClient(make_app(model_uri=uri, tracking_uri=store.uri)) as client:
        ready = client.get("/ready")
        card = client.get("/model").json()
        prediction = client.post("/predict", json=ROW).json()
        metrics = client.get("/metrics").text
    assert ready.json() == {
        "status": "ready",
        "model": store.name,
        "version": version,
        "prediction_log": "ok",
    }
    assert card["name"] == store.name
    assert card["version"] == version
    assert card["alias"] == alias
    assert card["run_id"] == store.run_ids[version]
    assert card["source"] == uri
    assert card["feature_schema"] == store.schema.model_dump(mode="json")
    assert card["scoring"]["method"] == "compiled"
    assert prediction["model"] == {"name": store.name, "version": version}
    expected = store.pipeline.predict_proba(pd.DataFrame([ROW]))[0, 1]
    assert prediction["probability"] == pytest.approx(expected, abs=1e-9)
    info = metric_samples(metrics, "fraud_model_info")
    key = (
        ("alias", alias or ""),
        ("name", store.name),
        ("scoring", "compiled"),
        ("version", version),
    )
    assert info == {key: 1.0}


def test_the_store_defaults_to_mlflow_tracking_uri(store, make_app, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    with TestClient(make_app(model_uri=f"models:/{store.name}@champion")) as client:
        card = client.get("/model").json()
    assert (card["name"], card["version"], card["alias"]) == (store.name, "1", "champion")


@pytest.mark.parametrize("suffix", ["@retired", "/7"])
def test_an_alias_or_version_not_in_the_store_keeps_the_service_up(store, make_app, suffix):
    uri = f"models:/{store.name}{suffix}"
    with TestClient(make_app(model_uri=uri, tracking_uri=store.uri)) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        predict = client.post("/predict", json=ROW)
    assert ready.status_code == 503
    assert f"{uri} is not in the MLflow store {store.uri}" in ready.json()["detail"]
    assert predict.status_code == 503

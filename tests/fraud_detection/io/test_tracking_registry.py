"""Fetching a registered model from an MLflow store: registry URIs, aliases, versions and
what each failure says."""

from __future__ import annotations

import base64
import http.server
import importlib.metadata
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from fraud_detection.errors import ModelLoadError, TrackingError
from fraud_detection.io import tracking
from fraud_detection.io.model_package import REGISTRY_FILE, RegistryInfo, load_model_package
from tests.model_helpers import (
    MIXED_SCHEMA,
    RegistryStore,
    fitted_pipeline,
    mixed_data,
    registry_store,
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/fraud-detector@champion", ("fraud-detector", "champion", None)),
        ("models:/fraud-detector/12", ("fraud-detector", None, "12")),
        ("models:/a.b_c@challenger", ("a.b_c", "challenger", None)),
    ],
)
def test_parse_registry_uri(uri, expected):
    assert tracking.parse_registry_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("fraud-detector@champion", "is not a registry URI"),
        ("models:/", "is not a registry URI"),
        ("/models/fraud", "is not a registry URI"),
        ("models:/fraud-detector/latest", "the version after the model name must be a number"),
        ("models:/fraud-detector", "the version after the model name must be a number"),
    ],
)
def test_parse_registry_uri_rejects(uri, message):
    with pytest.raises(ModelLoadError, match="models:/<name>@<alias>") as caught:
        tracking.parse_registry_uri(uri)
    assert message in str(caught.value)
    assert repr(uri) in str(caught.value)


def test_missing_sqlite_store(tmp_path):
    store = f"sqlite:///{tmp_path / 'nothing.db'}"
    with pytest.raises(ModelLoadError, match=r"no MLflow store at .*nothing\.db: run `make train`"):
        tracking.fetch_registered_model("models:/m@champion", tmp_path / "dest", store)


def test_bad_uri_fails_before_the_store_is_touched(tmp_path):
    with pytest.raises(ModelLoadError, match="is not a registry URI"):
        tracking.fetch_registered_model("m@champion", tmp_path, "sqlite:///nowhere/x.db")


def test_unreachable_tracking_server(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ModelLoadError, match="unreachable"):
        tracking.fetch_registered_model("models:/m@champion", tmp_path, f"http://127.0.0.1:{port}")


def _run_fix(message: str, command: str, env: dict[str, str]) -> None:
    """Run the `mlflow ...` command a message names, as a user would copy it."""
    (fix,) = re.findall(rf"`(mlflow [^`]*\b{command} [^`]+)`", message)
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    subprocess.run([str(mlflow_cli), *shlex.split(fix)[1:]], env=env, check=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("way_out", ["restore", "gc"])
def test_a_deleted_experiment_is_named_and_either_way_out_works(
    way_out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    number = client.create_experiment("fraud")
    client.create_run(number)
    client.delete_experiment(number)
    with pytest.raises(TrackingError) as caught:
        tracking.connect("fraud", tmp_path)
    message = str(caught.value)
    assert f"experiment 'fraud' (id {number}) in MLflow store {uri} is deleted" in message
    assert "train.experiment_name" in message
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    _run_fix(message, way_out, env)
    again = tracking.connect("fraud", tmp_path)
    assert client.get_experiment(again).lifecycle_stage == "active"
    # Restored: its run is back; removed for good: the name makes an empty experiment.
    runs = client.search_runs([again])
    assert len(runs) == (1 if way_out == "restore" else 0)


# --- a real store (MLflow creates its tables: ~10 s, once per session) -----------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> RegistryStore:
    return registry_store(tmp_path_factory)


@pytest.mark.slow
def test_fetch_by_alias(store, tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    info = tracking.fetch_registered_model(f"models:/{store.name}@champion", dest, store.uri)
    assert info == RegistryInfo(
        name=store.name,
        version="1",
        alias="champion",
        run_id=store.run_ids["1"],
        source_uri=f"models:/{store.name}@champion",
    )
    assert RegistryInfo.model_validate_json((dest / REGISTRY_FILE).read_text()) == info
    package = load_model_package(dest)
    assert package.registry == info
    assert package.run_id == store.run_ids["1"]
    assert package.schema == store.schema
    X, _ = mixed_data(rows=40, seed=5)
    np.testing.assert_array_equal(
        package.pipeline.predict_proba(X), store.pipeline.predict_proba(X)
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("suffix", "version", "alias"),
    [("@challenger", "2", "challenger"), ("/2", "2", None), ("/1", "1", None)],
)
def test_fetch_by_other_alias_or_version(store, tmp_path, suffix, version, alias):
    info = tracking.fetch_registered_model(f"models:/{store.name}{suffix}", tmp_path, store.uri)
    assert (info.version, info.alias, info.run_id) == (version, alias, store.run_ids[version])
    assert load_model_package(tmp_path).registry == info


@pytest.mark.slow
@pytest.mark.parametrize(
    "uri_suffix", ["no-such-model@champion", "{name}@no-such-alias", "{name}/99"]
)
def test_unknown_model_alias_or_version(store, tmp_path, uri_suffix):
    uri = "models:/" + uri_suffix.format(name=store.name)
    with pytest.raises(ModelLoadError) as caught:
        tracking.fetch_registered_model(uri, tmp_path, store.uri)
    message = str(caught.value)
    assert f"{uri} is not in the MLflow store {store.uri}" in message
    assert "make train" in message
    assert not (tmp_path / REGISTRY_FILE).exists()


def test_store_folder_must_exist(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="no MLflow store"):
        tracking.fetch_registered_model(
            "models:/m/1", tmp_path, f"sqlite:///{tmp_path / 'gone' / 'mlflow.db'}"
        )


@pytest.mark.parametrize(("kind", "provider"), [("xgboost", "xgboost"), ("lightgbm", "lightgbm")])
def test_requirements_name_the_installed_booster(kind, provider):
    """The pinned distribution is the one installed (xgboost-cpu on Linux), so MLflow
    finds it when it compares the model's requirements with the environment."""
    X, y = mixed_data(200)
    pipeline = fitted_pipeline(X, y, MIXED_SCHEMA, kind, n_estimators=3)
    installed = importlib.metadata.packages_distributions()[provider]
    requirements = tracking.pip_requirements(pipeline)
    assert f"{installed[0]}=={importlib.metadata.version(installed[0])}" in requirements
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        assert importlib.metadata.version(name) == version


def figures(fingerprint: str) -> dict[str, Any]:
    """register_and_promote's figures: test AP 0.7 on data "d", under ``fingerprint``."""
    return {"fingerprint": fingerprint, "test_average_precision": 0.7, "data_fingerprint": "d"}


@pytest.mark.slow
def test_equal_ap_with_a_lower_brier_becomes_champion(store, monkeypatch):
    """The same ranking with better probabilities (a calibrated rerun) is promoted; the
    same figures again, or a higher Brier, are not."""
    import mlflow  # noqa: PLC0415

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.uri)
    source = f"runs:/{store.run_ids['1']}/model"
    try:
        first, better, same, worse = (
            tracking.register_and_promote(
                lambda: source, "tie-detector", **figures(f"fp-{n}"), test_brier=brier
            )
            for n, brier in enumerate((0.004, 0.003, 0.003, 0.005))
        )
    finally:
        mlflow.set_tracking_uri(previous_uri)
    assert first.alias == "champion"
    assert better.alias == "champion"
    assert "ties champion v1 on test AP (0.7000) with a lower test Brier (0.00300 vs 0.00400)" in (
        better.message
    )
    assert (same.alias, worse.alias) == ("challenger", "challenger")
    assert "does not beat champion v2 on test AP (0.7000 vs 0.7000)" in same.message


@pytest.mark.slow
def test_a_champion_without_a_brier_tag_is_compared_on_its_runs_metric(store, monkeypatch):
    """Versions registered before the tag existed: the Brier comes from their run."""
    import mlflow  # noqa: PLC0415

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.uri)
    run_id = store.run_ids["1"]
    source = f"runs:/{run_id}/model"
    try:
        mlflow.MlflowClient().log_metric(run_id, "test_brier", 0.004)
        old = tracking.register_and_promote(lambda: source, "untagged-detector", **figures("old"))
        new = tracking.register_and_promote(
            lambda: source, "untagged-detector", **figures("new"), test_brier=0.003
        )
    finally:
        mlflow.set_tracking_uri(previous_uri)
    assert (
        "test_brier"
        not in mlflow.MlflowClient(store.uri)
        .get_model_version("untagged-detector", old.version)
        .tags
    )
    assert new.alias == "champion"
    assert "lower test Brier (0.00300 vs 0.00400)" in new.message


@pytest.mark.slow
def test_the_same_model_again_is_found_not_registered_twice(store, monkeypatch):
    """A rerun that reproduces a model (same fingerprint) finds its version: nothing is
    logged or registered, and the alias it holds is reported."""
    import mlflow  # noqa: PLC0415

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.uri)
    source = f"runs:/{store.run_ids['1']}/model"
    logged: list[str] = []

    def log_model() -> str:
        logged.append(source)
        return source

    try:
        first = tracking.register_and_promote(log_model, "twin-detector", **figures("same"))
        again = tracking.register_and_promote(log_model, "twin-detector", **figures("same"))
        versions = mlflow.MlflowClient().search_model_versions("name = 'twin-detector'")
    finally:
        mlflow.set_tracking_uri(previous_uri)
    assert len(logged) == 1, "the second call must not log the model again"
    assert [str(v.version) for v in versions] == [first.version] == [again.version]
    assert (first.registered, again.registered) == (True, False)
    assert again.alias == "champion"
    assert "already holds this model (fingerprint same): not registered again" in again.message


@pytest.mark.slow
def test_a_registration_cut_off_before_the_rule_is_finished_by_the_rerun(store, monkeypatch):
    """A stage killed after the version was created but before its alias: the version has
    the fingerprint and no rule tag. The rerun gives it its alias; no twin appears."""
    import mlflow  # noqa: PLC0415

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.uri)
    source = f"runs:/{store.run_ids['1']}/model"
    tags = {tracking.TEST_AP_TAG: "0.7", tracking.DATA_TAG: "d", "model_fingerprint": "cut"}
    try:
        # What the killed stage left: registered, tagged, no alias, no rule tag.
        half = mlflow.register_model(source, "cut-detector", tags=tags)
        client = mlflow.MlflowClient()
        assert not client.get_model_version("cut-detector", half.version).aliases
        done = tracking.register_and_promote(
            lambda: pytest.fail("the half-registered version must be reused"),
            "cut-detector",
            **figures("cut"),
        )
        versions = client.search_model_versions("name = 'cut-detector'")
        finished = client.get_model_version("cut-detector", half.version)
    finally:
        mlflow.set_tracking_uri(previous_uri)
    assert [str(v.version) for v in versions] == [str(half.version)] == [done.version]
    assert done.alias == "champion"
    assert finished.aliases == ["champion"]
    assert finished.tags[tracking.RULE_TAG] == "champion"
    assert "stopped before the registry rule; finished now" in done.message


def connect_error(
    handler: type[http.server.BaseHTTPRequestHandler], monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """A stand-in tracking server on a free port, answering with ``handler``: its URI, and
    the TrackingError a stage's first contact with it raises."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        with pytest.raises(TrackingError) as caught:
            tracking.connect("anything")
    finally:
        server.shutdown()
        server.server_close()
    return uri, str(caught.value)


class _Failing(http.server.BaseHTTPRequestHandler):
    """A server that answers /health but fails one path with a 500, as MLflow's does when
    its database or object store is down (the real servers: tests/stack)."""

    failing = ""

    def do_GET(self) -> None:
        failed = self.path.startswith(self.failing)
        self.send_response(500 if failed else 200)
        self.end_headers()
        body = {"error_code": "INTERNAL_ERROR", "message": "connection refused\nmore"}
        self.wfile.write(json.dumps(body if failed else {}).encode())

    def log_message(self, *args: Any) -> None:  # quiet
        pass


@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        ("/api/2.0/mlflow/experiments", "its backend store (the database) does not"),
        ("/api/2.0/mlflow-artifacts", "its artifact store (the object store) does not"),
    ],
)
def test_a_server_whose_store_is_down_is_named_with_what_to_start(
    failing: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = type("Handler", (_Failing,), {"failing": failing})
    uri, message = connect_error(handler, monkeypatch)
    assert message.startswith(f"MLflow tracking server {uri} answers, but {expected}")
    assert "(HTTP 500: connection refused)" in message
    assert "make stack-up" in message
    assert "\n" not in message


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A server with logins, as MLflow's basic-auth app answers: /health is open, every
    other path wants credentials (401), and ``forbidden`` paths refuse the user (403)."""

    forbidden = "/api/2.0/mlflow/experiments/get-by-name"
    seen: list[str | None]

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        logged_in = self.headers.get("Authorization") == _basic("someone", PASSWORD)
        if self.path.startswith(self.forbidden) and logged_in:
            self._answer(403, {"error_code": "PERMISSION_DENIED", "message": "Permission denied"})
        elif self.path == "/health" or logged_in:
            self._answer(200, {})
        else:
            self._answer(401, {"message": "You are not authenticated."})

    def _answer(self, status: int, body: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args: Any) -> None:  # quiet
        pass


PASSWORD = "the-password-of-someone"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        (None, None, "wants a user and password (HTTP 401) and MLFLOW_TRACKING_USERNAME and "),
        ("someone", None, "wants a user and password (HTTP 401) and MLFLOW_TRACKING_PASSWORD is"),
        ("someone", "not-the-password", "rejected the user 'someone' or its password (HTTP 401)"),
        ("someone", PASSWORD, "does not let user 'someone' use experiment 'anything' (HTTP 403)"),
    ],
)
def test_missing_wrong_or_unpermitted_credentials_are_one_line(
    user: str | None, password: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler: type[_Refusing] = type("Handler", (_Refusing,), {"seen": []})
    for name, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    uri, message = connect_error(handler, monkeypatch)
    assert message.startswith(f"MLflow tracking server {uri} {expected}"), message
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in message
    assert "python -m stack env" in message
    assert "\n" not in message
    assert PASSWORD not in message
    assert password is None or password not in message
    if password == PASSWORD:  # the probes logged in too: they checked the stores
        assert handler.seen[:3] == [_basic("someone", PASSWORD)] * 3

"""Fixtures for the service tests: a real model folder, apps made from it, clients that
run the app's lifespan (model load, prediction log) like uvicorn does, and the real
service (``python -m serving``) on a free loopback port."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline

from fraud_detection.schema import FeatureSchema, with_example
from monitoring.baseline import free_port
from serving.app import create_app
from serving.settings import ENV_PREFIX, Settings
from tests.model_helpers import fitted_pipeline, save_folder

AppFactory = Callable[..., FastAPI]


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """The model folder the service tests serve, and what they need to check answers."""

    folder: Path
    schema: FeatureSchema
    pipeline: Pipeline
    legit_row: dict[str, float]  # scores well below the 0.5 threshold
    fraud_row: dict[str, float]  # scores at or above it

    def probability(self, row: dict[str, Any]) -> float:
        frame = pd.DataFrame([row], columns=self.schema.names)
        return float(self.pipeline.predict_proba(frame)[0, 1])


@pytest.fixture(scope="session", autouse=True)
def _no_serving_environment() -> Iterator[None]:
    """Settings read SERVING_* variables: the developer's own must not leak in."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(ENV_PREFIX) or name == "PROMETHEUS_MULTIPROC_DIR":
                patch.delenv(name)
        yield


@pytest.fixture(autouse=True)
def _temporary_folders_in_tmp_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A registry model is downloaded into a new temporary folder (kept after the service
    stops): keep those in tmp_path, not the machine's /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture(scope="session")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    small_features: pd.DataFrame,
    simulator_schema: FeatureSchema,
) -> ServedModel:
    """A 20-tree forest on the small simulated world, saved as the evaluate stage does."""
    schema = with_example(simulator_schema, small_features)
    X = small_features[schema.names]
    y = small_features[schema.target]
    pipeline = fitted_pipeline(X, y, schema, "random_forest", n_estimators=20, max_depth=6)
    folder = save_folder(pipeline, tmp_path_factory.mktemp("served") / "model", schema, X.head(5))
    scores = pipeline.predict_proba(X)[:, 1]
    assert scores.max() >= 0.5 > scores.min(), "the fixture needs both decisions"

    def row(index: int) -> dict[str, float]:
        return {str(name): float(value) for name, value in X.iloc[index].items()}

    return ServedModel(
        folder, schema, pipeline, row(int(np.argmin(scores))), row(int(np.argmax(scores)))
    )


@pytest.fixture
def make_app(served: ServedModel, tmp_path: Path) -> AppFactory:
    """``make_app(**settings)``: an app serving the fixture model, logging into tmp_path."""

    def make(**overrides: Any) -> FastAPI:
        settings: dict[str, Any] = {
            "model_uri": str(served.folder),
            "prediction_log": tmp_path / "predictions.db",
        }
        return create_app(Settings(**(settings | overrides)))

    return make


@pytest.fixture
def client(make_app: AppFactory) -> Iterator[TestClient]:
    with TestClient(make_app()) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def shared_client(
    served: ServedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """One running service for a module of read-only checks (saves a start per test)."""
    settings = Settings(
        model_uri=str(served.folder),
        prediction_log=tmp_path_factory.mktemp("log") / "predictions.db",
        max_batch_rows=5,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


# --- the real service ------------------------------------------------------------------


class Service:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path, db: Path) -> None:
        self.process, self.url, self.log, self.db = process, url, log, db

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


# Two keys, as during a rotation: the old one and its successor are both accepted.
API_KEYS = ("old-key-Aq7Zr2Kp9Lm4Xw8N", "new-key-Bt5Vy3Hn6Jc1Qs0D")


@pytest.fixture
def service(served: ServedModel, tmp_path: Path) -> Iterator[Service]:
    """``python -m serving`` (uvicorn) serving the fixture model on a free loopback port,
    ready; afterwards stopped with SIGTERM (the process this fixture started, nothing else)."""
    yield from _run_service(served, tmp_path, {})


@pytest.fixture
def keyed_service(served: ServedModel, tmp_path: Path) -> Iterator[Service]:
    """The same with API keys: one in the environment, one in a file (both accepted)."""
    key_file = tmp_path / "api-keys"
    key_file.write_text(f"# rotated in\n{API_KEYS[1]}\n")
    env = {"SERVING_API_KEYS": API_KEYS[0], "SERVING_API_KEYS_FILE": str(key_file)}
    yield from _run_service(served, tmp_path, env, {"X-API-Key": API_KEYS[1]})


def _run_service(
    served: ServedModel,
    tmp_path: Path,
    extra: dict[str, str],
    headers: dict[str, str] | None = None,
) -> Iterator[Service]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVING_", "MLFLOW_"))}
    env |= {
        "SERVING_MODEL_URI": str(served.folder),
        "SERVING_PORT": str(port),
        "SERVING_PREDICTION_LOG": str(tmp_path / "predictions.db"),
        "SERVING_MAX_BATCH_ROWS": "50",
        **extra,
    }
    log = tmp_path / "service.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving"],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    running = Service(process, f"http://127.0.0.1:{port}", log, tmp_path / "predictions.db")
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"the service exited:\n{running.output()}"
            assert time.monotonic() < deadline, f"the service never got ready:\n{running.output()}"
            try:
                ready = httpx.get(f"{running.url}/ready", headers=headers, timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

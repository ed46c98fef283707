"""The teammate scenario, with the real servers (PostgreSQL, SeaweedFS's S3, an MLflow
tracking server): clone A trains and pushes; a fresh clone B pulls, finds nothing to
rerun, serves the champion from the shared registry and monitors against the pulled
reference. Needs a PostgreSQL server on the machine (skipped without one, unless
REQUIRE_STACK=1, as in CI)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import yaml
from mlflow import MlflowClient

from tests.pipelines.project import REPO, TINY_OVERRIDES, Project
from tests.stack.helpers import stack_env
from tests.stack.teammates import (
    client_env,
    first_clone,
    folder_bytes,
    second_clone,
    serving,
    stack,
)

pytestmark = pytest.mark.slow
MODEL_NAME = TINY_OVERRIDES["evaluate"]["registered_model_name"]
INSTALLED = REPO / ".venv/.installed"


@pytest.fixture(scope="module")
def shared(postgres_available: None) -> Iterator[dict[str, str]]:
    """A stack of the test's own (its folder, free ports), stopped at the end. The folder
    is not under pytest's tmp_path, whose 0700 parents keep the postgres user out."""
    folder = Path(tempfile.mkdtemp(prefix="stack-teammates-"))
    folder.chmod(0o755)
    settings = stack_env(folder)
    try:
        stack("up", settings)
        yield client_env(settings) | {"DVC_REMOTE": "shared"}
    finally:
        stack("down", settings)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def tracking_login(shared: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's own MLflow calls log in as the clones do: `stack env`'s pipeline user."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, shared[name])


@pytest.fixture(scope="module")
def teammate_a(tmp_path_factory: pytest.TempPathFactory, shared: dict[str, str]) -> Project:
    project = first_clone(tmp_path_factory.mktemp("a") / "project", shared)
    project.run("make", "train", timeout=900)
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "trained")
    project.run("make", "push", timeout=300)
    return project


def s3(env: dict[str, str]) -> object:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def keys(env: dict[str, str], bucket: str) -> list[str]:
    client = s3(env)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)  # type: ignore[attr-defined]
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_a_trains_against_the_server_and_the_model_lands_in_the_object_store(
    teammate_a: Project, shared: dict[str, str]
) -> None:
    client = MlflowClient(tracking_uri=shared["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    metadata = yaml.safe_load(teammate_a.path("models/model/MLmodel").read_text())["metadata"]
    assert champion.tags["model_fingerprint"] == metadata["model_fingerprint"]
    experiment = client.get_experiment_by_name(TINY_OVERRIDES["train"]["experiment_name"])
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) >= 8  # the parent, a child per candidate family, evaluate
    # Nothing of MLflow's on A's disk: runs in PostgreSQL, files in the object store.
    assert not teammate_a.path("mlflow.db").exists()
    assert not teammate_a.path("mlartifacts").exists()
    stored = keys(shared, "mlflow")
    assert any(key.endswith("model.skops") for key in stored), stored[:20]
    assert any(key.endswith("plots/precision_recall.png") for key in stored)
    # make push sent the DVC outputs to the same store.
    assert len(keys(shared, "dvc")) >= 10


def test_b_pulls_reruns_nothing_serves_the_champion_and_monitors(
    teammate_a: Project, shared: dict[str, str], tmp_path: Path
) -> None:
    installed_at = INSTALLED.stat().st_mtime
    b = second_clone(teammate_a, tmp_path / "b", shared)
    b.run("make", "pull", timeout=300)
    assert folder_bytes(b.path(".dvc/cache")) > 100_000
    repro = b.run("dvc", "repro", timeout=300)
    assert "Data and pipelines are up to date." in repro.stdout, repro.stdout
    reference = json.loads(b.path("data/reference/reference.json").read_text())

    with serving(b) as url:
        model = httpx.get(f"{url}/model", timeout=10).json()
        champion = MlflowClient(
            tracking_uri=shared["MLFLOW_TRACKING_URI"]
        ).get_model_version_by_alias(MODEL_NAME, "champion")
        assert (model["name"], model["version"], model["alias"]) == (
            MODEL_NAME,
            str(champion.version),
            "champion",
        )
        # The pulled reference describes the model the shared registry serves.
        assert model["model_fingerprint"] == reference["model_fingerprint"]
        b.run(
            "make",
            "replay",
            f"REPLAY_ARGS=--url {url} --rows 1500 --batch-size 100 --concurrency 2 --no-progress",
            timeout=300,
        )
    # What the image would serve: the same champion, exported from the shared registry.
    b.run("make", "export-model", timeout=300)
    exported = json.loads(b.path("build/model/registered_model.json").read_text())
    assert (exported["name"], exported["version"]) == (MODEL_NAME, str(champion.version))
    monitored = b.run("make", "monitor", check=False, timeout=300)
    # 0: no drift, 2 (make's code for any failure) only with the monitor's drift verdict.
    summary = json.loads(b.path("reports/monitoring/latest-summary.json").read_text())
    assert monitored.returncode == 0 or summary["verdict"] == "drift", monitored.stderr
    assert summary["rows"] == 1500
    assert summary["skipped"]["other_version_rows"] == 0
    assert summary["model_versions"] == [str(champion.version)]
    # B never wrote a store of its own, and no make in a clone re-synced the shared .venv.
    assert not b.path("mlflow.db").exists()
    assert INSTALLED.stat().st_mtime == installed_at

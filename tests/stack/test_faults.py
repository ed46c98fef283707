"""Faults with the real servers: the tracking server, its database or its object store
down, each named in one line with what to start, by the stages and by the service; wrong
S3 keys for the DVC remote; no, wrong or unpermitted credentials for the tracking server,
each one line naming the variables. Needs PostgreSQL (skipped without it unless
REQUIRE_STACK=1)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from stack.mlflow_auth import AuthApi
from stack.settings import StackSettings, load_secrets, tracking_uri
from stack.tracking_users import PERMISSIONS, TrackingUser
from tests.pipelines.project import TINY_OVERRIDES, Project
from tests.stack.helpers import run_alone, stack_env
from tests.stack.teammates import client_env, first_clone, serving, stack

pytestmark = pytest.mark.slow
FAIL_FAST_SECONDS = 60  # MLflow's client alone would retry for minutes


@pytest.fixture(scope="module")
def settings(servers_available: None) -> Iterator[dict[str, str]]:
    folder = Path(tempfile.mkdtemp(prefix="stack-faults-"))
    folder.chmod(0o755)  # as root, PostgreSQL runs as the postgres user
    chosen = stack_env(folder)
    try:
        stack("up", chosen)
        yield chosen
    finally:
        stack("down", chosen)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, settings: dict[str, str]) -> Project:
    """A tiny project on the stack, its data split (the stages before any MLflow call)."""
    made = first_clone(tmp_path_factory.mktemp("faults") / "project", client_env(settings))
    made.run("dvc", "repro", "split")
    return made


def train_fails(project: Project, env: dict[str, str] | None = None, secret: str = "") -> str:
    """The one line the train stage fails on, quickly, without a traceback (nor
    ``secret`` anywhere in what it said)."""
    began = time.monotonic()
    result = project.run("python", "-m", "pipelines.train", check=False, env=env, timeout=300)
    said = result.stdout + result.stderr
    assert result.returncode == 1, said
    assert not secret or secret not in said
    assert time.monotonic() - began < FAIL_FAST_SECONDS
    assert "Traceback" not in said
    [line] = [text for text in said.splitlines() if "MLflow tracking server" in text]
    return line


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("postgres", "answers, but its backend store (the database) does not"),
        ("s3", "answers, but its artifact store (the object store) does not"),
        ("mlflow", "is unreachable"),
    ],
)
def test_a_stage_names_the_server_and_what_to_start(
    project: Project, settings: dict[str, str], service: str, expected: str
) -> None:
    stack("down", settings, "--only", service)
    try:
        line = train_fails(project)
    finally:
        stack("up", settings)
    uri = client_env(settings)["MLFLOW_TRACKING_URI"]
    assert f"MLflow tracking server {uri} {expected}" in line
    assert "make stack-up" in line


def test_the_service_stays_up_and_says_why_it_has_no_model(
    project: Project, settings: dict[str, str]
) -> None:
    """The tracking server down at start-up: the service answers, /ready says why."""
    stack("down", settings, "--only", "mlflow")
    try:
        project.env["SERVING_MODEL_URI"] = "models:/tiny-detector@champion"
        with serving(project, ready=False) as url:
            health = httpx.get(f"{url}/health", timeout=5)
            ready = httpx.get(f"{url}/ready", timeout=5)
    finally:
        project.env.pop("SERVING_MODEL_URI")
        stack("up", settings)
    assert health.status_code == 200
    assert ready.status_code == 503
    uri = client_env(settings)["MLFLOW_TRACKING_URI"]
    assert f"MLflow tracking server {uri} is unreachable" in ready.text
    assert "make stack-up" in ready.text


def test_wrong_s3_keys_for_the_dvc_remote_are_a_clear_error(
    project: Project, settings: dict[str, str]
) -> None:
    result = project.run(
        "make", "push", check=False, env={"AWS_SECRET_ACCESS_KEY": "wrong"}, timeout=300
    )
    said = result.stdout + result.stderr
    assert result.returncode != 0
    assert "SignatureDoesNotMatch" in said or "InvalidAccessKeyId" in said, said[-3000:]
    assert "Traceback" not in said


LOGIN = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
WRONG = "not-the-pipeline-password"
STRANGER = {"username": "stranger", "password": "a-password-with-no-grant"}


@pytest.mark.parametrize(
    ("login", "expected"),
    [
        ({}, "wants a user and password (HTTP 401) and MLFLOW_TRACKING_USERNAME and "),
        (
            {LOGIN[0]: "pipeline", LOGIN[1]: WRONG},
            "rejected the user 'pipeline' or its password (HTTP 401)",
        ),
    ],
)
def test_no_or_wrong_credentials_are_one_line(
    project: Project, settings: dict[str, str], login: dict[str, str], expected: str
) -> None:
    kept = {name: project.env.pop(name) for name in LOGIN}
    try:
        line = train_fails(project, login, secret=login.get(LOGIN[1], ""))
    finally:
        project.env |= kept
    uri = client_env(settings)["MLFLOW_TRACKING_URI"]
    assert f"MLflow tracking server {uri} {expected}" in line
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in line


def test_a_user_without_permission_is_one_line(
    project: Project, settings: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The experiment is the pipeline user's; a user the admin made, with no grant, may
    not use it (NO_PERMISSIONS for whatever is not granted)."""
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    stack_settings = StackSettings()
    api = AuthApi(stack_settings, load_secrets(stack_settings))
    api.expect("POST", "/api/2.0/mlflow/users/create", body=STRANGER)
    login = client_env(settings)
    for name in LOGIN:
        monkeypatch.setenv(name, login[name])
    experiment = TINY_OVERRIDES["train"]["experiment_name"]
    client = MlflowClient(tracking_uri=login["MLFLOW_TRACKING_URI"])
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment)
    stranger = dict(zip(LOGIN, STRANGER.values(), strict=True))
    line = train_fails(project, stranger, secret=STRANGER["password"])
    assert (
        f"MLflow tracking server {login['MLFLOW_TRACKING_URI']} does not let user 'stranger' "
        f"use experiment '{experiment}' (HTTP 403)"
    ) in line


def test_compose_s_users_job_makes_the_pipeline_user_on_the_real_server(
    settings: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """stack/tracking_users.py alone (python -I -S, as compose's mlflow-users job runs
    it) against the stack's server: it makes a user with EDIT on every experiment and
    registered model, who then logs in; a second run changes nothing and says the same."""
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    stack_settings = StackSettings()
    secrets = load_secrets(stack_settings)
    uri = tracking_uri(stack_settings)
    password = "a-compose-password-of-the-test"
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_AUTH_ADMIN_USERNAME": stack_settings.mlflow_admin_username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.mlflow_admin_password,
        "MLFLOW_PIPELINE_USERNAME": "compose-pipeline",
        "MLFLOW_PIPELINE_PASSWORD": password,
    }
    for _ in range(2):
        done = run_alone(env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip() == f"tracking users ready on {uri}: compose-pipeline (EDIT)"
        assert password not in done.stdout + done.stderr
    api = AuthApi(stack_settings, secrets)
    assert api.can_log_in(TrackingUser("compose-pipeline", password, "a test"))
    listed = api.expect("GET", f"{PERMISSIONS}/list", query={"username": "compose-pipeline"})
    held = {
        (grant["resource_type"], grant["resource_pattern"], grant["permission"])
        for grant in listed["permissions"]
    }
    assert held == {("experiment", "*", "EDIT"), ("registered_model", "*", "EDIT")}

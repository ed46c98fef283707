"""STACK_* settings: checked at once, ports kept apart, secrets generated once and private."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import quote

import configobj
import pytest

from stack.settings import (
    DVC_REMOTE,
    PIPELINE_USER,
    REPO,
    Secrets,
    SettingsError,
    StackSettings,
    client_env,
    load_secrets,
    load_settings,
)


def test_defaults_are_absolute_and_inside_the_repository() -> None:
    settings = load_settings()
    assert settings.dir == REPO / ".stack"
    assert settings.dir.is_absolute()
    ports = [port for port, _ in settings.ports()]
    # postgres, mlflow, 4 weed servers x 2, the balancer and its admin API, 2 replicas
    assert len(ports) == len(set(ports)) == 14
    assert max(ports) < 65_536


def test_a_relative_dir_is_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STACK_DIR", "here")
    assert load_settings().dir == tmp_path / "here"


def test_every_problem_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACK_POSGRES_PORT", "1")
    monkeypatch.setenv("STACK_S3_PORT", "60000")  # its gRPC port would be 70000
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "STACK_POSGRES_PORT is not a setting (did you mean STACK_POSTGRES_PORT?)" in message
    assert "STACK_S3_PORT='60000': Input should be less than or equal to 55535" in message


def test_ports_that_collide_through_grpc_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACK_MLFLOW_PORT", "28333")  # the S3 gateway's gRPC port
    with pytest.raises(SettingsError, match=r"STACK_MLFLOW_PORT and STACK_S3_PORT \+ 10000"):
        load_settings()


def test_secrets_are_generated_once_into_a_private_file(tmp_path: Path) -> None:
    settings = StackSettings(dir=tmp_path)
    first = load_secrets(settings)
    assert stat.S_IMODE(settings.secrets_file.stat().st_mode) == 0o600
    assert load_secrets(settings) == first  # the same ones every time
    values = [getattr(first, name) for name in Secrets.__dataclass_fields__]
    assert len(set(values)) == len(values) == 9
    assert all(len(value) >= 12 for value in values)  # MLflow's rule for its passwords
    assert all(value not in repr(first) for value in values)


def test_the_tracking_server_s_users_are_checked_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STACK_MLFLOW_ADMIN_PASSWORD", "short")
    monkeypatch.setenv("STACK_MLFLOW_ADMIN_USERNAME", PIPELINE_USER)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "STACK_MLFLOW_ADMIN_PASSWORD=<secret>: Value error, MLflow wants passwords of at " in (
        message
    )
    assert "short" not in message
    assert "'pipeline' is a user the stack keeps: give the admin another name" in message


def test_given_secrets_win_and_the_rest_are_kept(tmp_path: Path) -> None:
    generated = load_secrets(StackSettings(dir=tmp_path))
    given = load_secrets(StackSettings(dir=tmp_path, s3_secret_key="from-the-environment"))
    assert given.s3_secret_key == "from-the-environment"
    assert given.s3_access_key == generated.s3_access_key
    assert given.postgres_password == generated.postgres_password


def test_client_env_matches_the_settings(tmp_path: Path) -> None:
    settings = StackSettings(dir=tmp_path, s3_port=18500, mlflow_port=16000, postgres_port=16500)
    env = client_env(settings)
    keys = load_secrets(settings)
    password = quote(keys.postgres_password, safe="")
    assert env == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:16000",
        "MLFLOW_TRACKING_USERNAME": "pipeline",
        "MLFLOW_TRACKING_PASSWORD": keys.mlflow_pipeline_password,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:18500",
        "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:18500",
        "AWS_ACCESS_KEY_ID": keys.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": keys.s3_secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "DVC_REMOTE": "shared",
        "SERVING_PREDICTION_LOG": f"postgresql://mlflow:{password}@127.0.0.1:16500/predictions",
        "FRAUD_API_KEY": keys.api_key,
    }


def test_an_api_key_the_replicas_would_refuse_is_refused_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STACK_API_KEY", "too-short")
    monkeypatch.setenv("STACK_API_PROBE_KEY", "has a space but is long enough")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "STACK_API_KEY=<secret>: Value error, a key is shorter than 16 characters" in message
    assert "STACK_API_PROBE_KEY=<secret>: Value error, a key holds a character" in message
    assert "too-short" not in message
    assert "has a space" not in message


def test_the_dvc_remote_the_env_names_is_on_the_stack_s_bucket() -> None:
    """.dvc/config is committed and the settings are not: a test keeps them in step."""
    # DVC reads its config with configobj (indented keys, which configparser misreads).
    remote = configobj.ConfigObj(str(REPO / ".dvc/config"))[f'remote "{DVC_REMOTE}"']
    assert remote["url"].startswith(f"s3://{StackSettings.model_fields['dvc_bucket'].default}/")
    # Endpoint and keys come from the environment (stack env), never from the repository.
    assert set(remote) == {"url"}


def test_replica_ports_are_checked_against_the_others(tmp_path: Path) -> None:
    """Replica i is on STACK_API_REPLICA_PORT + i: one that lands on another service's
    port is refused with both settings named."""
    with pytest.raises(ValueError, match="STACK_API_REPLICA_PORT \\+ 1 and STACK_MLFLOW_PORT"):
        StackSettings(dir=tmp_path, mlflow_port=16001, api_replica_port=16000)
    settings = StackSettings(
        dir=tmp_path, api_replicas=0, mlflow_port=16001, api_replica_port=16000
    )
    assert all("API" not in owner for _, owner in settings.ports())  # no API: no ports

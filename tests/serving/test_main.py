"""``python -m serving``: bad settings exit with code 2 and a message before uvicorn is
even imported; good ones reach uvicorn.run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from serving import __main__ as entry
from serving.metrics import MULTIPROCESS_ENV


def run_serving(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    return subprocess.run(
        [sys.executable, "-m", "serving"],
        cwd=tmp_path,
        env=env | variables,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"SERVING_PORT": "0"}, "SERVING_PORT='0': Input should be greater than or equal to 1"),
        ({"SERVING_WORKERS": "lots"}, "SERVING_WORKERS='lots': "),
        ({"SERVING_MODLE_URI": "x"}, "SERVING_MODLE_URI is not a setting (did you mean "),
    ],
    ids=["port", "workers", "typo"],
)
def test_bad_settings_exit_2_with_the_message(tmp_path, variables, expected):
    started = time.perf_counter()
    result = run_serving(tmp_path, **variables)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("serving: invalid service settings:\n")
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert time.perf_counter() - started < 30  # fails before loading anything heavy
    assert not (tmp_path / "logs").exists()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "port {port} on 127.0.0.1 is in use by another program"),
        ("192.0.2.1", "SERVING_HOST='192.0.2.1' is not an address of this machine"),
        ("no-such-host.invalid", "SERVING_HOST='no-such-host.invalid' is not a name or"),
    ],
    ids=["port-taken", "not-this-machine", "unresolvable"],
)
def test_an_address_uvicorn_cannot_listen_on_exits_2_before_the_model_loads(
    tmp_path: Path, taken_port: int, host: str, expected: str
) -> None:
    result = run_serving(tmp_path, SERVING_HOST=host, SERVING_PORT=str(taken_port))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()  # one line, no traceback, no uvicorn start
    assert line.startswith("serving: " + expected.format(port=taken_port))
    if host == "127.0.0.1":
        assert f"make serve PORT={taken_port + 1}" in line


@pytest.fixture
def uvicorn_calls(monkeypatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append({"app": app} | kwargs))
    # main() sets the variable itself: setenv first so that teardown removes it again
    # (delenv of an unset variable records nothing to undo).
    monkeypatch.setenv(MULTIPROCESS_ENV, "")
    monkeypatch.delenv(MULTIPROCESS_ENV)
    return calls


def test_main_runs_uvicorn_with_the_settings(monkeypatch, tmp_path, uvicorn_calls):
    monkeypatch.setenv("SERVING_PREDICTION_LOG", str(tmp_path / "p.db"))
    monkeypatch.setenv("SERVING_PORT", "9123")
    monkeypatch.setenv("SERVING_HOST", "0.0.0.0")
    monkeypatch.setenv("SERVING_LOG_LEVEL", "WARNING")
    assert entry.main() == 0
    log_config = uvicorn_calls[0].pop("log_config")
    # The service's own logger is configured in every worker, at the chosen level.
    assert log_config["loggers"]["serving"]["level"] == "WARNING"
    assert "uvicorn.access" in log_config["loggers"]
    assert uvicorn_calls == [
        {
            "app": "serving.app:create_app",
            "factory": True,
            "host": "0.0.0.0",
            "port": 9123,
            "workers": 1,
            "log_level": "warning",
            "access_log": False,
            "timeout_graceful_shutdown": 30,
        }
    ]
    assert MULTIPROCESS_ENV not in os.environ


def test_main_runs_openmp_on_one_thread_unless_told_otherwise(monkeypatch, tmp_path, uvicorn_calls):
    monkeypatch.setenv("SERVING_PREDICTION_LOG", str(tmp_path / "p.db"))
    monkeypatch.setenv("OMP_NUM_THREADS", "unset below; restored after the test")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert entry.main() == 0
    assert os.environ["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert entry.main() == 0
    assert os.environ["OMP_NUM_THREADS"] == "4"


def test_several_workers_share_a_prometheus_folder(monkeypatch, tmp_path, uvicorn_calls):
    monkeypatch.setenv("SERVING_PREDICTION_LOG", str(tmp_path / "p.db"))
    monkeypatch.setenv("SERVING_WORKERS", "3")
    assert entry.main() == 0
    assert uvicorn_calls[0]["workers"] == 3
    folder = Path(os.environ[MULTIPROCESS_ENV])
    assert folder.is_dir()
    folder.rmdir()


def test_an_existing_prometheus_folder_is_kept(monkeypatch, tmp_path, uvicorn_calls):
    monkeypatch.setenv("SERVING_PREDICTION_LOG", str(tmp_path / "p.db"))
    monkeypatch.setenv("SERVING_WORKERS", "2")
    monkeypatch.setenv(MULTIPROCESS_ENV, str(tmp_path))
    assert entry.main() == 0
    assert os.environ[MULTIPROCESS_ENV] == str(tmp_path)


def test_main_returns_2_on_bad_settings(monkeypatch, capsys, uvicorn_calls):
    monkeypatch.setenv("SERVING_PORT", "http")
    assert entry.main() == 2
    assert "SERVING_PORT='http'" in capsys.readouterr().err
    assert uvicorn_calls == []


def test_create_log_makes_the_tables_and_exits(tmp_path, uvicorn_calls):
    log = tmp_path / "logs" / "p.db"
    made = subprocess.run(
        [sys.executable, "-m", "serving", "create-log"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
        | {"SERVING_PREDICTION_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == f"prediction log {log}: tables ready"
    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(log) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"predictions", "schemas"} <= tables
    assert uvicorn_calls == []


def test_create_log_names_a_store_that_is_down_without_its_password(monkeypatch, capsys):
    monkeypatch.setenv("SERVING_PREDICTION_LOG", "postgresql://u:hunter2@127.0.0.1:1/db")
    assert entry.main(["create-log"]) == 1
    err = capsys.readouterr().err
    assert "prediction log postgresql://u:***@127.0.0.1:1/db" in err
    assert "hunter2" not in err


def test_an_unknown_command_is_a_usage_error(capsys):
    assert entry.main(["serve-everything"]) == 2
    assert "usage: python -m serving [create-log]" in capsys.readouterr().err

"""Property-based tests of the running service against its own OpenAPI document.

The real entry point (``python -m serving``, uvicorn) serves the fixture model on a free
port; schemathesis generates valid and invalid requests for every operation and checks
that none gets a server error and every answer matches the document. Slow: a process
start and a few hundred requests (about 10 s here)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import ServedModel

pytestmark = pytest.mark.slow
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Service:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path, db: Path) -> None:
        self.process, self.url, self.log, self.db = process, url, log, db

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@pytest.fixture
def service(served: ServedModel, tmp_path: Path) -> Iterator[Service]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVING_", "MLFLOW_"))}
    env |= {
        "SERVING_MODEL_URI": str(served.folder),
        "SERVING_PORT": str(port),
        "SERVING_PREDICTION_LOG": str(tmp_path / "predictions.db"),
        "SERVING_MAX_BATCH_ROWS": "50",
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
                if httpx.get(f"{running.url}/ready", timeout=2).status_code == 200:
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


def test_no_generated_request_gets_a_server_error_or_breaks_the_document(service, tmp_path):
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{service.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--seed",
            "20261130",
            "--workers",
            "1",
            "--request-timeout",
            "10",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    report = f"{result.stdout[-8000:]}\n{result.stderr[-2000:]}\n--- service\n{service.output()}"
    assert result.returncode == 0, report
    assert "No issues found" in result.stdout, report
    assert "Operations:       6 selected / 6 total" in result.stdout, report
    assert "ERROR" not in service.output()
    assert httpx.get(f"{service.url}/ready", timeout=5).status_code == 200

    # A graceful stop (SIGTERM, as Docker sends) drains the prediction log. (uvicorn
    # re-raises the signal once it has shut down, so the exit status reports it.)
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=30) in (0, -signal.SIGTERM), service.output()
    assert "Application shutdown complete" in service.output()
    assert "prediction log closed" in service.output()
    with sqlite3.connect(service.db) as connection:
        logged = connection.execute("SELECT count(*) FROM predictions").fetchone()[0]
    assert logged > 0
    assert f"prediction log closed: {logged} rows written" in service.output()

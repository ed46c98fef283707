"""Property-based tests of the running service against its own OpenAPI document.

The real entry point (``python -m serving``, uvicorn) serves the fixture model on a free
port; schemathesis generates valid and invalid requests for every operation and checks
that none gets a server error and every answer matches the document. Slow: a process
start and a few hundred requests (about 10 s here)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


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
    assert "Operations:       7 selected / 7 total" in result.stdout, report
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

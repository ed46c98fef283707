"""``python -m serving.probe``, the Kubernetes readiness probe: 0 when the service
answers /ready with the key it reads from the service's own settings, 1 with one line
otherwise, and never the key in what it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from monitoring.baseline import free_port
from tests.serving.conftest import API_KEYS, Service

pytestmark = pytest.mark.slow  # a real service


def probe(
    service_url: str | None, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    port = str(urlsplit(service_url).port) if service_url else str(free_port())
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    return subprocess.run(
        [sys.executable, "-m", "serving.probe", *args],
        env=clean | {"SERVING_PORT": port} | env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_ready_with_the_services_own_key(keyed_service: Service, tmp_path: Path):
    key_file = tmp_path / "mounted-secret"
    key_file.write_text(f"{API_KEYS[1]}\n")
    for env in ({"SERVING_API_KEYS": API_KEYS[0]}, {"SERVING_API_KEYS_FILE": str(key_file)}):
        done = probe(keyed_service.url, env)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, "/ready answered 401"),
        ({"SERVING_API_KEYS": "a-key-the-service-does-not-know"}, "/ready answered 401"),
        (
            {"SERVING_API_KEYS_FILE": "/no/such/file"},
            "SERVING_API_KEYS_FILE: /no/such/file does not exist",
        ),
    ],
)
def test_not_ready_says_why_in_one_line(keyed_service: Service, env: dict[str, str], said: str):
    done = probe(keyed_service.url, env)
    assert done.returncode == 1
    assert said in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert all(key not in done.stderr for key in [*API_KEYS, *env.values()] if len(key) > 20)


def test_nothing_listening_is_not_ready():
    done = probe(None, {})
    assert done.returncode == 1
    assert "Connection refused" in done.stderr


def test_another_path_can_be_asked(keyed_service: Service):
    assert probe(keyed_service.url, {}, "/health").returncode == 0

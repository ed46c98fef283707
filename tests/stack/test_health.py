"""Health checks without the real servers: a stand-in S3 that rejects the keys, nothing
listening, and which PostgreSQL server is chosen."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stack import postgres
from stack.mlflow_server import MlflowServer
from stack.processes import StackError
from stack.s3 import SeaweedS3
from stack.service import NotReady
from stack.settings import Secrets, StackSettings
from tests.stack.helpers import free_ports

SECRETS = Secrets(
    **dict.fromkeys(Secrets.__dataclass_fields__, "a-secret-of-the-test")
    | {"s3_access_key": "STACKKEY"}
)


def rejecting(code: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"<Error><Code>{code}</Code><Message>no</Message></Error>".encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(params=["SignatureDoesNotMatch", "InvalidAccessKeyId"])
def fake_s3(request: pytest.FixtureRequest) -> Iterator[int]:
    """An S3 endpoint that refuses every request's credentials; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), rejecting(request.param))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def settings(tmp_path: Path, **ports: int) -> StackSettings:
    return StackSettings.model_validate({"dir": tmp_path} | ports)


def test_wrong_s3_keys_name_the_credentials(fake_s3: int, tmp_path: Path) -> None:
    service = SeaweedS3(settings(tmp_path, s3_port=fake_s3), SECRETS)
    with pytest.raises(StackError, match="rejected the credentials") as raised:
        service.health()
    assert "STACK_S3_ACCESS_KEY, STACK_S3_SECRET_KEY" in str(raised.value)


def tracking_server(login_status: int) -> type[BaseHTTPRequestHandler]:
    """/health says OK; the login check answers ``login_status`` (404: no such route)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/health"
            self.send_response(200 if ok else login_status)
            self.end_headers()
            self.wfile.write(b"OK" if ok else b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.mark.parametrize(
    ("login_status", "expected"),
    [
        (401, "refuses the password of its user 'admin' (STACK_MLFLOW_ADMIN_PASSWORD or "),
        (404, "runs without logins (an older stack started it)"),
    ],
)
def test_a_tracking_server_with_other_logins_or_none_is_named(
    login_status: int, expected: str, tmp_path: Path
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), tracking_server(login_status))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        service = MlflowServer(settings(tmp_path, mlflow_port=server.server_address[1]), SECRETS)
        with pytest.raises(StackError, match=re.escape(expected)) as raised:
            service.health()
    finally:
        server.shutdown()
        server.server_close()
    assert "`python -m stack down --only mlflow` then `up`" in str(raised.value)
    assert "a-secret-of-the-test" not in str(raised.value)


def test_nothing_listening_is_not_ready_yet(tmp_path: Path) -> None:
    s3_port, mlflow_port, postgres_port = free_ports(3)
    chosen = settings(tmp_path, s3_port=s3_port, mlflow_port=mlflow_port)
    with pytest.raises(NotReady):
        SeaweedS3(chosen, SECRETS).health()
    with pytest.raises(NotReady):
        MlflowServer(chosen, SECRETS).health()
    with pytest.raises(NotReady):
        postgres.Postgres(settings(tmp_path, postgres_port=postgres_port), SECRETS).health()


def fake_server(folder: Path, version: str) -> Path:
    """A folder with an initdb and a postgres that only knows --version."""
    folder.mkdir(parents=True)
    for tool in ("initdb", "postgres"):
        script = folder / tool
        script.write_text(f"#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n")
        script.chmod(0o755)
    return folder


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two fake servers, 15 and 16, where Debian keeps them; nothing else found."""
    root = tmp_path / "usr/lib/postgresql"
    fake_server(root / "15/bin", "15.8")
    fake_server(root / "16/bin", "16.4")
    monkeypatch.setattr(postgres, "SEARCH_GLOBS", (f"{root}/*/bin",))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    return root


def test_the_newest_server_starts_a_new_data_folder(servers: Path, tmp_path: Path) -> None:
    assert postgres.choose_bin_dir(None, tmp_path / "data") == servers / "16/bin"


def test_a_data_folder_keeps_its_major_version(servers: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    assert postgres.choose_bin_dir(None, data) == servers / "15/bin"
    (data / "PG_VERSION").write_text("14\n")
    with pytest.raises(StackError, match=r"made by PostgreSQL 14.*apt-get install postgresql-14"):
        postgres.choose_bin_dir(None, data)


def test_the_version_is_the_servers_own(servers: Path) -> None:
    assert postgres.server_version(servers / "15/bin") == "PostgreSQL 15.8"

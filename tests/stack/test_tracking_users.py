"""stack/tracking_users.py run alone, as compose.yaml's mlflow-users job runs it: with
``python -I -S`` (no site-packages: the standard library only, as in any image), its
failures are one line that names what to set and shows no password. Against the real
tracking server: tests/stack/test_faults.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stack import tracking_users
from tests.stack.helpers import free_ports, run_alone

PASSWORD = "a-password-of-the-test"
ADMIN = {
    "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
    "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
    "MLFLOW_PIPELINE_PASSWORD": PASSWORD,
}


@pytest.fixture
def refusing_server() -> Iterator[str]:
    """A tracking server whose login check refuses every password (401)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error_code": "UNAUTHENTICATED"}')

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_missing_settings_are_named() -> None:
    done = run_alone({})
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "tracking users: set MLFLOW_TRACKING_URI, MLFLOW_AUTH_ADMIN_USERNAME, "
        "MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_PIPELINE_PASSWORD or MLFLOW_SERVING_PASSWORD"
    )


def test_a_server_that_never_answers_is_named_after_the_wait() -> None:
    (port,) = free_ports(1)
    uri = f"http://127.0.0.1:{port}"
    done = run_alone(ADMIN | {"MLFLOW_TRACKING_URI": uri, "MLFLOW_USERS_WAIT_SECONDS": "0"})
    assert done.returncode == 1
    assert done.stderr.startswith(f"tracking users: the server does not answer: GET {uri}/")
    assert PASSWORD not in done.stdout + done.stderr


def test_a_refused_admin_is_one_line_naming_its_variable(refusing_server: str) -> None:
    done = run_alone(ADMIN | {"MLFLOW_TRACKING_URI": refusing_server})
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"tracking users: {refusing_server} refuses the admin 'admin': fix "
        "MLFLOW_AUTH_ADMIN_PASSWORD (the server keeps the password of its first start)"
    )
    assert PASSWORD not in done.stdout + done.stderr


def test_only_users_with_a_password_are_made() -> None:
    users = tracking_users.users_from(
        {"MLFLOW_PIPELINE_PASSWORD": PASSWORD, "MLFLOW_PIPELINE_USERNAME": "ci"}
    )
    assert [(u.name, u.permission, u.setting) for u in users] == [
        ("ci", "EDIT", "MLFLOW_PIPELINE_PASSWORD")
    ]
    assert PASSWORD not in repr(users)

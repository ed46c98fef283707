"""The tracking server's users, kept through its REST API as its admin: each exists, logs
in with the password it is given, and holds one permission on every experiment and
registered model (``*``). Idempotent.

The process stack calls this at every start of its server (stack/mlflow_auth.py), and
compose.yaml runs this file alone as a one-shot job in the tracking server's image
(``python tracking_users.py``, configured by the environment: see :func:`main`). So it
imports nothing but the standard library (tests/stack checks it runs with ``python -I -S``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

USERS = "/api/2.0/mlflow/users"
PERMISSIONS = "/api/3.0/mlflow/users/permissions"
# Resource types the users get a permission on, for every resource ("*").
RESOURCE_TYPES = ("experiment", "registered_model")
TIMEOUT = 10


class UsersError(Exception):
    """A call the server refused, or a state it should not be in (the message says)."""


class UnreachableError(UsersError):
    """The server did not answer (it may still be starting)."""


@dataclasses.dataclass(frozen=True)
class TrackingUser:
    name: str
    password: str = dataclasses.field(repr=False)
    # Where its password comes from (a setting, a variable), for messages.
    setting: str
    # On every experiment and registered model; what the user creates, it manages.
    permission: str = "READ"


class UsersApi:
    """The server's user and permission REST API, called as ``admin``. A subclass may
    raise its own exception types (:meth:`failed`, :meth:`unreachable`)."""

    # What a server without logins (no basic-auth app) is told to do.
    no_logins_fix = ": restart it with `mlflow server --app-name basic-auth`"

    def __init__(self, base: str, admin: TrackingUser) -> None:
        self.base = base.rstrip("/")
        self.admin = admin

    def failed(self, message: str) -> Exception:
        return UsersError(message)

    def unreachable(self, message: str) -> Exception:
        return UnreachableError(message)

    def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, str] | None = None,
        user: TrackingUser | None = None,
    ) -> tuple[int, Any]:
        """The HTTP status and the JSON body (None if not JSON) of one call."""
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url, method=method, headers=_basic(user or self.admin))
        if body is not None:
            request.data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return int(response.status), _json(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _json(error.read())
        except (urllib.error.URLError, OSError) as error:
            raise self.unreachable(f"{method} {url}: {error}") from None

    def expect(self, method: str, path: str, **kwargs: Any) -> Any:
        """The body of a call that must succeed; else an error naming it (the server's
        message names no password: it never echoes one)."""
        status, body = self.call(method, path, **kwargs)
        if status != 200:
            message = body.get("message") if isinstance(body, dict) else None
            raise self.failed(f"{method} {path} as the admin: HTTP {status}: {message or body}")
        return body

    def can_log_in(self, user: TrackingUser) -> bool:
        """The server takes ``user``'s password (401: it does not)."""
        status, _ = self.call("GET", f"{USERS}/current", user=user)
        if status == 404:  # no such route: a server without logins
            raise self.failed(f"the tracking server runs without logins{self.no_logins_fix}")
        if status not in (200, 401):
            raise self.failed(f"GET {USERS}/current as {user.name!r}: HTTP {status}")
        return status == 200


def _basic(user: TrackingUser) -> dict[str, str]:
    token = base64.b64encode(f"{user.name}:{user.password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode(errors="replace")[:200]


def ensure_users(api: UsersApi, users: list[TrackingUser]) -> None:
    """Each user exists, logs in with its password, and holds its permission on every
    experiment and registered model."""
    for user in users:
        _ensure_user(api, user)
        _ensure_grants(api, user)


def _ensure_user(api: UsersApi, user: TrackingUser) -> None:
    status, _ = api.call("GET", f"{USERS}/get", query={"username": user.name})
    if status == 404:
        api.expect(
            "POST", f"{USERS}/create", body={"username": user.name, "password": user.password}
        )
        return
    if status != 200:
        raise api.failed(f"GET {USERS}/get as the admin: HTTP {status}")
    if not api.can_log_in(user):  # its password changed since
        body = {"username": user.name, "password": user.password}
        api.expect("PATCH", f"{USERS}/update-password", body=body)


def _ensure_grants(api: UsersApi, user: TrackingUser) -> None:
    listed = api.expect("GET", f"{PERMISSIONS}/list", query={"username": user.name})
    for resource_type in RESOURCE_TYPES:
        held = {
            row["permission"]
            for row in listed.get("permissions", [])
            if row["resource_type"] == resource_type and row["resource_pattern"] == "*"
        }
        if held == {user.permission}:
            continue
        grant = {"username": user.name, "resource_type": resource_type, "resource_id": "*"}
        if held:  # another level: a grant is not updated in place
            api.expect("POST", f"{PERMISSIONS}/revoke", body=grant)
        api.expect("POST", f"{PERMISSIONS}/grant", body=grant | {"permission": user.permission})


# ------------------------------------------------------------------ compose's one-shot job

# The variables of main(): the server, its admin (as the server itself reads them), and
# each user's name and password (a user whose password is unset is not made).
URI_VARIABLE = "MLFLOW_TRACKING_URI"
ADMIN_VARIABLES = ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD")
# (name variable, default name, password variable, permission)
USER_VARIABLES = (
    ("MLFLOW_PIPELINE_USERNAME", "pipeline", "MLFLOW_PIPELINE_PASSWORD", "EDIT"),
    ("MLFLOW_SERVING_USERNAME", "serving", "MLFLOW_SERVING_PASSWORD", "READ"),
)
WAIT_VARIABLE = "MLFLOW_USERS_WAIT_SECONDS"


def users_from(environment: dict[str, str]) -> list[TrackingUser]:
    return [
        TrackingUser(environment.get(name, default), environment[password], password, level)
        for name, default, password, level in USER_VARIABLES
        if environment.get(password)
    ]


def main(environment: dict[str, str] | None = None) -> int:
    """Make the users the environment names, waiting for the server to answer; one line
    on stdout when done, one on stderr (exit 1) when not. No password is ever printed."""
    env = dict(os.environ if environment is None else environment)
    missing = [name for name in (URI_VARIABLE, *ADMIN_VARIABLES) if not env.get(name)]
    users = users_from(env)
    if not users:
        missing.append(" or ".join(password for _, _, password, _ in USER_VARIABLES))
    if missing:
        print(f"tracking users: set {', '.join(missing)}", file=sys.stderr)
        return 1
    admin = TrackingUser(env[ADMIN_VARIABLES[0]], env[ADMIN_VARIABLES[1]], ADMIN_VARIABLES[1])
    api = UsersApi(env[URI_VARIABLE], admin)
    deadline = time.monotonic() + float(env.get(WAIT_VARIABLE, "120"))
    while True:
        try:
            if not api.can_log_in(admin):
                print(
                    f"tracking users: {api.base} refuses the admin {admin.name!r}: fix "
                    f"{ADMIN_VARIABLES[1]} (the server keeps the password of its first start)",
                    file=sys.stderr,
                )
                return 1
            ensure_users(api, users)
        except UnreachableError as error:
            if time.monotonic() < deadline:
                time.sleep(2)
                continue
            print(f"tracking users: the server does not answer: {error}", file=sys.stderr)
            return 1
        except UsersError as error:
            print(f"tracking users: {error}", file=sys.stderr)
            return 1
        made = ", ".join(f"{user.name} ({user.permission})" for user in users)
        print(f"tracking users ready on {api.base}: {made}")
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""The tracking server's users: MLflow's basic-auth app, its configuration file, and the
users the stack keeps (the pipeline's, the API replicas').

Users and permissions live in their own PostgreSQL database (``mlflow_auth``) beside the
runs' (``mlflow``): they name experiment ids and model names of that store, so they are
backed up, restored and removed with it, and the server keeps no state on its disk.

Every user but the admin starts with no permission at all (``NO_PERMISSIONS``): a client
without credentials, or with unknown ones, reads nothing. A user gets MANAGE on what it
creates; the stack's users also get a permission on every experiment and registered
model (``*``), so the pipeline can log to an experiment, and move the alias of a model,
that someone else created first.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Any

from stack.processes import StackError
from stack.service import NotReady
from stack.settings import (
    PIPELINE_USER,
    SERVING_USER,
    Secrets,
    StackSettings,
    tracking_uri,
    variable,
)

# Resource types the stack's users get a permission on, for every resource ("*").
RESOURCE_TYPES = ("experiment", "registered_model")
USERS = "/api/2.0/mlflow/users"
PERMISSIONS = "/api/3.0/mlflow/users/permissions"
TIMEOUT = 10


@dataclasses.dataclass(frozen=True)
class TrackingUser:
    name: str
    password: str = dataclasses.field(repr=False)
    # The setting of its password, for messages.
    setting: str
    # On every experiment and registered model; what the user creates, it manages.
    permission: str = "READ"


def admin(settings: StackSettings, secrets: Secrets) -> TrackingUser:
    password = secrets.mlflow_admin_password
    return TrackingUser(settings.mlflow_admin_username, password, "mlflow_admin_password")


def stack_users(secrets: Secrets) -> list[TrackingUser]:
    """The pipeline writes runs, registers models and moves aliases (EDIT); the API
    replicas only load the champion (READ)."""
    return [
        TrackingUser(
            PIPELINE_USER, secrets.mlflow_pipeline_password, "mlflow_pipeline_password", "EDIT"
        ),
        TrackingUser(
            SERVING_USER, secrets.mlflow_serving_password, "mlflow_serving_password", "READ"
        ),
    ]


def auth_config(*, admin_username: str, database_url: str, made_by: str) -> str:
    """MLflow's basic_auth.ini: the stack's and compose.yaml's (deploy/mlflow). No secret
    in it: the admin's password comes from MLFLOW_AUTH_ADMIN_PASSWORD, the database's
    from PGPASSWORD."""
    return f"""# Made by {made_by}: edits go.
[mlflow]
# No credentials, unknown ones, or a user without a grant: nothing to read.
default_permission = NO_PERMISSIONS
database_uri = {database_url}
admin_username = {admin_username}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


class AuthApi:
    """The server's user and permission REST API, called as its admin."""

    def __init__(self, settings: StackSettings, secrets: Secrets) -> None:
        self.base = tracking_uri(settings)
        self.admin = admin(settings, secrets)
        self.settings = settings

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
            raise NotReady(f"{method} {url}: {error}") from None

    def expect(self, method: str, path: str, **kwargs: Any) -> Any:
        """The body of a call that must succeed; else a StackError naming it (the
        server's message names no password: it never echoes one)."""
        status, body = self.call(method, path, **kwargs)
        if status != 200:
            message = body.get("message") if isinstance(body, dict) else None
            raise StackError(f"{method} {path} as the admin: HTTP {status}: {message or body}")
        return body

    def can_log_in(self, user: TrackingUser) -> bool:
        """The server takes ``user``'s password (401: it does not)."""
        status, _ = self.call("GET", f"{USERS}/current", user=user)
        if status == 404:  # no such route: a server without logins
            raise StackError(
                "the tracking server runs without logins (an older stack started it): "
                "`python -m stack down --only mlflow` then `up` restarts it with them"
            )
        if status not in (200, 401):
            raise StackError(f"GET {USERS}/current as {user.name!r}: HTTP {status}")
        return status == 200


def _basic(user: TrackingUser) -> dict[str, str]:
    token = base64.b64encode(f"{user.name}:{user.password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode(errors="replace")[:200]


# ------------------------------------------------------------------------- the admin


def ensure_admin(api: AuthApi, database_url: str) -> None:
    """The admin logs in with the password the settings give now. MLflow makes the admin
    from them at its first start only and ignores a later change; no REST call can set
    a password without the old one, so a changed one is written into the store."""
    if api.can_log_in(api.admin):
        return
    reset_password(database_url, api.admin)
    if not api.can_log_in(api.admin):
        raise StackError(
            f"the tracking server refuses its admin {api.admin.name!r} even after the "
            f"password was reset in its user store: see {api.settings.log_dir / 'mlflow.log'}"
        )


def reset_password(database_url: str, user: TrackingUser) -> None:
    """Set ``user``'s password in the auth store itself, through MLflow's own store code
    (its hashing), while the server runs: it keeps no cache of passwords by default."""
    # Imported here: it builds MLflow's whole Flask app (2 s), needed only for a reset;
    # quietly: its deprecation warnings are the server's business.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore  # noqa: PLC0415

    store: Any = SqlAlchemyStore()
    store.init_db(database_url)
    try:
        store.update_user(user.name, password=user.password)
    finally:
        store.engine.dispose()


# ------------------------------------------------------------------ the stack's users


def ensure_users(api: AuthApi, users: list[TrackingUser]) -> None:
    """Each user exists, logs in with its password from the settings, and holds its
    permission on every experiment and registered model: idempotent, run at every start."""
    for user in users:
        _ensure_user(api, user)
        _ensure_grants(api, user)


def _ensure_user(api: AuthApi, user: TrackingUser) -> None:
    status, _ = api.call("GET", f"{USERS}/get", query={"username": user.name})
    if status == 404:
        api.expect(
            "POST", f"{USERS}/create", body={"username": user.name, "password": user.password}
        )
        return
    if status != 200:
        raise StackError(f"GET {USERS}/get as the admin: HTTP {status}")
    if not api.can_log_in(user):  # its password setting changed since
        body = {"username": user.name, "password": user.password}
        api.expect("PATCH", f"{USERS}/update-password", body=body)


def _ensure_grants(api: AuthApi, user: TrackingUser) -> None:
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


def refused(user: TrackingUser, settings: StackSettings) -> StackError:
    """What `up` and `status` say when the running server refuses a user of the stack's."""
    return StackError(
        f"the tracking server refuses the password of its user {user.name!r} "
        f"({variable(user.setting)} or {settings.secrets_file}): it was set after the "
        "server started; `python -m stack down --only mlflow` then `up` applies it"
    )

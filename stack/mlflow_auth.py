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
from stack.tracking_users import TrackingUser, UsersApi, ensure_users

__all__ = ["AuthApi", "TrackingUser", "ensure_users"]


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


class AuthApi(UsersApi):
    """The server's user and permission REST API, called as the stack's admin; its
    failures are the stack's (StackError; NotReady while the server does not answer)."""

    no_logins_fix = (
        " (an older stack started it): `python -m stack down --only mlflow` then `up` "
        "restarts it with them"
    )

    def __init__(self, settings: StackSettings, secrets: Secrets) -> None:
        super().__init__(tracking_uri(settings), admin(settings, secrets))
        self.settings = settings

    def failed(self, message: str) -> Exception:
        return StackError(message)

    def unreachable(self, message: str) -> Exception:
        return NotReady(message)


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


def refused(user: TrackingUser, settings: StackSettings) -> StackError:
    """What `up` and `status` say when the running server refuses a user of the stack's."""
    return StackError(
        f"the tracking server refuses the password of its user {user.name!r} "
        f"({variable(user.setting)} or {settings.secrets_file}): it was set after the "
        "server started; `python -m stack down --only mlflow` then `up` applies it"
    )

"""The MLflow tracking server: runs in PostgreSQL, artifacts in the S3 store, served by it,
behind MLflow's basic-auth app (users and permissions: stack/mlflow_auth.py)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

from stack.mlflow_auth import (
    AuthApi,
    admin,
    auth_config,
    ensure_admin,
    ensure_users,
    refused,
    stack_users,
)
from stack.postgres import Postgres
from stack.processes import StackError
from stack.service import NotReady, Service
from stack.settings import AUTH_DATABASE, REGION, s3_endpoint, tracking_uri


class MlflowServer(Service):
    name = "mlflow"
    port_field = "mlflow_port"
    # `mlflow server` runs uvicorn as a child and does not pass a SIGTERM on to it.
    signal_group = True

    def version(self) -> str:
        return f"MLflow {version('mlflow')}"

    @property
    def auth_file(self) -> Path:
        return self.folder / "basic_auth.ini"

    def prepare(self) -> None:
        # Its working folder: were the artifacts ever stored locally, they would show here.
        self.folder.mkdir(parents=True, exist_ok=True)
        # Made when PostgreSQL starts; here too for a PostgreSQL that an older stack
        # started (before the users' database existed).
        try:
            self.postgres.create_role_and_databases()
        except NotReady as error:
            raise StackError(
                f"PostgreSQL does not answer ({error}): start it first, `python -m stack up`"
            ) from None
        text = auth_config(
            admin_username=self.settings.mlflow_admin_username,
            database_url=self.postgres.url(AUTH_DATABASE, with_password=False),
            made_by="`python -m stack up` from the STACK_* settings (stack/mlflow_server.py)",
        )
        self.auth_file.write_text(text, encoding="utf-8")

    @property
    def postgres(self) -> Postgres:
        return Postgres(self.settings, self.secrets)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            # Users and permissions (stack/mlflow_auth.py): nothing without credentials.
            "--app-name",
            "basic-auth",
            # Clients send and fetch artifacts through the server (mlflow-artifacts:/),
            # which keeps them in the bucket: clients need no S3 keys.
            "--serve-artifacts",
            "--artifacts-destination",
            f"s3://{self.settings.mlflow_bucket}/artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]

    def env(self) -> dict[str, str]:
        return super().env() | {
            # The store's URL holds the password: in the environment (readable by its
            # owner only), not on the command line every `ps` shows.
            "MLFLOW_BACKEND_STORE_URI": self.postgres.url(),
            "MLFLOW_AUTH_CONFIG_PATH": str(self.auth_file),
            # Read at the first start only, to make the admin (after_start keeps its
            # password in step). Set here: the caller's shell may have others.
            "MLFLOW_AUTH_ADMIN_USERNAME": self.settings.mlflow_admin_username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.secrets.mlflow_admin_password,
            # The users' database (the file's URL has no password): libpq reads it here.
            "PGPASSWORD": self.secrets.postgres_password,
            # The login form's CSRF tokens are signed with it.
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets.mlflow_secret_key,
            "MLFLOW_S3_ENDPOINT_URL": s3_endpoint(self.settings),
            "AWS_ACCESS_KEY_ID": self.secrets.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.secrets.s3_secret_key,
            "AWS_DEFAULT_REGION": REGION,
            # Otherwise the server starts a job runner: 7 more processes, 2.4 GB.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }

    def ready(self) -> None:
        self._answers()

    def after_start(self) -> None:
        api = AuthApi(self.settings, self.secrets)
        ensure_admin(api, self.postgres.url(AUTH_DATABASE))
        ensure_users(api, stack_users(self.secrets))

    def health(self) -> None:
        """It answers (/health needs no login) and takes the passwords the settings give
        now: a server started with others would refuse the clients `stack env` sets up."""
        self._answers()
        api = AuthApi(self.settings, self.secrets)
        for user in [admin(self.settings, self.secrets), *stack_users(self.secrets)]:
            if not api.can_log_in(user):
                raise refused(user, self.settings)

    def _answers(self) -> None:
        url = f"{tracking_uri(self.settings)}/health"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                body = response.read().decode(errors="replace").strip()
        except (urllib.error.URLError, OSError) as error:
            raise NotReady(f"GET {url}: {error}") from None
        if body != "OK":
            raise NotReady(f"GET {url} answered {body[:80]!r}")

"""The MLflow tracking server: runs in PostgreSQL, artifacts in the S3 store, served by it."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from importlib.metadata import version

from stack.postgres import Postgres
from stack.service import NotReady, Service
from stack.settings import REGION, s3_endpoint, tracking_uri


class MlflowServer(Service):
    name = "mlflow"
    port_field = "mlflow_port"
    # `mlflow server` runs uvicorn as a child and does not pass a SIGTERM on to it.
    signal_group = True

    def version(self) -> str:
        return f"MLflow {version('mlflow')}"

    def prepare(self) -> None:
        # Its working folder: were the artifacts ever stored locally, they would show here.
        self.folder.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
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
            "MLFLOW_BACKEND_STORE_URI": Postgres(self.settings, self.secrets).url(),
            "MLFLOW_S3_ENDPOINT_URL": s3_endpoint(self.settings),
            "AWS_ACCESS_KEY_ID": self.secrets.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.secrets.s3_secret_key,
            "AWS_DEFAULT_REGION": REGION,
            # Otherwise the server starts a job runner: 7 more processes, 2.4 GB.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }

    def health(self) -> None:
        url = f"{tracking_uri(self.settings)}/health"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                body = response.read().decode(errors="replace").strip()
        except (urllib.error.URLError, OSError) as error:
            raise NotReady(f"GET {url}: {error}") from None
        if body != "OK":
            raise NotReady(f"GET {url} answered {body[:80]!r}")

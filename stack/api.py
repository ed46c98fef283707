"""The prediction API in the stack: N replicas of the service behind the load balancer.

Each replica is ``python -m serving`` on its own port, configured with the same
``SERVING_*`` variables as anywhere else (the Docker image, compose.yaml, the Kubernetes
manifests); the stack sets where it listens, the shared prediction log on the stack's
PostgreSQL, and the stack's MLflow server as the registry. Any other ``SERVING_*``
variable in the environment of ``python -m stack up`` reaches the replicas
(SERVING_MODEL_URI, SERVING_LOG_COMMIT, ...).

HAProxy balances them (stack/balancer.py): it asks every replica's ``/ready`` each
second and sends traffic only to those that answer 200, so a replica without a model, or
one that died, gets none.
"""

from __future__ import annotations

import json
import signal
import sys
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from fraud_detection.io.prediction_log import LogStoreError, PostgresStore
from fraud_detection.params import DEFAULT_MODEL_NAME
from fraud_detection.registry import champion_uri
from serving.keys import HEADER
from stack.postgres import Postgres
from stack.processes import StackError
from stack.service import NotReady, Service
from stack.settings import SERVING_USER, StackSettings, tracking_uri, variable, write_private


class ApiReplica(Service):
    """One replica; ``replica_class`` makes one subclass per index, so each has its own
    name (state file, log, ``--only``) like every other service of the stack."""

    index: ClassVar[int] = 0
    port_field = "api_replica_port"
    # uvicorn finishes its requests on SIGTERM, then the lifespan drains the log.
    stop_signal = signal.SIGTERM
    signal_group = False

    @property
    def port(self) -> int:
        return self.settings.replica_port(self.index)

    def ports(self) -> list[tuple[int, str]]:
        return [(self.port, f"{variable('api_replica_port')} + {self.index}")]

    def version(self) -> str:
        return f"replica {self.index} of {self.settings.api_replicas}"

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # The log's tables are made here, by one process, before any replica starts:
        # replicas creating them at the same moment could collide (docs/serving.md).
        postgres = Postgres(self.settings, self.secrets)
        postgres.create_role_and_databases()
        try:
            PostgresStore(postgres.prediction_log_url()).create_schema()
        except LogStoreError as error:
            raise StackError(f"could not create the prediction log's tables: {error}") from None

        # The clients' key as compose.yaml and Kubernetes give it: a file (0600, ours).
        write_private(
            self.key_file, f"# the clients' API key (STACK_API_KEY)\n{self.secrets.api_key}\n"
        )

    @property
    def key_file(self) -> Path:
        return self.settings.run_dir / "api-keys"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "serving"]

    def env(self) -> dict[str, str]:
        postgres = Postgres(self.settings, self.secrets)
        environment = super().env()
        environment.setdefault("SERVING_MODEL_URI", champion_uri(DEFAULT_MODEL_NAME))
        return environment | {
            "SERVING_HOST": "127.0.0.1",
            "SERVING_PORT": str(self.port),
            "SERVING_WORKERS": "1",
            # As compose.yaml: keys required, the clients' from the file, the balancer's
            # inline (both accepted; docs/security.md).
            "SERVING_REQUIRE_API_KEY": "true",
            "SERVING_API_KEYS_FILE": str(self.key_file),
            "SERVING_API_KEYS": self.secrets.api_probe_key,
            # The password is in the environment (its owner's to read), not the command.
            "SERVING_PREDICTION_LOG": postgres.prediction_log_url(),
            "SERVING_TRACKING_URI": tracking_uri(self.settings),
            # The tracking server's read-only user (MLflow's client sends it): not the
            # pipeline's, which a shell set up by `stack env` would pass on.
            "MLFLOW_TRACKING_USERNAME": SERVING_USER,
            "MLFLOW_TRACKING_PASSWORD": self.secrets.mlflow_serving_password,
        }

    def health(self) -> None:
        # Alive is enough for the stack: a replica waiting for a champion is up, and the
        # balancer keeps traffic away from it until /ready says it has a model.
        _get(f"http://127.0.0.1:{self.port}/health")

    def readiness(self) -> str:
        """What /ready says, for `status` (asked with the balancer's key)."""
        try:
            body = _get(f"http://127.0.0.1:{self.port}/ready", self.secrets.api_probe_key)
        except NotReady as error:
            return f"not ready ({error})"
        return f"ready, {body.get('model')} v{body.get('version')}"


@cache
def replica_class(index: int) -> type[ApiReplica]:
    """The service class of replica ``index`` (1-based): ``api-1``, ``api-2``, ..."""
    return type(f"ApiReplica{index}", (ApiReplica,), {"name": f"api-{index}", "index": index})


def replica_classes(settings: StackSettings) -> list[type[Service]]:
    return [replica_class(index) for index in range(1, settings.api_replicas + 1)]


def _get(url: str, api_key: str | None = None) -> Any:
    request = urllib.request.Request(url, headers={HEADER: api_key} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raise NotReady(f"GET {url}: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise NotReady(f"GET {url}: {error}") from None

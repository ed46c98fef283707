"""The load balancer in front of the API replicas: HAProxy, for the stack and compose.yaml.

One function (:func:`balancer_config`) writes HAProxy's whole configuration, for the
process stack (``python -m stack up``) and for compose.yaml (``python -m stack.deploy``),
so the two cannot drift. What it does, in the order a request meets it:

1. A body over ``STACK_LB_MAX_BODY_MB`` is refused with 413 from its Content-Length,
   before any replica is chosen; a body without a length (chunked) with 411, since its
   size is only known once it has streamed on to a replica.
2. A client address past ``STACK_LB_RATE_LIMIT`` requests a second gets 429 with
   Retry-After. Only requests passed on count, so a client that keeps sending too fast
   still gets the limit through, never more and never nothing.
3. The request goes to the replica with the fewest in flight among those whose ``/ready``
   answered 200 at the last check (every second, with the balancer's own key). A
   connection that cannot be made is tried on another replica; a request already sent is
   never resent (a prediction is logged: resending could log it twice), so a replica that
   dies with it gives 502 (on a kept-alive connection, HAProxy closes it unanswered).

The limits and the probe key reach HAProxy in its environment (:func:`balancer_env`), so
compose.yaml sets them from .env as the stack does from its settings.

HAProxy's own answers are JSON with a ``detail``, like the service's, so a client reads
one shape whoever answered. HAProxy was chosen by measuring it beside Caddy and Traefik
(benchmarks/replicas.py, docs/benchmarks.md): Caddy's standard build has no rate limiter.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from serving.keys import HEADER
from stack.processes import StackError
from stack.service import NotReady, Service
from stack.settings import StackSettings, variable

# How often the balancer asks each replica's /ready, and how long an answer may take.
HEALTH_INTERVAL = "1s"
HEALTH_TIMEOUT = "2s"
# How long a request may wait for a free replica, and for a replica's answer (a batch of
# SERVING_MAX_BATCH_ROWS rows takes a few seconds on a busy machine).
QUEUE_TIMEOUT = "5s"
SERVER_TIMEOUT = "60s"
# The balancer's environment: its key, which its /ready checks send, and its limits. The
# configuration names them ("${...}", read when HAProxy reads the file), so one file
# serves the stack (which sets them from its settings) and compose (from .env).
PROBE_KEY_VARIABLE = "API_PROBE_KEY"
RATE_VARIABLE = "LB_RATE_LIMIT"
BODY_VARIABLE = "LB_MAX_BODY_BYTES"
MIB = 1024 * 1024
# The oldest HAProxy that reads this configuration (http-check send, http-error, .if).
MIN_VERSION = (2, 4)
INSTALL = (
    "apt-get install haproxy (Debian/Ubuntu), dnf install haproxy (Fedora) or brew "
    "install haproxy (macOS)"
)
INSTALL_HINT = f"no haproxy found (the stack's load balancer): {INSTALL}"
SEARCH = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/opt/homebrew/bin/haproxy")

# The `detail` of the balancer's own answers, in HAProxy's double-quoted strings (where
# "${NAME}" is an environment variable): none may hold a double quote or a backslash.
TOO_LARGE = (
    "the request body is larger than the load balancer passes on ({limit}): send "
    "fewer rows per request"
)
LENGTH_REQUIRED = (
    "send the body with a Content-Length header: the load balancer checks a body's size "
    "before a replica reads it, and does not take chunked bodies"
)
TOO_MANY = (
    f"too many requests from this address: the load balancer passes on at most "
    f"${{{RATE_VARIABLE}}} a second from one client; wait for the seconds in Retry-After, "
    "then send more slowly"
)
NO_REPLICA = (
    "no replica is ready to answer (503): the load balancer sends requests only to "
    "replicas whose /ready says 200; python -m stack status shows them"
)
REPLICA_FAILED = (
    "the replica answering this request failed before it finished (502); it was not "
    "resent to another replica, because the first may have logged it"
)
REPLICA_TOO_SLOW = (
    "a replica did not answer within {timeout}, the load balancer's limit (504): send fewer "
    "rows per request"
)
NOT_HTTP = "the load balancer could not read the request as HTTP (400)"


DEFAULT_BODY_MB: int = StackSettings.model_fields["lb_max_body_mb"].default
DEFAULT_RATE: int = StackSettings.model_fields["lb_rate_limit"].default


@dataclass(frozen=True)
class Upstream:
    """One replica as the balancer names it and where it is."""

    name: str
    address: str


def balancer_config(
    *,
    bind: str,
    upstreams: list[Upstream],
    admin: str,
    made_by: str,
    resolver: str | None = None,
) -> str:
    """HAProxy's whole configuration. ``bind`` is the clients' address (``:8080`` for all
    of a container's), ``admin`` the statistics page's; ``resolver``, a DNS server that
    finds the replicas by name (compose's), which may start after the balancer. The
    limits come from the environment (:func:`balancer_env`), with the settings' defaults
    when unset."""
    unsized = "{ method POST PUT PATCH } !{ req.hdr(content-length) -m found }"
    too_large = f'{{ req.hdr_val(content-length) gt "${{{BODY_VARIABLE}}}" }}'
    body_limit = TOO_LARGE.format(limit=f"${{{BODY_VARIABLE}}} bytes")
    errors = "\n".join(
        f"\thttp-error status {status} {answer_arguments(detail)}"
        for status, detail in (
            (400, NOT_HTTP),
            (502, REPLICA_FAILED),
            (503, NO_REPLICA),
            (504, REPLICA_TOO_SLOW.format(timeout=SERVER_TIMEOUT)),
        )
    )
    checks = (
        f"check inter {HEALTH_INTERVAL} fall 1 rise 1 "
        "observe layer4 error-limit 1 on-error mark-down"
    )
    rate = _rate_rules()
    servers = "\n".join(f"\tserver {u.name} {u.address}" for u in upstreams)
    resolvers, lookup = "", ""
    if resolver:
        resolvers = f"\nresolvers names\n\tnameserver dns {resolver}\n\thold valid 5s\n"
        # Start without an address, and keep asking: a replica not yet up is down.
        lookup = " resolvers names init-addr last,libc,none"
    return f"""# Made by {made_by}: edits go.
global
\tlog stderr format short local0 notice
\t# SIGUSR1 (the stack's stop) finishes what is in flight; this long at most.
\thard-stop-after 10s
\t# The limits (STACK_LB_* in the stack, .env in compose); these when unset.
\tpresetenv {BODY_VARIABLE} {DEFAULT_BODY_MB * MIB}
\tpresetenv {RATE_VARIABLE} {DEFAULT_RATE}
.if !defined({PROBE_KEY_VARIABLE})
\t.alert "set {PROBE_KEY_VARIABLE}: the key the balancer sends with its /ready checks"
.endif

defaults
\tmode http
\t# Warnings only: servers going up or down, and requests that failed.
\tlog global
\toption dontlog-normal
\ttimeout connect 2s
\ttimeout client 60s
\ttimeout http-request 30s
\ttimeout queue {QUEUE_TIMEOUT}
\ttimeout server {SERVER_TIMEOUT}
\t# Only a connection that could not be made is retried, on another replica: a request
\t# already sent is never resent (a prediction is logged).
\tretries 3
\toption redispatch 1
\tretry-on conn-failure
{errors}
{resolvers}
frontend api
\tbind {bind}
\t# The replicas see the client's address in X-Forwarded-For (their own peer is this).
\toption forwardfor
\t# A body over the limit ends here, from its Content-Length, before a replica is
\t# chosen. A body must say its length: a chunked one could only be cut off while it
\t# streams to a replica, which would then have read part of it.
{_deny(411, LENGTH_REQUIRED, unsized)}
{_deny(413, body_limit, too_large)}
{rate}\tdefault_backend replicas

backend replicas
\tbalance leastconn
\t# /ready needs an API key: the balancer's own, from its environment (read when this
\t# file is, never shown by the statistics page).
\toption httpchk
\thttp-check send meth GET uri /ready hdr {HEADER} "${{{PROBE_KEY_VARIABLE}}}"
\thttp-check expect status 200
\ttimeout check {HEALTH_TIMEOUT}
\t# Out at the first failed check or failed connection, back at the first passed check.
\tdefault-server {checks}{lookup}
\t# Which replica answered: for the kill test, and for anyone debugging one.
\thttp-response set-header X-Served-By "%si:%sp"
{servers}

# Each replica's state (UP, DOWN and why), in HTML, or CSV at /;csv; the balancer's
# Prometheus metrics at /metrics (answers by code, 429s included; each replica's state).
frontend statistics
\tbind {admin}
.if feature(PROMEX)
\thttp-request use-service prometheus-exporter if {{ path /metrics }}
.endif
\tstats enable
\tstats uri /
\tstats refresh 5s
\tno log
"""


def _rate_rules() -> str:
    """The per-client limit: a one-second rate of the requests passed on, per address."""
    rate = f'"${{{RATE_VARIABLE}}}"'
    return (
        f"\t# At most {RATE_VARIABLE} requests a second passed on from one client address;\n"
        "\t# only those count, so a client sending faster still gets that many through.\n"
        f".if strneq({rate},0)\n"
        "\tstick-table type ipv6 size 100k expire 10s store gpc0_rate(1s)\n"
        "\thttp-request track-sc0 src\n"
        + _deny(429, TOO_MANY, f"{{ sc_gpc0_rate(0) ge {rate} }}", headers="hdr Retry-After 1 ")
        + "\n\thttp-request sc-inc-gpc0(0)\n"
        ".endif\n"
    )


def _deny(status: int, detail: str, condition: str, headers: str = "") -> str:
    return f"\thttp-request deny status {status} {answer_arguments(detail)} {headers}if {condition}"


def answer_arguments(detail: str) -> str:
    """A JSON answer in the service's shape, as HAProxy's arguments (double-quoted, so
    that a "${NAME}" in ``detail`` is the environment's value)."""
    if '"' in detail or "\\" in detail:
        raise ValueError(f"a balancer message holds a quote or a backslash: {detail!r}")
    return f'content-type application/json string "{{\\"detail\\": \\"{detail}\\"}}"'


def stack_config(settings: StackSettings) -> str:
    """The stack's balancer: on 127.0.0.1 only, in front of the replicas' ports."""
    return balancer_config(
        bind=f"127.0.0.1:{settings.api_port}",
        upstreams=[
            Upstream(f"api-{i}", f"127.0.0.1:{settings.replica_port(i)}")
            for i in range(1, settings.api_replicas + 1)
        ],
        admin=f"127.0.0.1:{settings.lb_admin_port}",
        made_by="`python -m stack up` from the STACK_* settings (stack/balancer.py)",
    )


def balancer_env(settings: StackSettings, probe_key: str) -> dict[str, str]:
    """What the configuration reads from HAProxy's environment, from the settings."""
    return {
        PROBE_KEY_VARIABLE: probe_key,
        RATE_VARIABLE: str(settings.lb_rate_limit),
        BODY_VARIABLE: str(settings.lb_max_body_mb * MIB),
    }


class LoadBalancer(Service):
    name = "lb"
    port_field = "api_port"
    # SIGUSR1: HAProxy's soft stop (stops accepting, finishes what it is proxying);
    # SIGTERM would cut the requests in flight.
    stop_signal = signal.SIGUSR1
    signal_group = False

    @property
    def config_file(self) -> Path:
        return self.folder / "haproxy.cfg"

    def ports(self) -> list[tuple[int, str]]:
        return [
            (self.port, variable("api_port")),
            (self.settings.lb_admin_port, variable("lb_admin_port")),
        ]

    def version(self) -> str:
        return f"HAProxy {haproxy_version()}"

    def check_installed(self) -> None:
        haproxy_version()

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(stack_config(self.settings), encoding="utf-8")

    def command(self) -> list[str]:
        # -db: in the foreground, as the stack's other servers (the stack keeps its pid).
        return [haproxy_binary(), "-db", "-f", str(self.config_file)]

    def env(self) -> dict[str, str]:
        # The configuration names them ("${API_PROBE_KEY}"): the key is in neither the
        # file nor the statistics page.
        return super().env() | balancer_env(self.settings, self.secrets.api_probe_key)

    def health(self) -> None:
        # HAProxy itself (its statistics page), not the replicas: the balancer is up even
        # while no replica is ready, and says so (503) to the clients.
        self.upstreams()

    def upstreams(self) -> dict[str, str]:
        """Each replica's state as the balancer sees it: ``{"api-1": "UP", ...}``."""
        url = f"http://127.0.0.1:{self.settings.lb_admin_port}/;csv"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                text = response.read().decode("utf-8")
        except (urllib.error.URLError, OSError) as error:
            raise NotReady(f"GET {url}: {error}") from None
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row.get("pxname") == "replicas" and row["svname"] not in ("BACKEND", "FRONTEND")
        }


def haproxy_binary() -> str:
    """``haproxy`` on PATH, else where Debian, a source build or Homebrew put it."""
    found = shutil.which("haproxy") or next(
        (path for path in SEARCH if os.access(path, os.X_OK)), None
    )
    if found is None:
        raise StackError(INSTALL_HINT)
    return found


@cache
def haproxy_version() -> str:
    """``2.6.12``; a StackError when HAProxy is missing or older than MIN_VERSION."""
    result = subprocess.run(
        [haproxy_binary(), "-v"], capture_output=True, text=True, check=False, timeout=10
    )
    match = re.search(r"version (\d+)\.(\d+)(\.\d+)?", result.stdout)
    if match is None:
        raise StackError(f"could not read `haproxy -v`: {result.stdout[:200]!r}")
    if (int(match[1]), int(match[2])) < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        raise StackError(
            f"haproxy {match[0].split()[1]} is older than {wanted}, the oldest that reads the "
            f"stack's configuration: install a newer one ({INSTALL})"
        )
    return match[0].split()[1]

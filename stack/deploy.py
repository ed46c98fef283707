"""Files of compose.yaml that are made from the code, not kept by hand: the balancer's
haproxy.cfg and the tracking server's basic_auth.ini come from the same functions as the
process stack's, so the two cannot drift.

``python -m stack.deploy`` rewrites them; tests/stack/test_deploy.py fails when a committed
copy differs from what this makes."""

from __future__ import annotations

import sys
from pathlib import Path

from stack.balancer import Upstream, balancer_config
from stack.mlflow_auth import auth_config
from stack.settings import AUTH_DATABASE, POSTGRES_ROLE, REPO, StackSettings

COMPOSE_BALANCER = REPO / "deploy" / "compose" / "haproxy.cfg"
# Copied into the tracking server's image (deploy/mlflow/Dockerfile).
MLFLOW_AUTH_FILE = REPO / "deploy" / "mlflow" / "basic_auth.ini"
# compose.yaml's replicas (services api-1, api-2) and the port each listens on.
COMPOSE_REPLICAS = ("api-1", "api-2")
SERVICE_PORT = 8000
BALANCER_PORT = 8080


# Docker's DNS server inside a compose network: it finds the replicas by service name.
COMPOSE_DNS = "127.0.0.11:53"


def compose_balancer() -> str:
    return balancer_config(
        bind=f":{BALANCER_PORT}",
        upstreams=[Upstream(name, f"{name}:{SERVICE_PORT}") for name in COMPOSE_REPLICAS],
        # Inside the container only (docker compose exec lb ... to read it).
        admin="127.0.0.1:8404",
        made_by="`python -m stack.deploy` for compose.yaml (stack/deploy.py)",
        resolver=COMPOSE_DNS,
    )


def compose_auth_config() -> str:
    # compose.yaml's PostgreSQL service; its password comes from PGPASSWORD.
    return auth_config(
        admin_username=StackSettings.model_fields["mlflow_admin_username"].default,
        database_url=f"postgresql+psycopg://{POSTGRES_ROLE}@postgres:5432/{AUTH_DATABASE}",
        made_by="`python -m stack.deploy` for compose.yaml's mlflow service (stack/deploy.py)",
    )


def made_files() -> dict[Path, str]:
    return {COMPOSE_BALANCER: compose_balancer(), MLFLOW_AUTH_FILE: compose_auth_config()}


def main() -> int:
    for path, text in made_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

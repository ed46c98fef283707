"""The stack's settings (``STACK_*`` variables), its secrets, and what a client needs to use it."""

from __future__ import annotations

import dataclasses
import difflib
import os
import secrets
from pathlib import Path
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.keys import key_problem

ENV_PREFIX = "STACK_"
REPO = Path(__file__).resolve().parents[1]
# weed's default gRPC port for a service is its HTTP port + 10000.
GRPC_OFFSET = 10_000
REGION = "us-east-1"
# The DVC remote on the stack's object store, as .dvc/config names it (a test checks).
DVC_REMOTE = "shared"
# The stack's PostgreSQL role (MLflow's database is named after it) and the database of
# the API replicas' prediction log (its tables: fraud_detection.io.prediction_log).
POSTGRES_ROLE = "mlflow"
PREDICTIONS_DATABASE = "predictions"
# The database of the tracking server's users and permissions (MLflow's basic-auth app).
AUTH_DATABASE = "mlflow_auth"
# The tracking server's users the stack keeps besides its admin: what `stack env` gives
# clients (the pipeline: it writes runs and moves the aliases), and what the API
# replicas load the champion with (read only).
PIPELINE_USER = "pipeline"
SERVING_USER = "serving"
# MLflow refuses shorter passwords.
MIN_PASSWORD = 12


class SettingsError(ValueError):
    """The environment does not describe a valid stack; the message names the variable."""


class StackSettings(BaseSettings):
    """Where the stack keeps its data and which ports on 127.0.0.1 its services take."""

    # extra="forbid" covers init arguments only: pydantic-settings ignores unknown
    # variables, so load_settings() names them itself.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # Data, logs, state files and secrets.env (gitignored; never committed).
    dir: Path = REPO / ".stack"
    postgres_port: int = Field(15432, ge=1024, le=65535)
    # Folder with the server's initdb and postgres; unset: searched (see stack.postgres).
    postgres_bin_dir: Path | None = None
    # Unset: generated once into secrets.env.
    postgres_password: SecretStr | None = None
    s3_port: int = Field(18333, ge=1024, le=65535 - GRPC_OFFSET)
    weed_master_port: int = Field(19333, ge=1024, le=65535 - GRPC_OFFSET)
    weed_volume_port: int = Field(18080, ge=1024, le=65535 - GRPC_OFFSET)
    weed_filer_port: int = Field(18888, ge=1024, le=65535 - GRPC_OFFSET)
    mlflow_port: int = Field(15000, ge=1024, le=65535)
    # The tracking server's admin (MLflow's basic-auth app), made at its first start.
    mlflow_admin_username: str = Field("admin", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    # Unset: generated once into secrets.env, like the Flask secret key of the server's
    # login (CSRF) and the passwords of the users the stack keeps (docs/scaling.md).
    mlflow_admin_password: SecretStr | None = None
    mlflow_pipeline_password: SecretStr | None = None
    mlflow_serving_password: SecretStr | None = None
    mlflow_secret_key: SecretStr | None = None
    # The prediction API: this many replicas (processes), on api_replica_port + 1, + 2, ...,
    # behind a load balancer (HAProxy) on api_port, whose statistics page is on
    # lb_admin_port.
    # 0: no API (the tracking services only).
    api_replicas: int = Field(2, ge=0, le=16)
    api_port: int = Field(18000, ge=1024, le=65535)
    api_replica_port: int = Field(18100, ge=1024, le=65535 - 16)
    lb_admin_port: int = Field(12019, ge=1024, le=65535)
    # The replicas require API keys, as in compose.yaml (docs/security.md): the clients'
    # (`stack env` gives it as FRAUD_API_KEY) and the balancer's own, sent with its /ready
    # checks. Unset: generated once into secrets.env.
    api_key: SecretStr | None = None
    api_probe_key: SecretStr | None = None
    # The largest request body the balancer passes on (MiB); larger gets 413 from it,
    # before any replica reads a byte. 16 MiB holds SERVING_MAX_BATCH_ROWS' 10,000 rows
    # as objects (about 6 MB) with room to spare.
    lb_max_body_mb: int = Field(16, ge=1, le=1024)
    # Requests a second the balancer passes on from one client address; past it, 429 with
    # Retry-After. 0: no limit. The default leaves one client a third of what two
    # replicas answer on two cores (about 1,500 a second, docs/benchmarks.md).
    lb_rate_limit: int = Field(500, ge=0, le=1_000_000)
    mlflow_bucket: str = Field("mlflow", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    dvc_bucket: str = Field("dvc", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    # Unset: generated once into secrets.env.
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    # Seconds a service may take to answer its health check (MLflow's first start runs
    # its database migrations).
    start_timeout: float = Field(180.0, gt=0)
    # Seconds between the stop signal and SIGKILL: weed's filer waits 15 s for its gRPC
    # streams before it lets the volume server close its files.
    stop_timeout: float = Field(25.0, gt=0)

    @field_validator("dir", "postgres_bin_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @field_validator("mlflow_admin_password", "mlflow_pipeline_password", "mlflow_serving_password")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked here: the server would refuse it at start-up, in its log.
        if value is not None and len(value.get_secret_value()) < MIN_PASSWORD:
            raise ValueError(f"MLflow wants passwords of at least {MIN_PASSWORD} characters")
        return value

    @field_validator("api_key", "api_probe_key")
    @classmethod
    def _usable_key(cls, value: SecretStr | None) -> SecretStr | None:
        # The replicas' own rule (serving/keys.py), checked before anything starts.
        if value is not None and (problem := key_problem(value.get_secret_value())):
            raise ValueError(problem)
        return value

    @field_validator("mlflow_admin_username")
    @classmethod
    def _not_a_stack_user(cls, value: str) -> str:
        if value in (PIPELINE_USER, SERVING_USER):
            raise ValueError(f"{value!r} is a user the stack keeps: give the admin another name")
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> StackSettings:
        taken: dict[int, str] = {}
        for port, owner in self.ports():
            if port in taken:
                raise ValueError(f"{owner} and {taken[port]} are both port {port}")
            taken[port] = owner
        return self

    def ports(self) -> list[tuple[int, str]]:
        """Every port the stack binds, with the setting that moves it."""
        weed = {
            "s3_port": self.s3_port,
            "weed_master_port": self.weed_master_port,
            "weed_volume_port": self.weed_volume_port,
            "weed_filer_port": self.weed_filer_port,
        }
        found = [(self.postgres_port, variable("postgres_port"))]
        for name, port in weed.items():
            found += [
                (port, variable(name)),
                (port + GRPC_OFFSET, f"{variable(name)} + {GRPC_OFFSET} (its gRPC port)"),
            ]
        found.append((self.mlflow_port, variable("mlflow_port")))
        if self.api_replicas:
            found += [(self.api_port, variable("api_port"))]
            found += [(self.lb_admin_port, variable("lb_admin_port"))]
            found += [
                (self.replica_port(index), f"{variable('api_replica_port')} + {index}")
                for index in range(1, self.api_replicas + 1)
            ]
        return found

    def replica_port(self, index: int) -> int:
        """Replica ``index``'s port (1-based)."""
        return self.api_replica_port + index

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def secrets_file(self) -> Path:
        return self.dir / "secrets.env"


def variable(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings() -> StackSettings:
    """Settings from the environment; every problem in one :class:`SettingsError`."""
    problems = _unknown_variables(dict(os.environ))
    settings: StackSettings | None = None
    try:
        settings = StackSettings()
    except ValidationError as error:
        problems += [_problem(issue) for issue in error.errors()]
    if problems or settings is None:
        raise SettingsError("invalid stack settings:\n  " + "\n  ".join(problems))
    return settings


def _problem(issue: ErrorDetails) -> str:
    if not issue["loc"]:  # the model validator: its message names the settings
        return issue["msg"].removeprefix("Value error, ")
    name = variable(str(issue["loc"][0]))
    secret = name.endswith(("_KEY", "_PASSWORD"))
    shown = "<secret>" if secret else repr(os.environ.get(name, "<unset>"))
    return f"{name}={shown}: {issue['msg']}"


def _unknown_variables(env: dict[str, str]) -> list[str]:
    names = [name.upper() for name in StackSettings.model_fields]
    problems = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name.removeprefix(ENV_PREFIX) not in names:
            close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), names, n=1)
            hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
            problems.append(f"{name} is not a setting{hint}")
    return problems


# ------------------------------------------------------------------------------ secrets


@dataclasses.dataclass(frozen=True, kw_only=True)
class Secrets:
    """The keys and passwords the services of one stack share (never shown: repr=False)."""

    s3_access_key: str = dataclasses.field(repr=False)
    s3_secret_key: str = dataclasses.field(repr=False)
    postgres_password: str = dataclasses.field(repr=False)
    mlflow_admin_password: str = dataclasses.field(repr=False)
    mlflow_pipeline_password: str = dataclasses.field(repr=False)
    mlflow_serving_password: str = dataclasses.field(repr=False)
    mlflow_secret_key: str = dataclasses.field(repr=False)
    api_key: str = dataclasses.field(repr=False)
    api_probe_key: str = dataclasses.field(repr=False)


_SECRET_FIELDS = tuple(f.name for f in dataclasses.fields(Secrets))


def load_secrets(settings: StackSettings) -> Secrets:
    """The settings' secrets, else secrets.env's; those missing from both are generated
    once and added to secrets.env (mode 0600), so every later run uses the same ones."""
    stored = read_env_file(settings.secrets_file)
    values: dict[str, str] = {}
    for field in _SECRET_FIELDS:
        given: SecretStr | None = getattr(settings, field)
        values[field] = given.get_secret_value() if given else stored.get(variable(field), "")
    missing = [field for field, value in values.items() if not value]
    if missing:
        for field in missing:
            # Access keys in the AWS style are short and upper-case; the rest is random hex.
            values[field] = (
                "STACK" + secrets.token_hex(8).upper()
                if field == "s3_access_key"
                else secrets.token_hex(24)
            )
        stored |= {variable(field): values[field] for field in missing}
        write_private(settings.secrets_file, "".join(f"{k}={v}\n" for k, v in stored.items()))
    return Secrets(**values)


def read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    pairs = (line.partition("=") for line in path.read_text(encoding="utf-8").splitlines())
    return {key.strip(): value.strip() for key, sep, value in pairs if sep and key.strip()}


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (created so: never readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    path.chmod(0o600)  # an existing file keeps its mode otherwise


# ------------------------------------------------------------------------------ clients


def s3_endpoint(settings: StackSettings) -> str:
    return f"http://127.0.0.1:{settings.s3_port}"


def tracking_uri(settings: StackSettings) -> str:
    return f"http://127.0.0.1:{settings.mlflow_port}"


def prediction_log_url(settings: StackSettings, keys: Secrets) -> str:
    """The API replicas' shared prediction log, in the stack's PostgreSQL."""
    password = quote(keys.postgres_password, safe="")
    return (
        f"postgresql://{POSTGRES_ROLE}:{password}@127.0.0.1:{settings.postgres_port}/"
        f"{PREDICTIONS_DATABASE}"
    )


def api_url(settings: StackSettings) -> str:
    """The prediction API, through the load balancer."""
    return f"http://127.0.0.1:{settings.api_port}"


def client_env(settings: StackSettings | None = None) -> dict[str, str]:
    """The variables a client of the stack needs: MLflow's tracking URI and the pipeline
    user's credentials (MLflow's client sends them), and the S3 endpoint and keys for DVC
    or boto3 (MLflow's artifacts go through its server)."""
    settings = settings or load_settings()
    keys = load_secrets(settings)
    return {
        "MLFLOW_TRACKING_URI": tracking_uri(settings),
        "MLFLOW_TRACKING_USERNAME": PIPELINE_USER,
        "MLFLOW_TRACKING_PASSWORD": keys.mlflow_pipeline_password,
        "AWS_ENDPOINT_URL": s3_endpoint(settings),
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint(settings),
        "AWS_ACCESS_KEY_ID": keys.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": keys.s3_secret_key,
        "AWS_DEFAULT_REGION": REGION,
        # `make push` / `make pull` use the remote on this store (.dvc/config: `shared`).
        "DVC_REMOTE": DVC_REMOTE,
        # The replicas' shared prediction log: `make serve` logs there too, and the
        # monitor reads it.
        "SERVING_PREDICTION_LOG": prediction_log_url(settings, keys),
        # The API's key for its clients (`make replay` sends it: monitoring/replay.py).
        "FRAUD_API_KEY": keys.api_key,
    }

"""Service settings, read from ``SERVING_*`` environment variables and checked at start-up."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fraud_detection.io.prediction_log import SqliteStore, open_store, redact
from fraud_detection.params import DEFAULT_MODEL_NAME
from fraud_detection.registry import champion_uri
from fraud_detection.workspace import PREDICTION_LOG
from serving.auth import ApiKeys
from serving.keys import configured_keys, key_problem, parse_keys, read_key_file

ENV_PREFIX = "SERVING_"
# Settings whose values are never shown, in an error message or anywhere else.
SECRET_FIELDS = frozenset({"api_keys"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# `make serve` passes the champion of params.yaml's model (pipelines/champion_uri.py).
DEFAULT_MODEL_URI = champion_uri(DEFAULT_MODEL_NAME)


class SettingsError(ValueError):
    """The environment does not describe a valid service; the message names the variable."""


class Settings(BaseSettings):
    """Where the model comes from, where predictions are logged, and how uvicorn runs."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True)

    # A registry URI (models:/<name>@<alias> or models:/<name>/<version>), or a model folder
    # exported by `make export-model` (what the Docker image uses; needs no MLflow).
    model_uri: str = Field(DEFAULT_MODEL_URI, min_length=1)
    # The MLflow store for registry URIs; unset: MLFLOW_TRACKING_URI, else ./mlflow.db.
    tracking_uri: str | None = None
    # Where every prediction is logged (read by the drift monitor): a SQLite file, or
    # postgresql://user:password@host:port/database, which several replicas can share.
    prediction_log: str = str(PREDICTION_LOG)
    # before_answer: a 2xx answer means its rows are committed (group commit);
    # background: answer first, write within 0.1 s (a killed process loses that window).
    log_commit: Literal["before_answer", "background"] = "before_answer"
    # How long a prediction waits for its commit before the answer is 503 (store down).
    log_timeout_seconds: float = Field(5.0, gt=0, le=300)
    # Rows accepted by POST /predict/batch; more gets 413.
    max_batch_rows: int = Field(10_000, ge=1, le=1_000_000)
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8000, ge=1, le=65_535)
    workers: int = Field(1, ge=1, le=64)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # uvicorn's line per request; off by default (it costs throughput; /metrics counts).
    access_log: bool = False
    # API keys callers send in X-API-Key (serving/auth.py): comma-separated here, one a
    # line in the file (a mounted Secret); both may be given. None: no key is asked for.
    api_keys: SecretStr | None = None
    api_keys_file: Path | None = None
    # True: start-up fails without a key rather than serving everyone (compose, k8s).
    require_api_key: bool = False

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("prediction_log", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    @field_validator("api_keys")
    @classmethod
    def _inline_keys_are_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_keys(parse_keys(value.get_secret_value()))
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _key_file_is_usable(cls, value: Path | None) -> Path | None:
        if value is not None:
            _check_keys(read_key_file(value))
        return value

    @model_validator(mode="after")
    def _keys_when_required(self) -> Settings:
        if self.require_api_key and self.api_key_set() is None:
            raise ValueError(
                f"{ENV_PREFIX}REQUIRE_API_KEY is true but no API key is set: put the keys "
                f"in a file named by {ENV_PREFIX}API_KEYS_FILE (one a line) or in "
                f"{ENV_PREFIX}API_KEYS (comma-separated)"
            )
        return self

    def api_key_set(self) -> ApiKeys | None:
        """The keys callers must send, from both places; None when none is set."""
        inline = self.api_keys.get_secret_value() if self.api_keys else None
        keys = configured_keys(inline, self.api_keys_file)
        return ApiKeys(keys) if keys else None

    @property
    def on_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @field_validator("prediction_log")
    @classmethod
    def _log_is_usable(cls, value: str) -> str:
        store = open_store(value)  # ValueError names what is wrong with the URL
        if not isinstance(store, SqliteStore):
            return value  # a server: reached at start-up (a warning while it is down)
        path = store.path
        folder = path.parent
        existing = next((p for p in [folder, *folder.parents] if p.exists()), Path())
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise ValueError(f"cannot create or write the folder {folder}")
        if path.exists() and not path.is_file():
            raise ValueError(f"{path} exists and is not a file")
        return value


def _check_keys(keys: list[str]) -> None:
    problems = sorted({problem for key in keys if (problem := key_problem(key))})
    if not keys:
        raise ValueError("no key given (an empty list): give at least one, or unset it")
    if problems:
        raise ValueError("; ".join(problems))


def load_settings() -> Settings:
    """Settings from the environment; every problem in one :class:`SettingsError`."""
    env = dict(os.environ)
    problems = _unknown_variables(env)
    try:
        settings: Settings | None = Settings()
    except ValidationError as error:
        problems += [_problem(env, issue["loc"], issue["msg"]) for issue in error.errors()]
        settings = None
    if problems or settings is None:
        raise SettingsError("invalid service settings:\n  " + "\n  ".join(problems))
    return settings


def _problem(env: dict[str, str], location: tuple[object, ...], message: str) -> str:
    # A check across settings (a model validator) has no field: its message names them.
    message = message.removeprefix("Value error, ")
    if not location:
        return message
    field = str(location[0])
    return f"{ENV_PREFIX}{field.upper()}={_shown(env, field)}: {message}"


def _shown(env: dict[str, str], field: str) -> str:
    value = env.get(f"{ENV_PREFIX}{field.upper()}")
    if value is None:
        return "<unset>"
    if field in SECRET_FIELDS:
        return "'***'"  # not even its length
    # A URL's password is never shown (postgresql://user:***@host/db).
    return repr(redact(value))


def _unknown_variables(env: dict[str, str]) -> list[str]:
    known = [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields]
    names = [name.upper() for name in Settings.model_fields]
    problems = []
    for variable in sorted(env):
        if variable.startswith(ENV_PREFIX) and variable not in known:
            # Compare what follows the prefix: every variable shares SERVING_.
            close = difflib.get_close_matches(variable.removeprefix(ENV_PREFIX), names, n=1)
            hint = (
                f" (did you mean {ENV_PREFIX}{close[0]}?)"
                if close
                else f"; known: {', '.join(known)}"
            )
            problems.append(f"{variable} is not a setting{hint}")
    return problems

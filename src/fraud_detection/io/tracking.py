"""Everything that talks to MLflow lives here.

Nothing happens at import time: :func:`connect` resolves the tracking URI (the
``MLFLOW_TRACKING_URI`` environment variable, else a SQLite file in the project), checks
that the store answers, and only then points MLflow at it.

A server that wants a login gets the user and password of ``MLFLOW_TRACKING_USERNAME``
and ``MLFLOW_TRACKING_PASSWORD`` (MLflow's client sends them itself); missing, wrong or
without the permission a call needs, the stage stops on one line that names them and
the fix (:func:`access_problem`), never on MLflow's 401 or 403.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Experiment, LifecycleStage, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from sklearn.pipeline import Pipeline

from fraud_detection.errors import ModelLoadError, TrackingError
from fraud_detection.io.model_package import (
    SKOPS_TRUSTED_TYPES,
    RegistryInfo,
    write_registry_info,
)
from fraud_detection.registry import CHALLENGER, CHAMPION, FINGERPRINT_KEY
from fraud_detection.schema import FeatureSchema

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
# Version tags the promotion rule reads back.
TEST_AP_TAG = "test_average_precision"
TEST_BRIER_TAG = "test_brier"
# The train stage's parent run carries its selection's fingerprint (find_pipeline_run).
SELECTION_TAG = "selection_fingerprint"
DATA_TAG = "data_fingerprint"
# Set on a version once the registry rule has given it its alias: the last step of a
# registration, so a version without it was cut off halfway (register_and_promote).
RULE_TAG = "registry_rule"
# Packages the logged model needs at load time; versions are read from this environment.
_MODEL_REQUIREMENTS = ["mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy"]
_BATCH = 900  # MLflow accepts up to 1000 metrics per batch call
_PROBE_SECONDS = 10
# What MLflow's client sends a tracking server as HTTP basic auth.
USERNAME_VARIABLE = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VARIABLE = "MLFLOW_TRACKING_PASSWORD"
_CREDENTIALS_HINT = (
    '`eval "$(python -m stack env)"` sets the project stack\'s pipeline user; '
    "docs/scaling.md says how to get a user of your own"
)


def tracking_uri(project_root: Path | str = ".") -> str:
    explicit = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if explicit:
        return explicit
    return f"sqlite:///{(Path(project_root) / DEFAULT_DB).resolve()}"


def _check_reachable(uri: str) -> None:
    if uri.startswith(("http://", "https://")):
        _check_server(uri.rstrip("/"))
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(
                f"MLflow store {uri}: folder {folder} does not exist or is not writable; "
                "fix MLFLOW_TRACKING_URI or unset it to use the project's mlflow.db"
            )


# What each probe of a tracking server proves, and what to start when it fails. The
# server answers /health without its stores, so each store gets a cheap call of its own:
# otherwise a database or object store that is down would surface minutes later, after
# MLflow's client has retried the first real call with backoff.
_PROBES = (
    ("/health", "is unreachable", "start it"),
    (
        "/api/2.0/mlflow/experiments/search?max_results=1",
        "answers, but its backend store (the database) does not",
        "start its database",
    ),
    (
        # The Default experiment's folder: a user who may read it makes the server list
        # the object store (the root's listing is the admin's alone).
        "/api/2.0/mlflow-artifacts/artifacts?path=0",
        "answers, but its artifact store (the object store) does not",
        "start its object store",
    ),
)
_STACK_HINT = "`make stack-up` starts the project's own, `make stack-status` says what runs"


def _check_server(uri: str) -> None:
    """One line naming the URL and what to start, within seconds, for a server that is
    down or whose database or object store is, or that refuses the credentials."""
    for path, problem, action in _PROBES:
        status, detail = _probe(f"{uri}{path}")
        if status == 401:
            raise TrackingError(str(access_problem(uri, 401, "log in")))
        # 404: a server without proxied artifacts (clients then write to the store
        # themselves); 403: a user who may not read that folder, whose own calls say so.
        if status is None or status >= 500:
            raise TrackingError(
                f"MLflow tracking server {uri} {problem} ({detail}): {action} "
                f"({_STACK_HINT}), or fix MLFLOW_TRACKING_URI, or unset it to use the local "
                "SQLite store"
            )


def _probe(url: str) -> tuple[int | None, str]:
    """The HTTP status of a GET (None when nothing answered) and a short reason; with
    the client's credentials, so that a server with logins probes its stores too."""
    request = urllib.request.Request(url, headers=_basic_auth())
    try:
        with urllib.request.urlopen(request, timeout=_PROBE_SECONDS) as response:
            return int(response.status), "ok"
    except urllib.error.HTTPError as error:
        return error.code, _error_message(error)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return None, str(reason)


def _basic_auth() -> dict[str, str]:
    user, password = os.environ.get(USERNAME_VARIABLE), os.environ.get(PASSWORD_VARIABLE)
    if not user or not password:
        return {}
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def access_problem(uri: str, status: int | None, doing: str) -> str | None:
    """The one line for a tracking server's 401 (no credentials, or wrong ones) or 403
    (a user without the permission ``doing`` needs); None for any other status. It names
    the variables, never their values' secret."""
    user = os.environ.get(USERNAME_VARIABLE, "")
    unset = [name for name in (USERNAME_VARIABLE, PASSWORD_VARIABLE) if not os.environ.get(name)]
    if status == 401 and unset:
        return (
            f"MLflow tracking server {uri} wants a user and password (HTTP 401) and "
            f"{' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set: set "
            f"{USERNAME_VARIABLE} and {PASSWORD_VARIABLE} ({_CREDENTIALS_HINT})"
        )
    if status == 401:
        return (
            f"MLflow tracking server {uri} rejected the user {user!r} or its password "
            f"(HTTP 401): fix {USERNAME_VARIABLE} and {PASSWORD_VARIABLE} ({_CREDENTIALS_HINT})"
        )
    if status == 403:
        return (
            f"MLflow tracking server {uri} does not let user {user!r} {doing} (HTTP 403): "
            "ask the server's admin to grant that user the permission, or set "
            f"{USERNAME_VARIABLE} and {PASSWORD_VARIABLE} to a user who has it "
            f"({_CREDENTIALS_HINT})"
        )
    return None


def _refused(exc: MlflowException, uri: str, doing: str, otherwise: str) -> TrackingError:
    """The error for a request MLflow refused: the one line for a 401 or 403 (see
    access_problem), else ``otherwise`` with MLflow's own message."""
    status = _http_status(exc)
    return TrackingError(access_problem(uri, status, doing) or f"{otherwise}: {exc.message}")


def _http_status(exc: MlflowException) -> int:
    # The status the server answered, from MLflow's error code (401: UNAUTHENTICATED);
    # MLflow leaves the method unannotated.
    status: int = exc.get_http_status_code()  # type: ignore[no-untyped-call]
    return status


@contextlib.contextmanager
def _access_checked(doing: str) -> Iterator[None]:
    """MLflow's 401 and 403 inside the block as the one-line TrackingError."""
    try:
        yield
    except MlflowException as exc:
        problem = access_problem(mlflow.get_tracking_uri(), _http_status(exc), doing)
        if problem is None:
            raise
        raise TrackingError(problem) from None


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read() or b"{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message or error.reason or f"HTTP {error.code}").splitlines()[0]
    return f"HTTP {error.code}: {text[:200]}"


def _point_at_store(project_root: Path | str) -> str:
    uri = tracking_uri(project_root)
    _check_reachable(uri)
    _client_defaults()
    mlflow.set_tracking_uri(uri)
    return uri


def _client_defaults() -> None:
    # Progress bars are carriage-return noise in CI logs; stage logs report progress.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A server that dies mid-run fails the stage in about 15 s rather than the 4 minutes
    # of MLflow's default 7 retries with doubling backoff; the environment may say more.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")


def connect(experiment_name: str, project_root: Path | str = ".") -> str:
    """Point MLflow at the store and return the experiment id (created if needed)."""
    uri = _point_at_store(project_root)
    client = MlflowClient()
    try:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            location = None
            if uri.startswith("sqlite:"):
                # Keep artifacts beside the database, whatever the working directory.
                location = (Path(project_root) / DEFAULT_ARTIFACTS).resolve().as_uri()
            return client.create_experiment(experiment_name, artifact_location=location)
    except MlflowException as exc:
        doing = f"use experiment {experiment_name!r}"
        raise _refused(exc, uri, doing, f"MLflow store {uri} refused the request") from None
    except Exception as exc:  # database drivers raise their own types
        raise TrackingError(f"MLflow store {uri} is not usable: {exc}") from None
    _check_active(experiment, uri)
    return str(experiment.experiment_id)


def _check_active(experiment: Experiment, uri: str) -> None:
    """A deleted experiment (the UI's Delete) keeps its name until it is removed for good,
    and MLflow refuses runs in it: say so before the stage starts, with the ways out."""
    if experiment.lifecycle_stage != LifecycleStage.DELETED:
        return
    number = experiment.experiment_id
    # `mlflow gc` works on the database itself: a server's is for its admin to name.
    database = uri if uri.startswith("sqlite:") else "<the tracking server's database>"
    raise TrackingError(
        f"experiment {experiment.name!r} (id {number}) in MLflow store {uri} is deleted "
        "and keeps its name until removed for good: restore it (`mlflow experiments "
        f"restore --experiment-id {number}` with MLFLOW_TRACKING_URI={uri}), remove it and "
        f"its runs for good (`mlflow gc --backend-store-uri {database} --experiment-ids "
        f"{number}`), or set train.experiment_name in params.yaml to another name"
    )


def find_pipeline_run(
    experiment_name: str, selection_fingerprint: str, project_root: Path | str = "."
) -> tuple[str, str]:
    """The experiment id and the newest parent run that the train stage tagged with this
    selection's fingerprint: tracking state is looked up in the store, never kept in a
    DVC output."""
    uri = _point_at_store(project_root)
    client = MlflowClient()
    try:
        experiment = client.get_experiment_by_name(experiment_name)
        runs = (
            []
            if experiment is None
            else client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.{SELECTION_TAG} = '{selection_fingerprint}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        )
    except MlflowException as exc:
        doing = f"read experiment {experiment_name!r}"
        raise _refused(exc, uri, doing, f"MLflow store {uri} is not usable") from None
    except Exception as exc:
        raise TrackingError(f"MLflow store {uri} is not usable: {exc}") from None
    if not runs:
        raise TrackingError(
            f"no run in experiment '{experiment_name}' of MLflow store {uri} made this "
            f"models/selection.json (fingerprint {selection_fingerprint}); was "
            "MLFLOW_TRACKING_URI changed, or the outputs pulled from another store? Re-run "
            "`dvc repro --force train` with this store"
        )
    return str(runs[0].info.experiment_id), str(runs[0].info.run_id)


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested params as MLflow params: ``train.cv.n_splits -> "4"``."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key, item in value.items():
            out |= flatten(f"{prefix}.{key}" if prefix else str(key), item)
        return out
    text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return {prefix: text[:6000]}


def log_batch(
    run_id: str,
    *,
    params: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    step: int = 0,
) -> None:
    client = MlflowClient()
    stamp = int(pd.Timestamp.now().timestamp() * 1000)
    metric_list = [Metric(k, float(v), stamp, step) for k, v in (metrics or {}).items()]
    param_list = [Param(k, str(v)) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    for i in range(0, max(len(metric_list), len(param_list), len(tag_list), 1), _BATCH):
        client.log_batch(
            run_id,
            metrics=metric_list[i : i + _BATCH],
            params=param_list[i : i + _BATCH],
            tags=tag_list[i : i + _BATCH],
        )


def start_run(
    experiment_id: str,
    name: str,
    *,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    client = MlflowClient()
    all_tags = dict(tags or {})
    if parent_run_id is not None:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=name, tags=all_tags)
    return str(run.info.run_id)


def end_run(run_id: str, status: str = "FINISHED") -> None:
    MlflowClient().set_terminated(run_id, status=status)


def log_artifact(run_id: str, path: Path | str, folder: str | None = None) -> None:
    MlflowClient().log_artifact(run_id, str(path), artifact_path=folder)


def log_text(run_id: str, text: str, name: str) -> None:
    MlflowClient().log_text(run_id, text, name)


def log_figure(run_id: str, figure: Any, name: str) -> None:
    MlflowClient().log_figure(run_id, figure, name)


def log_table(run_id: str, frame: pd.DataFrame, name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        frame.to_csv(path, index=False)
        MlflowClient().log_artifact(run_id, str(path))


def signature(schema: FeatureSchema) -> ModelSignature:
    """The MLflow signature, straight from the feature schema."""
    inputs = Schema(
        [
            ColSpec("double" if feature.kind == "numeric" else "string", feature.name)
            for feature in schema.features
        ]
    )
    outputs = Schema([TensorSpec(np.dtype(np.float64), (-1, 2), "probabilities")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements(model: Pipeline) -> list[str]:
    """The model's stack pinned as installed here, plus the distribution that provides
    each step's library: ``lightgbm``, and ``xgboost-cpu`` or ``xgboost`` (the same
    package built with or without CUDA, whichever this platform installed)."""
    providers = importlib.metadata.packages_distributions()
    packages = list(_MODEL_REQUIREMENTS)
    for _, step in model.steps:
        # The calibrated last step is this project's wrapper: its classifier's library is
        # what the model needs from PyPI.
        inner = getattr(step, "estimator", step) if hasattr(step, "calibrator") else step
        for name in providers.get(type(inner).__module__.partition(".")[0], []):
            if name.lower() not in {known.lower() for known in packages}:
                packages.append(name)
    return [f"{name}=={importlib.metadata.version(name)}" for name in packages]


def _model_kwargs(
    model: Pipeline,
    schema: FeatureSchema,
    example: pd.DataFrame,
    metadata: dict[str, Any],
    folder: str,
) -> dict[str, Any]:
    schema_path = Path(folder) / "feature_schema.json"
    schema_path.write_text(schema.model_dump_json(indent=2), encoding="utf-8")
    return {
        "signature": signature(schema),
        "input_example": example,
        "pip_requirements": pip_requirements(model),
        "pyfunc_predict_fn": "predict_proba",
        "serialization_format": "skops",
        "skops_trusted_types": SKOPS_TRUSTED_TYPES,
        "metadata": metadata,
        "extra_files": [str(schema_path)],
    }


def save_model(
    model: Pipeline,
    path: Path,
    schema: FeatureSchema,
    example: pd.DataFrame,
    metadata: dict[str, Any],
) -> None:
    """Write the model as an MLflow model folder (the pipeline's own copy, tracked by DVC)."""
    with tempfile.TemporaryDirectory() as folder:
        mlflow.sklearn.save_model(
            model, str(path), **_model_kwargs(model, schema, example, metadata, folder)
        )


def log_model(
    run_id: str,
    model: Pipeline,
    schema: FeatureSchema,
    example: pd.DataFrame,
    metadata: dict[str, Any],
) -> str:
    """Log the fitted pipeline to ``run_id``; returns its model URI."""
    with tempfile.TemporaryDirectory() as folder, mlflow.start_run(run_id=run_id):
        info = mlflow.sklearn.log_model(
            model, name="model", **_model_kwargs(model, schema, example, metadata, folder)
        )
    return str(info.model_uri)


@dataclasses.dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    alias: str | None  # None: a version found again that no alias points at any more
    previous_version: str | None
    previous_average_precision: float | None
    message: str
    registered: bool = True  # False when the registry already held this model


def find_version(name: str, fingerprint: str) -> Any:
    """The oldest version of ``name`` tagged with this model fingerprint, or None."""
    client = MlflowClient()
    try:
        found = client.search_model_versions(
            f"name = '{name}' and tags.{FINGERPRINT_KEY} = '{fingerprint}'",
            order_by=["version_number ASC"],
        )
    except MlflowException as exc:
        doing = f"search registered model {name!r}"
        otherwise = f"MLflow registry refused a search for {name}"
        raise _refused(exc, mlflow.get_tracking_uri(), doing, otherwise) from None
    return found[0] if found else None


def register_and_promote(
    log_model: Callable[[], str],
    name: str,
    *,
    fingerprint: str,
    test_average_precision: float,
    data_fingerprint: str,
    test_brier: float | None = None,
) -> Promotion:
    """Register the model under its fingerprint and apply the registry rule, once.

    A version already tagged with the fingerprint is the same model: it is not registered
    again (``log_model`` is not even called) and keeps its alias. A version that has the
    fingerprint but not the rule's tag was cut off between registration and the alias (a
    killed stage): the rule is applied to it now, so nothing stays half-registered.

    The rule: the new version becomes ``champion`` only if it beats the current
    champion's test average precision, or equals it with a lower test Brier score (the
    same ranking with better probabilities, as after calibration), otherwise
    ``challenger``. The message says which and why."""
    with _access_checked(f"register model {name!r} or move its aliases"):
        client = MlflowClient()
        existing = find_version(name, fingerprint)
        if existing is not None and RULE_TAG in existing.tags:
            return _found_again(client, name, str(existing.version), fingerprint)
        if existing is not None:
            version = str(existing.version)
        else:
            # repr round-trips exactly: a rerun with the same figures must not "beat" itself.
            tags = {
                TEST_AP_TAG: repr(test_average_precision),
                DATA_TAG: data_fingerprint,
                FINGERPRINT_KEY: fingerprint,
            }
            if test_brier is not None:
                tags[TEST_BRIER_TAG] = repr(test_brier)
            version = str(mlflow.register_model(log_model(), name, tags=tags).version)
        promotion = _promote(
            client,
            name,
            version,
            ap=test_average_precision,
            data=data_fingerprint,
            brier=test_brier,
        )
        if existing is not None:
            promotion = dataclasses.replace(
                promotion,
                message=f"{promotion.message} (v{version} had been registered by a run that "
                "stopped before the registry rule; finished now)",
            )
        # Last: the tag marks the registration complete (see the docstring).
        client.set_model_version_tag(name, version, RULE_TAG, str(promotion.alias))
        return promotion


def _found_again(client: MlflowClient, name: str, version: str, fingerprint: str) -> Promotion:
    aliases = set(client.get_model_version(name, version).aliases or [])
    alias = next((a for a in (CHAMPION, CHALLENGER) if a in aliases), None)
    held = f"it is '{alias}'" if alias else "no alias points at it any more"
    message = (
        f"{name} v{version} already holds this model (fingerprint {fingerprint}): not "
        f"registered again; {held}"
    )
    return Promotion(name, version, alias, None, None, message, registered=False)


def _promote(
    client: MlflowClient, name: str, version: str, *, ap: float, data: str, brier: float | None
) -> Promotion:
    current = _current_champion(client, name)
    if current is not None and str(current.version) == version:
        # Cut off after the alias was set: it already won.
        message = f"{name} v{version} is champion (test AP {ap:.4f})"
        return Promotion(name, version, CHAMPION, None, None, message)
    if current is None:
        promotion = Promotion(name, version, CHAMPION, None, None, "")
        message = f"{name} v{version} is the first champion (test AP {ap:.4f})"
    elif TEST_AP_TAG not in current.tags:
        promotion = Promotion(name, version, CHAMPION, current.version, None, "")
        message = f"{name} v{version} replaces champion v{current.version}, which has no test AP"
    else:
        previous = float(current.tags[TEST_AP_TAG])
        alias, verdict = _verdict(ap, previous, brier, _champion_brier(client, current))
        promotion = Promotion(name, version, alias, current.version, previous, "")
        message = (
            f"{name} v{version} {verdict.replace('the champion', f'champion v{current.version}')}"
            f": alias '{alias}' -> v{version}"
        )
    if current is not None and current.tags.get(DATA_TAG) not in (None, data):
        message += (
            f" (note: v{current.version} was tested on other data, so the two average "
            "precisions are not strictly comparable)"
        )
    client.set_registered_model_alias(name, str(promotion.alias), version)
    return dataclasses.replace(promotion, message=message)


def _champion_brier(client: MlflowClient, current: Any) -> float | None:
    """The champion's test Brier: its tag, or for versions registered before the tag
    existed, the ``test_brier`` metric of the run that logged it."""
    if TEST_BRIER_TAG in current.tags:
        return float(current.tags[TEST_BRIER_TAG])
    if not current.run_id:
        return None
    try:
        value = client.get_run(current.run_id).data.metrics.get("test_brier")
    except MlflowException:
        return None
    return None if value is None else float(value)


def _verdict(ap: float, previous: float, brier: float | None, old: float | None) -> tuple[str, str]:
    """The alias a new version gets against the champion's figures, and why."""
    on_ap = f"on test AP ({ap:.4f} vs {previous:.4f})"
    if ap > previous:
        return CHAMPION, f"beats the champion {on_ap}"
    if ap == previous and brier is not None and old is not None and brier < old:
        return CHAMPION, (
            f"ties the champion on test AP ({ap:.4f}) with a lower test Brier "
            f"({brier:.5f} vs {old:.5f})"
        )
    return CHALLENGER, f"does not beat the champion {on_ap}"


def _current_champion(client: MlflowClient, name: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if _http_status(exc) in (401, 403):  # not "no champion": the caller says why
            raise
        return None


def parse_registry_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` or ``models:/name/version`` -> (name, alias, version)."""
    body = model_uri.removeprefix("models:/")
    if body == model_uri or not body:
        raise ModelLoadError(
            f"{model_uri!r} is not a registry URI; use models:/<name>@<alias> or "
            "models:/<name>/<version>, or a model folder"
        )
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, alias, None
    name, _, version = body.partition("/")
    if not version.isdigit():
        raise ModelLoadError(
            f"{model_uri!r}: the version after the model name must be a number, or use "
            "models:/<name>@<alias>"
        )
    return name, None, version


def fetch_registered_model(model_uri: str, destination: Path, store_uri: str) -> RegistryInfo:
    """Download a registry model (``models:/name@alias`` or ``/version``) into
    ``destination`` and record where it came from in ``registered_model.json``."""
    name, alias, version = parse_registry_uri(model_uri)
    if store_uri.startswith("sqlite:///") and not Path(store_uri[10:]).is_file():
        raise ModelLoadError(
            f"no MLflow store at {store_uri}: run `make train` first, or set "
            "MLFLOW_TRACKING_URI to the store that holds the model"
        )
    _check_reachable_for_model(store_uri)
    _client_defaults()
    mlflow.set_tracking_uri(store_uri)
    client = MlflowClient()
    try:
        found = (
            client.get_model_version_by_alias(name, alias)
            if alias is not None
            else client.get_model_version(name, str(version))
        )
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{found.version}", dst_path=str(destination)
        )
    except MlflowException as exc:
        doing = f"read registered model {name!r}"
        if problem := access_problem(store_uri, _http_status(exc), doing):
            raise ModelLoadError(problem) from None
        raise ModelLoadError(
            f"{model_uri} is not in the MLflow store {store_uri} ({exc.message}); run "
            "`make train` to register a champion, or fix SERVING_MODEL_URI"
        ) from None
    info = RegistryInfo(
        name=name,
        version=str(found.version),
        alias=alias,
        run_id=found.run_id,
        source_uri=model_uri,
    )
    write_registry_info(destination, info)
    return info


def _check_reachable_for_model(store_uri: str) -> None:
    try:
        _check_reachable(store_uri)
    except TrackingError as error:
        raise ModelLoadError(str(error)) from None

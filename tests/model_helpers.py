"""Small fitted models, model folders and a throw-away MLflow registry, for the tests of
model loading, the compiled scorer and the prediction service.

Models are built with the project's own ``fraud_detection.modeling`` functions and saved
with ``tracking.save_model``, exactly as the evaluate stage does.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from fraud_detection.modeling import build_pipeline, candidates, refit_for_serving
from fraud_detection.params import ModelKind, ModelSpec, TrainParams
from fraud_detection.schema import Feature, FeatureSchema, with_example

# What the evaluate stage writes into the model folder (pipelines/evaluate.model_metadata).
METADATA: dict[str, Any] = {
    "threshold": 0.5,
    "threshold_rule": "max_f1",
    "candidate": "forest/none [max_depth=6]",
    "cv_average_precision": 0.61,
    "test_metrics": {"average_precision": 0.58, "roc_auc": 0.9, "f1": 0.5},
}

MIXED_SCHEMA = FeatureSchema(
    source="csv",
    features=[
        Feature(name="amount", kind="numeric", description="Amount", minimum=0.0),
        Feature(name="score", kind="numeric", description="A signed score"),
        Feature(name="channel", kind="categorical", description="Where", categories=None),
    ],
    target="label",
)


def mixed_data(rows: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A learnable problem with a numeric, a signed and a categorical column, a few NaN."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.0, 1.0, size=rows)
    score = rng.normal(size=rows)
    channel = rng.choice(["web", "store", "phone"], size=rows)
    logit = 0.03 * amount + 1.5 * score + 1.5 * (channel == "web") - 4.0
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    X = pd.DataFrame({"amount": amount, "score": score, "channel": channel})
    X.loc[::29, "score"] = np.nan
    return X, y


def fitted_pipeline(
    X: pd.DataFrame, y: Any, schema: FeatureSchema, kind: ModelKind, **params: Any
) -> Pipeline:
    """The shipped pipeline for one model kind, built and refitted as evaluate does."""
    train = TrainParams(models={"m": ModelSpec(kind=kind, params=params)})
    candidate = candidates(train)[0]
    positive_share = float(np.mean(y))
    return refit_for_serving(
        build_pipeline(candidate, train, schema, positive_share=positive_share), X, y
    )


def save_folder(
    pipeline: Pipeline,
    folder: Path,
    schema: FeatureSchema,
    example: pd.DataFrame,
    metadata: dict[str, Any] | None = None,
) -> Path:
    from fraud_detection.io import tracking  # noqa: PLC0415  (MLflow is slow to import)

    tracking.save_model(pipeline, folder, schema, example, metadata or METADATA)
    return folder


def mixed_model_folder(folder: Path) -> tuple[Path, FeatureSchema, Pipeline]:
    """A logistic regression on :func:`mixed_data`, saved as a model folder."""
    X, y = mixed_data()
    schema = with_example(MIXED_SCHEMA, X)
    pipeline = fitted_pipeline(X, y, schema, "logistic_regression")
    return save_folder(pipeline, folder, schema, X.head(5)), schema, pipeline


# --- a throw-away MLflow registry ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RegistryStore:
    """An MLflow SQLite store with one model registered twice: v1 is ``champion``,
    v2 (a worse test AP) ``challenger``."""

    root: Path
    uri: str
    name: str
    run_ids: dict[str, str]  # version -> run id
    schema: FeatureSchema
    pipeline: Pipeline


_REGISTRY: list[RegistryStore] = []
_REGISTRY_LOCK = threading.Lock()
REGISTERED_NAME = "test-detector"


def registry_store(factory: pytest.TempPathFactory) -> RegistryStore:
    """The session's registry store, made on first use (it takes ~10 s: MLflow creates
    its tables and logs two models); shared by the tracking and the serving tests."""
    with _REGISTRY_LOCK:
        if not _REGISTRY:
            _REGISTRY.append(_make_registry(factory.mktemp("registry")))
        return _REGISTRY[0]


def _make_registry(root: Path) -> RegistryStore:
    import mlflow  # noqa: PLC0415

    from fraud_detection.io import tracking  # noqa: PLC0415

    X, y = mixed_data()
    schema = with_example(MIXED_SCHEMA, X)
    pipeline = fitted_pipeline(X, y, schema, "logistic_regression")
    previous_uri = mlflow.get_tracking_uri()
    run_ids: dict[str, str] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        experiment = tracking.connect("serving-tests", root)
        for test_ap in (0.6, 0.4):
            run_id = tracking.start_run(experiment, f"evaluate ap={test_ap}")
            metadata = METADATA | {"candidate": "logreg/none"}
            model_uri = tracking.log_model(run_id, pipeline, schema, X.head(5), metadata)
            promotion = tracking.register_and_promote(
                functools.partial(str, model_uri),
                REGISTERED_NAME,
                fingerprint=f"fp-{test_ap}",
                test_average_precision=test_ap,
                data_fingerprint="data",
            )
            tracking.end_run(run_id)
            run_ids[promotion.version] = run_id
        uri = tracking.tracking_uri(root)
    mlflow.set_tracking_uri(previous_uri)
    return RegistryStore(root, uri, REGISTERED_NAME, run_ids, schema, pipeline)

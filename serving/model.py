"""Loading the model the service answers with: registry alias or exported folder."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraud_detection.errors import ModelLoadError
from fraud_detection.inference import Scorer, compile_scorer
from fraud_detection.io.model_package import LOCAL_VERSION, ModelPackage, load_model_package
from fraud_detection.io.prediction_log import ModelStamp
from fraud_detection.registry import FINGERPRINT_KEY
from serving.settings import Settings

logger = logging.getLogger("serving.model")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score requests, with what the API reports about it."""

    package: ModelPackage
    scorer: Scorer
    name: str
    version: str
    alias: str | None
    source: str
    stamp: ModelStamp
    load_seconds: float

    @property
    def threshold(self) -> float:
        return float(self.package.threshold)

    def describe(self) -> dict[str, Any]:
        """The body of GET /model."""
        registry = self.package.registry
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.package.run_id or (registry.run_id if registry else None),
            "source": self.source,
            "threshold": self.threshold,
            "threshold_rule": self.package.metadata.get("threshold_rule"),
            "candidate": self.package.metadata.get("candidate"),
            "cv_average_precision": self.package.metadata.get("cv_average_precision"),
            "calibration": self.package.metadata.get("calibration"),
            "test_metrics": self.package.metadata.get("test_metrics", {}),
            "scoring": {"method": self.scorer.method, "detail": self.scorer.detail},
            "model_fingerprint": self.stamp.fingerprint or None,
            "schema_fingerprint": self.stamp.schema_fingerprint,
            "feature_schema": self.package.schema.model_dump(mode="json"),
        }


def load_model(settings: Settings, registry_cache: Path | None = None) -> LoadedModel:
    """Resolve ``settings.model_uri`` and load it; every failure is a
    :class:`ModelLoadError` (the service stays up and /ready says why)."""
    try:
        return _load(settings, registry_cache)
    except ModelLoadError:
        raise
    except Exception as error:  # a store or a model broken in a way nobody foresaw
        logger.exception("loading %s failed", settings.model_uri)
        raise ModelLoadError(
            f"loading {settings.model_uri} failed ({type(error).__name__}: {error})"
        ) from error


def _load(settings: Settings, registry_cache: Path | None) -> LoadedModel:
    started = time.perf_counter()
    uri = settings.model_uri
    if uri.startswith("models:/"):
        # The download is only needed until the model is in memory.
        with tempfile.TemporaryDirectory(prefix="model-", dir=registry_cache) as download:
            folder = Path(download)
            _download(uri, settings, folder)
            package = load_model_package(folder)
    else:
        folder = Path(uri.removeprefix("file://"))
        package = load_model_package(folder)
    scorer = compile_scorer(package.pipeline, package.schema, package.example)
    if scorer.method != "compiled":
        logger.warning("scoring through predict_proba (%s)", scorer.detail)
    registry = package.registry
    name = registry.name if registry else folder.name
    version = registry.version if registry else LOCAL_VERSION
    schema_json = package.schema.model_dump_json()
    stamp = ModelStamp(
        name=name,
        version=version,
        schema_fingerprint=package.schema.fingerprint,
        schema_json=schema_json,
        feature_names=tuple(package.schema.names),
        threshold=package.threshold,
        fingerprint=str(package.metadata.get(FINGERPRINT_KEY) or ""),
    )
    return LoadedModel(
        package=package,
        scorer=scorer,
        name=name,
        version=version,
        alias=registry.alias if registry else None,
        source=uri,
        stamp=stamp,
        load_seconds=time.perf_counter() - started,
    )


def _download(uri: str, settings: Settings, folder: Path) -> None:
    try:
        # MLflow is needed only for registry URIs; the image serves an exported folder.
        from fraud_detection.io import tracking  # noqa: PLC0415
    except ImportError as error:
        raise ModelLoadError(
            f"{uri} needs MLflow, which is not installed here ({error.name}); serve an "
            "exported folder (make export-model) or install the train extra"
        ) from None
    store = settings.tracking_uri or tracking.tracking_uri(".")
    tracking.fetch_registered_model(uri, folder, store)

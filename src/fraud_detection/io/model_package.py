"""Read a model folder written by the pipeline, without MLflow.

The pipeline saves models in MLflow's folder layout (``MLmodel``, ``model.skops``, the
feature schema under ``extra_files/``). The serving image reads that folder with skops
and PyYAML alone, so it needs neither MLflow nor its dependencies. ``make export-model``
adds ``registered_model.json`` with the registry name, version and alias it came from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from fraud_detection.errors import ModelLoadError
from fraud_detection.schema import FeatureSchema

# Types skops must be told to trust for the models built here: the files are written by
# this pipeline and read back by its own service. Keep the list next to the estimators
# it covers (modeling.classifier) and extend both together.
SKOPS_TRUSTED_TYPES = [
    "collections.OrderedDict",  # LightGBM's fitted parameters
    "fraud_detection.calibration.CalibratedClassifier",  # the calibrated last step
    "fraud_detection.calibration.IsotonicCalibrator",
    "fraud_detection.calibration.SigmoidCalibrator",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "numpy.dtype",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",  # the MLP's solver state
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.tree._tree.Tree",  # decision trees and random forests
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
]

MLMODEL_FILE = "MLmodel"
SCHEMA_FILE = "extra_files/feature_schema.json"
EXAMPLE_FILE = "input_example.json"
REGISTRY_FILE = "registered_model.json"
# The version a model folder without registry information is served and logged under.
LOCAL_VERSION = "local"
_FIX = "re-export it with `make export-model`, or point SERVING_MODEL_URI at a model folder"


class RegistryInfo(BaseModel):
    """Where an exported model came from in the MLflow registry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    alias: str | None = None
    run_id: str | None = None
    source_uri: str


@dataclass(frozen=True)
class ModelPackage:
    """A fitted pipeline with everything the service and the monitor need to use it."""

    path: Path
    pipeline: Any
    schema: FeatureSchema
    threshold: float
    metadata: dict[str, Any]
    run_id: str | None
    registry: RegistryInfo | None
    example: pd.DataFrame | None = field(default=None, repr=False)


def load_model_package(folder: Path | str) -> ModelPackage:
    """Load and check a model folder; every failure is a :class:`ModelLoadError`."""
    path = Path(folder)
    if not path.is_dir():
        raise ModelLoadError(f"no model folder at {path}: {_FIX}")
    mlmodel = _read_mlmodel(path)
    schema = _read_schema(path)
    metadata = dict(mlmodel.get("metadata") or {})
    pipeline = _read_pipeline(path, mlmodel)
    _check_inputs(pipeline, schema, path)
    return ModelPackage(
        path=path,
        pipeline=pipeline,
        schema=schema,
        threshold=_threshold(metadata, path),
        metadata=metadata,
        run_id=mlmodel.get("run_id"),
        registry=_read_registry(path),
        example=_read_example(path, schema),
    )


def write_registry_info(folder: Path, info: RegistryInfo) -> None:
    (folder / REGISTRY_FILE).write_text(info.model_dump_json(indent=2) + "\n", encoding="utf-8")


def _read_mlmodel(path: Path) -> dict[str, Any]:
    file = path / MLMODEL_FILE
    if not file.is_file():
        raise ModelLoadError(f"{path} is not a model folder (no {MLMODEL_FILE} file): {_FIX}")
    try:
        content = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"{file} is not valid YAML ({error}): {_FIX}") from error
    if not isinstance(content, dict) or "sklearn" not in (content.get("flavors") or {}):
        raise ModelLoadError(f"{file} does not describe a scikit-learn model: {_FIX}")
    return content


def _read_schema(path: Path) -> FeatureSchema:
    file = path / SCHEMA_FILE
    if not file.is_file():
        raise ModelLoadError(
            f"{path} has no feature schema ({SCHEMA_FILE}); models trained by this project "
            f"carry one: {_FIX}"
        )
    try:
        return FeatureSchema.model_validate_json(file.read_bytes())
    except ValidationError as error:
        raise ModelLoadError(f"{file} is not a valid feature schema ({error}): {_FIX}") from error


def _read_pipeline(path: Path, mlmodel: dict[str, Any]) -> Any:
    flavor = mlmodel["flavors"]["sklearn"]
    if flavor.get("serialization_format") != "skops":
        raise ModelLoadError(
            f"{path} holds a {flavor.get('serialization_format')!r} model; this service "
            f"loads only skops files (pickles can run arbitrary code): {_FIX}"
        )
    file = path / str(flavor.get("pickled_model", "model.skops"))
    if not file.is_file():
        raise ModelLoadError(f"the model file {file} is missing: {_FIX}")
    # skops is imported here: it pulls in scikit-learn, which the caller may not need yet.
    import skops.io  # noqa: PLC0415

    try:
        untrusted = set(skops.io.get_untrusted_types(file=file)) - set(SKOPS_TRUSTED_TYPES)
    except Exception as error:  # skops raises many types for a damaged file
        raise ModelLoadError(
            f"the model file {file} is damaged or not a skops file "
            f"({type(error).__name__}: {error}): {_FIX}"
        ) from error
    if untrusted:
        raise ModelLoadError(
            f"the model file {file} contains types this service does not trust: "
            f"{sorted(untrusted)}. If they are yours, add them to SKOPS_TRUSTED_TYPES in "
            "fraud_detection/io/model_package.py"
        )
    try:
        return skops.io.load(file, trusted=SKOPS_TRUSTED_TYPES)
    except Exception as error:
        raise ModelLoadError(
            f"the model file {file} could not be loaded ({type(error).__name__}: {error}): {_FIX}"
        ) from error


def _check_inputs(pipeline: Any, schema: FeatureSchema, path: Path) -> None:
    if not hasattr(pipeline, "predict_proba"):
        raise ModelLoadError(f"the model in {path} has no predict_proba: {_FIX}")
    trained_on = [str(name) for name in getattr(pipeline, "feature_names_in_", [])]
    if trained_on and trained_on != schema.names:
        raise ModelLoadError(
            f"the model in {path} was fitted on columns {trained_on}, but its feature schema "
            f"lists {schema.names}: the folder mixes two models. {_FIX}"
        )


def _threshold(metadata: dict[str, Any], path: Path) -> float:
    value = metadata.get("threshold")
    # bool is an int in Python: `threshold: true` must not pass as 1.0.
    if isinstance(value, int | float) and not isinstance(value, bool):
        threshold = float(value)
        if math.isfinite(threshold) and 0 <= threshold <= 1:
            return threshold
    raise ModelLoadError(
        f"{path / MLMODEL_FILE} has no valid decision threshold in its metadata "
        f"(found {value!r}); the evaluate stage writes one: {_FIX}"
    )


def _read_registry(path: Path) -> RegistryInfo | None:
    file = path / REGISTRY_FILE
    if not file.is_file():
        return None
    try:
        return RegistryInfo.model_validate_json(file.read_bytes())
    except ValidationError as error:
        raise ModelLoadError(f"{file} is not valid ({error}): {_FIX}") from error


def _read_example(path: Path, schema: FeatureSchema) -> pd.DataFrame | None:
    """The rows MLflow saved as the input example (pandas "split" layout), if readable."""
    file = path / EXAMPLE_FILE
    try:
        content = json.loads(file.read_text(encoding="utf-8"))
        frame = pd.DataFrame(content["data"], columns=content["columns"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return frame if list(frame.columns) == schema.names else None

"""Reading a model folder without MLflow: what loads, and what each broken folder says."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
import pytest
import skops.io
import yaml
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from fraud_detection.errors import ModelLoadError
from fraud_detection.io.model_package import (
    REGISTRY_FILE,
    SCHEMA_FILE,
    RegistryInfo,
    load_model_package,
    write_registry_info,
)
from fraud_detection.modeling import preprocessor
from fraud_detection.params import ModelKind
from fraud_detection.schema import FeatureSchema
from tests.model_helpers import (
    METADATA,
    fitted_pipeline,
    mixed_data,
    mixed_model_folder,
    save_folder,
)

FIX = "make export-model"  # every message says how to fix the folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FeatureSchema, Pipeline]:
    return mixed_model_folder(tmp_path_factory.mktemp("saved") / "model")


@pytest.fixture
def folder(saved, tmp_path: Path) -> Path:
    """A private copy of the saved folder, free to break."""
    return Path(shutil.copytree(saved[0], tmp_path / "model"))


def edit_mlmodel(folder: Path, change) -> None:
    file = folder / "MLmodel"
    content = yaml.safe_load(file.read_text())
    change(content)
    file.write_text(yaml.safe_dump(content))


# --- what loads ------------------------------------------------------------------------


def test_loads_the_pipeline_schema_threshold_and_example(saved):
    path, schema, pipeline = saved
    package = load_model_package(path)
    assert package.path == path
    assert package.schema == schema
    assert package.threshold == METADATA["threshold"]
    assert package.metadata == METADATA
    assert package.run_id is None  # saved, not logged to a run
    assert package.registry is None
    assert package.example is not None
    assert list(package.example.columns) == schema.names
    assert len(package.example) == 5
    X, _ = mixed_data(rows=50, seed=3)
    np.testing.assert_array_equal(package.pipeline.predict_proba(X), pipeline.predict_proba(X))


def test_accepts_a_string_path(saved):
    assert load_model_package(str(saved[0])).schema == saved[1]


def test_reads_the_registry_record(folder):
    info = RegistryInfo(
        name="fraud-detector", version="7", alias="champion", run_id="abc", source_uri="models:/x"
    )
    write_registry_info(folder, info)
    assert load_model_package(folder).registry == info


def test_a_missing_or_unreadable_input_example_is_not_an_error(folder):
    (folder / "input_example.json").write_text("{not json")
    assert load_model_package(folder).example is None
    (folder / "input_example.json").unlink()
    assert load_model_package(folder).example is None


def test_an_example_with_other_columns_is_ignored(folder):
    (folder / "input_example.json").write_text(json.dumps({"columns": ["x"], "data": [[1.0]]}))
    assert load_model_package(folder).example is None


# Small settings per kind, to keep the fits quick; every kind of ModelKind is covered.
_SMALL: dict[str, dict[str, Any]] = {
    "decision_tree": {"max_depth": 4},
    "random_forest": {"n_estimators": 5, "max_depth": 4},
    "xgboost": {"n_estimators": 5, "max_depth": 2},
    "lightgbm": {"n_estimators": 5, "num_leaves": 4},
    "mlp": {"hidden_layer_sizes": (4,), "max_iter": 300},
}


@pytest.mark.parametrize("kind", get_args(ModelKind))
def test_every_model_kind_the_project_trains_is_trusted(kind, saved, tmp_path):
    """SKOPS_TRUSTED_TYPES covers each estimator modeling.classifier can build."""
    params = _SMALL.get(kind, {})
    X, y = mixed_data()
    schema = saved[1]
    pipeline = fitted_pipeline(X, y, schema, kind, **params)
    path = save_folder(pipeline, tmp_path / "model", schema, X.head(5))
    package = load_model_package(path)
    np.testing.assert_array_equal(package.pipeline.predict_proba(X), pipeline.predict_proba(X))


def test_loads_without_mlflow(saved):
    """The serving image has no MLflow: loading must not import it."""
    script = textwrap.dedent(
        f"""
        import sys

        class NoMlflow:
            def find_spec(self, name, path=None, target=None):
                if name == "mlflow" or name.startswith("mlflow."):
                    raise ImportError("mlflow is not installed in this test")

        sys.meta_path.insert(0, NoMlflow())
        from fraud_detection.io.model_package import load_model_package
        package = load_model_package({str(saved[0])!r})
        print(package.pipeline.predict_proba(package.example).shape)
        assert "mlflow" not in sys.modules
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "(5, 2)"


# --- what does not, and what it says ---------------------------------------------------


def expect_error(folder: Path, *fragments: str) -> str:
    with pytest.raises(ModelLoadError) as caught:
        load_model_package(folder)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_no_folder(tmp_path):
    expect_error(tmp_path / "nowhere", f"no model folder at {tmp_path / 'nowhere'}", FIX)


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "model").write_text("x")
    expect_error(tmp_path / "model", "no model folder", FIX)


def test_folder_without_mlmodel(folder):
    (folder / "MLmodel").unlink()
    expect_error(folder, "is not a model folder (no MLmodel file)", FIX)


def test_mlmodel_that_is_not_yaml(folder):
    (folder / "MLmodel").write_text("flavors: [unclosed\n  - : :")
    expect_error(folder, "MLmodel is not valid YAML", FIX)


def test_mlmodel_that_is_not_utf8(folder):
    (folder / "MLmodel").write_bytes(b"\xff\xfe\x00garbage")
    expect_error(folder, "MLmodel is not valid YAML", FIX)


def test_mlmodel_without_sklearn_flavor(folder):
    edit_mlmodel(folder, lambda content: content["flavors"].pop("sklearn"))
    expect_error(folder, "does not describe a scikit-learn model", FIX)


def test_mlmodel_that_is_a_list(folder):
    (folder / "MLmodel").write_text("- just\n- a list\n")
    expect_error(folder, "does not describe a scikit-learn model")


def test_pickled_models_are_refused(folder):
    def to_pickle(content):
        content["flavors"]["sklearn"]["serialization_format"] = "cloudpickle"

    edit_mlmodel(folder, to_pickle)
    expect_error(folder, "holds a 'cloudpickle' model", "loads only skops files", FIX)


def test_missing_model_file(folder):
    (folder / "model.skops").unlink()
    expect_error(folder, "model.skops is missing", FIX)


@pytest.mark.parametrize(
    "content", [b"", b"garbage, not a zip file" * 10, b"PK\x03\x04 truncated zip"]
)
def test_corrupt_model_file(folder, content):
    (folder / "model.skops").write_bytes(content)
    expect_error(folder, "model.skops is damaged or not a skops file", FIX)


def test_untrusted_types_are_refused_by_name(folder, saved):
    X, y = mixed_data()
    neighbours = Pipeline(
        [("preprocess", preprocessor(saved[1])), ("model", KNeighborsClassifier())]
    )
    skops.io.dump(neighbours.fit(X, y), folder / "model.skops")
    message = expect_error(
        folder, "contains types this service does not trust", "SKOPS_TRUSTED_TYPES"
    )
    assert "sklearn.neighbors._kd_tree.KDTree" in message


def test_missing_feature_schema(folder):
    (folder / SCHEMA_FILE).unlink()
    expect_error(folder, f"has no feature schema ({SCHEMA_FILE})", FIX)


def test_invalid_feature_schema(folder):
    (folder / SCHEMA_FILE).write_text(json.dumps({"version": 1, "features": []}))
    expect_error(folder, "feature_schema.json is not a valid feature schema", FIX)


def test_schema_of_another_model(folder, saved):
    """The folder mixes two models: the pipeline was fitted on other columns."""
    schema = saved[1]
    renamed = [
        feature.model_copy(update={"name": "AMOUNT"}) if feature.name == "amount" else feature
        for feature in schema.features
    ]
    other = schema.model_copy(update={"features": renamed, "example": {}})
    (folder / SCHEMA_FILE).write_text(other.model_dump_json())
    message = expect_error(folder, "was fitted on columns", "the folder mixes two models", FIX)
    assert "'amount'" in message
    assert "'AMOUNT'" in message


def test_schema_in_another_order(folder, saved):
    schema = saved[1]
    other = schema.model_copy(update={"features": schema.features[::-1]})
    (folder / SCHEMA_FILE).write_text(other.model_dump_json())
    expect_error(folder, "the folder mixes two models")


@pytest.mark.parametrize("threshold", [None, "0.5", 1.5, -0.1, float("nan"), float("inf")])
def test_threshold_must_be_a_probability(folder, threshold):
    def set_threshold(content):
        if threshold is None:
            del content["metadata"]["threshold"]
        else:
            content["metadata"]["threshold"] = threshold

    edit_mlmodel(folder, set_threshold)
    expect_error(folder, "has no valid decision threshold", FIX)


def test_no_metadata_at_all(folder):
    edit_mlmodel(folder, lambda content: content.pop("metadata"))
    expect_error(folder, "has no valid decision threshold", "(found None)")


def test_invalid_registry_record(folder):
    (folder / REGISTRY_FILE).write_text(json.dumps({"name": "x"}))
    expect_error(folder, f"{REGISTRY_FILE} is not valid", FIX)


def test_example_frame_types(saved):
    package = load_model_package(saved[0])
    assert package.example is not None
    assert pd.api.types.is_numeric_dtype(package.example["amount"])
    assert all(isinstance(value, str) for value in package.example["channel"])

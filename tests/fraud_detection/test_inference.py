"""The compiled scorer: every supported pipeline reproduces predict_proba, anything else
falls back to the pipeline and says why."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from fraud_detection import inference
from fraud_detection.calibration import fit_calibrator, with_calibration
from fraud_detection.inference import (
    TOLERANCE,
    compile_scorer,
    pipeline_scorer,
    probe_rows,
)
from fraud_detection.modeling import preprocessor
from fraud_detection.params import ModelKind
from fraud_detection.schema import FeatureSchema, with_example
from tests.model_helpers import MIXED_SCHEMA, fitted_pipeline, mixed_data

NUMERIC_SCHEMA = MIXED_SCHEMA.model_copy(
    update={"features": [f for f in MIXED_SCHEMA.features if f.kind == "numeric"]}
)
SCHEMAS = {"numeric": NUMERIC_SCHEMA, "mixed": MIXED_SCHEMA}

# (kind for modeling.classifier, estimator params); ExtraTrees is built by hand below.
KINDS: dict[str, tuple[ModelKind, dict[str, Any]]] = {
    "dummy": ("dummy", {}),
    "logistic_regression": ("logistic_regression", {"C": 0.5}),
    "decision_tree": ("decision_tree", {"min_samples_leaf": 3}),
    "random_forest": ("random_forest", {"n_estimators": 15, "max_depth": 8}),
    "xgboost": ("xgboost", {"n_estimators": 25, "max_depth": 3}),
    "lightgbm": ("lightgbm", {"n_estimators": 25, "num_leaves": 7, "min_child_samples": 5}),
    "mlp": ("mlp", {"hidden_layer_sizes": (8, 4), "max_iter": 500}),
}


def training(schema_name: str) -> tuple[pd.DataFrame, np.ndarray, FeatureSchema]:
    schema = SCHEMAS[schema_name]
    X, y = mixed_data(rows=600, seed=0)
    X = X[schema.names]
    return X, y, with_example(schema, X)


def held_out(schema: FeatureSchema) -> pd.DataFrame:
    """New rows with NaN numbers, an unseen category and a missing category."""
    X, _ = mixed_data(rows=300, seed=1)
    X.loc[::7, "amount"] = np.nan
    X.loc[3::11, "score"] = np.nan
    X.loc[1::5, "channel"] = "kiosk"  # never seen in training
    X.loc[2::13, "channel"] = np.nan
    frame: pd.DataFrame = X[schema.names]
    return frame


def rows_of(frame: pd.DataFrame) -> list[list[Any]]:
    return frame.astype(object).to_numpy().tolist()


def build(kind: str, schema_name: str) -> tuple[Pipeline, FeatureSchema, pd.DataFrame]:
    X, y, schema = training(schema_name)
    if kind == "extra_trees":
        model = ExtraTreesClassifier(n_estimators=12, max_depth=8, random_state=0)
        pipeline = Pipeline([("preprocess", preprocessor(schema)), ("model", model)]).fit(X, y)
    else:
        model_kind, params = KINDS[kind]
        pipeline = fitted_pipeline(X, y, schema, model_kind, **params)
    return pipeline, schema, X.head(5)


@pytest.mark.parametrize("schema_name", ["numeric", "mixed"])
@pytest.mark.parametrize("kind", [*KINDS, "extra_trees"])
def test_supported_pipelines_compile_and_match_predict_proba(kind, schema_name):
    pipeline, schema, example = build(kind, schema_name)
    scorer = compile_scorer(pipeline, schema, example)
    assert scorer.method == "compiled", scorer.detail
    assert type(pipeline[-1]).__name__ in scorer.detail

    frame = held_out(schema)
    assert frame.isna().any().any()
    expected = pipeline.predict_proba(frame)[:, 1]
    got = scorer(rows_of(frame))
    assert np.issubdtype(got.dtype, np.floating)  # XGBoost's own scores are float32
    assert got.shape == (len(frame),)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    # The data is learnable: a non-constant model really is being reproduced.
    if kind != "dummy":
        assert np.ptp(expected) > 0.1


@pytest.mark.parametrize("kind", [*KINDS, "extra_trees"])
def test_single_rows_and_batches_agree(kind):
    pipeline, schema, example = build(kind, "mixed")
    scorer = compile_scorer(pipeline, schema, example)
    rows = rows_of(held_out(schema).head(40))
    one_by_one = np.array([scorer([row])[0] for row in rows])
    np.testing.assert_allclose(one_by_one, scorer(rows), rtol=0, atol=1e-12)


def test_tree_thresholds_are_compared_in_float32_like_scikit_learn():
    """Values within float32 rounding of a split go the way scikit-learn sends them."""
    pipeline, schema, example = build("decision_tree", "numeric")
    tree = pipeline[-1].tree_
    scaler = pipeline[0].named_transformers_["numeric"][-1]
    internal = tree.feature >= 0
    rows = []
    for feature, threshold in zip(tree.feature[internal], tree.threshold[internal], strict=True):
        # Back from the scaled split value to raw input, then nudge by 1 ulp each way.
        raw = threshold * scaler.scale_[feature] + scaler.mean_[feature]
        for value in (np.nextafter(raw, -np.inf), raw, np.nextafter(raw, np.inf)):
            row = [float(v) for v in scaler.mean_]
            row[feature] = float(value)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=schema.names)
    scorer = compile_scorer(pipeline, schema, example)
    assert scorer.method == "compiled"
    np.testing.assert_array_equal(scorer(rows), pipeline.predict_proba(frame)[:, 1])


# --- fallbacks -------------------------------------------------------------------------


def custom_pipeline(transformer: Any, estimator: Any) -> tuple[Pipeline, FeatureSchema]:
    X, y, schema = training("mixed")
    steps = ColumnTransformer(
        [
            ("numeric", transformer, schema.numeric),
            ("categorical", preprocessor(schema).transformers[1][1], schema.categorical),
        ]
    )
    return Pipeline([("preprocess", steps), ("model", estimator)]).fit(X, y), schema


@pytest.mark.parametrize(
    ("transformer", "estimator", "reason"),
    [
        (
            make_pipeline(SimpleImputer(strategy="median"), MinMaxScaler()),
            LogisticRegression(),
            "numeric step MinMaxScaler",
        ),
        (
            make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
            GaussianNB(),  # (SVC(probability=True) is deprecated in scikit-learn 1.9)
            "estimator GaussianNB",
        ),
        (
            make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()),
            LogisticRegression(),
            "imputer with an indicator",
        ),
    ],
    ids=["min-max-scaler", "naive-bayes", "imputer-indicator"],
)
def test_unsupported_steps_fall_back_to_the_pipeline(transformer, estimator, reason):
    pipeline, schema = custom_pipeline(transformer, estimator)
    scorer = compile_scorer(pipeline, schema, None)
    assert scorer.method == "pipeline"
    assert scorer.detail.startswith("not compiled: ")
    assert reason in scorer.detail
    frame = held_out(schema)
    np.testing.assert_allclose(
        scorer(rows_of(frame)), pipeline.predict_proba(frame)[:, 1], rtol=0, atol=1e-12
    )


def test_preprocessing_other_than_one_column_transformer_falls_back():
    X, y, schema = training("numeric")
    pipeline = Pipeline(
        [("impute", SimpleImputer()), ("scale", StandardScaler()), ("model", LogisticRegression())]
    ).fit(X, y)
    scorer = compile_scorer(pipeline, schema, X.head(5))
    assert scorer.method == "pipeline"
    assert "not a single ColumnTransformer" in scorer.detail
    frame = held_out(schema)
    np.testing.assert_allclose(scorer(rows_of(frame)), pipeline.predict_proba(frame)[:, 1])


def test_a_compiled_path_that_differs_from_predict_proba_is_not_used(monkeypatch):
    pipeline, schema, example = build("logistic_regression", "mixed")
    original = inference._compile_estimator

    def off_by_a_little(estimator):
        predict, label = original(estimator)
        return (lambda X: predict(X) + 1e-6), label

    monkeypatch.setattr(inference, "_compile_estimator", off_by_a_little)
    scorer = compile_scorer(pipeline, schema, example)
    assert scorer.method == "pipeline"
    assert scorer.detail == "not compiled: differs from predict_proba by 1.00e-06"
    frame = held_out(schema)
    np.testing.assert_allclose(scorer(rows_of(frame)), pipeline.predict_proba(frame)[:, 1])


def test_a_difference_in_single_row_scoring_alone_is_caught(monkeypatch):
    """The check scores probes one at a time as well as in a batch (the request path)."""
    pipeline, schema, example = build("random_forest", "mixed")
    original = inference._compile_estimator

    def wrong_for_single_rows(estimator):
        predict, label = original(estimator)
        return (lambda X: predict(X) + (0.01 if len(X) == 1 else 0.0)), label

    monkeypatch.setattr(inference, "_compile_estimator", wrong_for_single_rows)
    scorer = compile_scorer(pipeline, schema, example)
    assert scorer.method == "pipeline"
    assert "differs from predict_proba by 1.00e-02" in scorer.detail


def test_pipeline_scorer_scores_the_positive_class():
    pipeline, schema, _ = build("random_forest", "mixed")
    scorer = pipeline_scorer(pipeline, schema, "why")
    assert (scorer.method, scorer.detail) == ("pipeline", "why")
    frame = held_out(schema)
    np.testing.assert_array_equal(scorer(rows_of(frame)), pipeline.predict_proba(frame)[:, 1])


# --- probe rows ------------------------------------------------------------------------


def test_probe_rows_respect_bounds_and_include_unseen_levels():
    _, _, schema = training("mixed")
    schema = schema.model_copy(
        update={
            "features": [
                schema.features[0].model_copy(update={"maximum": 50.0}),
                *schema.features[1:],
            ]
        }
    )
    rows = probe_rows(schema, None, 500)
    assert len(rows) == 500
    assert all(len(row) == 3 for row in rows)
    amounts = np.array([row[0] for row in rows])
    assert amounts.min() >= 0.0
    assert amounts.max() <= 50.0
    assert len(set(amounts.tolist())) > 100
    channels = {row[2] for row in rows}
    assert "__unseen__" in channels
    assert schema.example["channel"] in channels
    assert probe_rows(schema, None, 500) == rows  # seeded


def test_probe_rows_prefer_the_example_rows():
    _, _, schema = training("mixed")
    example = pd.DataFrame({"amount": [1e6], "score": [0.0], "channel": ["store"]})
    rows = probe_rows(schema, example, 200)
    assert {row[2] for row in rows} == {"store", "__unseen__"}
    assert np.median([row[0] for row in rows]) > 1e4


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
@pytest.mark.parametrize("kind", ["logistic_regression", "random_forest", "lightgbm"])
def test_calibrated_pipelines_compile_and_match_predict_proba(kind, method):
    """The calibrator after the compiled classifier reproduces the shipped pipeline."""
    pipeline, schema, example = build(kind, "mixed")
    X, y, _ = training("mixed")
    # Fitted on the training rows here; the pipeline fits it on out-of-fold scores.
    calibrator = fit_calibrator(method, pipeline.predict_proba(X)[:, 1], y)
    shipped = with_calibration(pipeline, calibrator)
    scorer = compile_scorer(shipped, schema, example)
    assert scorer.method == "compiled", scorer.detail
    assert type(calibrator).__name__ in scorer.detail
    frame = held_out(schema)
    expected = shipped.predict_proba(frame)[:, 1]
    assert not np.allclose(expected, pipeline.predict_proba(frame)[:, 1])
    np.testing.assert_allclose(scorer(rows_of(frame)), expected, rtol=0, atol=TOLERANCE)

"""Candidate models: grid expansion, estimator settings, pipelines and the selection."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline as ImbPipeline
from imblearn.under_sampling import RandomUnderSampler
from lightgbm import LGBMClassifier
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier
from xgboost import XGBClassifier

from fraud_detection.errors import CandidateError
from fraud_detection.io.files import load_params
from fraud_detection.modeling import (
    Candidate,
    ResamplingTarget,
    Selection,
    build_pipeline,
    candidates,
    classifier,
    inference_pipeline,
    preprocessor,
    refit_for_serving,
    sampler,
)
from fraud_detection.params import ModelSpec, SmoteParams, TrainParams, UndersampleParams
from fraud_detection.schema import Feature, FeatureSchema

SCHEMA = FeatureSchema(
    source="csv",
    features=[
        Feature(name="a", kind="numeric"),
        Feature(name="b", kind="numeric"),
        Feature(name="shop", kind="categorical"),
    ],
    target="y",
)


def train_params(models: dict[str, dict[str, Any]], **extra: Any) -> TrainParams:
    specs = {name: ModelSpec.model_validate(spec) for name, spec in models.items()}
    return TrainParams(models=specs, **extra)


def synthetic(rows: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A learnable problem with ~10% positives, a categorical column and a few NaN."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    shop = rng.choice(["web", "store", "phone"], size=rows)
    logit = 2.0 * a - 1.0 * b + (shop == "web") - 3.0
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    X = pd.DataFrame({"a": a, "b": b, "shop": shop})
    X.loc[::37, "b"] = np.nan
    return X, y


# ------------------------------------------------------------------ candidates


def test_candidates_expand_grid_times_strategies():
    params = train_params(
        {
            "logreg": {
                "kind": "logistic_regression",
                "grid": {"C": [0.1, 1.0]},
                "strategies": ["none", "class_weight", "undersample"],
            },
            "tree": {
                "kind": "decision_tree",
                "grid": {"min_samples_leaf": [1, 5], "max_depth": [2, None]},
            },
        }
    )
    found = candidates(params)
    assert len(found) == 2 * 3 + 2 * 2
    logreg = [c for c in found if c.model == "logreg"]
    assert [(c.strategy, c.settings) for c in logreg] == [
        ("none", {"C": 0.1}),
        ("none", {"C": 1.0}),
        ("class_weight", {"C": 0.1}),
        ("class_weight", {"C": 1.0}),
        ("undersample", {"C": 0.1}),
        ("undersample", {"C": 1.0}),
    ]
    tree = [c.settings for c in found if c.model == "tree"]
    assert tree == [
        {"max_depth": 2, "min_samples_leaf": 1},
        {"max_depth": 2, "min_samples_leaf": 5},
        {"max_depth": None, "min_samples_leaf": 1},
        {"max_depth": None, "min_samples_leaf": 5},
    ]
    assert all(c.kind == "decision_tree" for c in found if c.model == "tree")


def test_candidate_without_grid_has_one_point_per_strategy():
    params = train_params({"rf": {"kind": "random_forest", "strategies": ["none", "smote"]}})
    assert candidates(params) == [
        Candidate("rf", "random_forest", "none", {}),
        Candidate("rf", "random_forest", "smote", {}),
    ]


def test_candidate_family_and_label():
    candidate = Candidate("tree", "decision_tree", "smote", {"max_depth": 6, "criterion": "gini"})
    assert candidate.family == "tree/smote"
    assert candidate.label == "tree/smote [criterion=gini, max_depth=6]"
    assert Candidate("base", "dummy", "none").label == "base/none"


def test_class_weight_on_dummy_is_an_error():
    params = train_params({"base": {"kind": "dummy", "strategies": ["none", "class_weight"]}})
    with pytest.raises(CandidateError, match=r"train\.models\.base\.strategies: 'dummy' has no"):
        candidates(params)


def test_class_weight_on_mlp_is_an_error():
    params = train_params({"net": {"kind": "mlp", "strategies": ["class_weight"]}})
    with pytest.raises(CandidateError, match=r"'mlp' has no class weights"):
        candidates(params)


def test_class_weight_strategy_for_lightgbm_balances_the_classes():
    spec = ModelSpec(kind="lightgbm", strategies=["class_weight"])
    weighted = classifier(
        Candidate("m", "lightgbm", "class_weight"), spec, seed=0, positive_share=0.2
    )
    assert weighted.get_params()["class_weight"] == "balanced"


def test_repo_models_expand():
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml").train
    found = candidates(params)
    # dummy 1 + two logregs 2x4 each + tree 3x4 + forest 1x4 + xgboost 2x4 + lightgbm 1x4
    # + mlp 1x3 (no class weights).
    assert len(found) == 1 + 8 + 8 + 12 + 4 + 8 + 4 + 3
    assert len({c.family for c in found}) == 1 + 4 * 6 + 3


# ----------------------------------------------------------------- classifiers


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("dummy", DummyClassifier),
        ("logistic_regression", LogisticRegression),
        ("decision_tree", DecisionTreeClassifier),
        ("xgboost", XGBClassifier),
        ("lightgbm", LGBMClassifier),
        ("mlp", MLPClassifier),
    ],
)
def test_classifier_kinds(kind, expected):
    spec = ModelSpec(kind=kind)
    estimator = classifier(Candidate("m", kind, "none"), spec, seed=3, positive_share=0.1)
    assert type(estimator) is expected
    if kind != "dummy":
        assert estimator.get_params()["random_state"] == 3


def test_params_and_grid_settings_reach_the_estimator():
    spec = ModelSpec(kind="decision_tree", params={"min_samples_leaf": 4}, grid={"max_depth": [3]})
    candidate = candidates(TrainParams(models={"tree": spec}))[0]
    estimator = classifier(candidate, spec, seed=0, positive_share=0.1)
    assert estimator.get_params()["min_samples_leaf"] == 4
    assert estimator.get_params()["max_depth"] == 3


def test_class_weight_strategy():
    spec = ModelSpec(kind="logistic_regression", strategies=["class_weight"])
    weighted = classifier(
        Candidate("m", spec.kind, "class_weight"), spec, seed=0, positive_share=0.2
    )
    plain = classifier(Candidate("m", spec.kind, "none"), spec, seed=0, positive_share=0.2)
    assert weighted.get_params()["class_weight"] == "balanced"
    assert plain.get_params()["class_weight"] is None


def test_class_weight_strategy_for_xgboost_sets_scale_pos_weight():
    spec = ModelSpec(kind="xgboost", strategies=["class_weight"])
    weighted = classifier(
        Candidate("m", "xgboost", "class_weight"), spec, seed=0, positive_share=0.2
    )
    assert weighted.get_params()["scale_pos_weight"] == pytest.approx(4.0)


def test_explicit_class_weight_wins():
    spec = ModelSpec(kind="decision_tree", params={"class_weight": {0: 1, 1: 7}})
    weighted = classifier(
        Candidate("m", spec.kind, "class_weight"), spec, seed=0, positive_share=0.2
    )
    assert weighted.get_params()["class_weight"] == {0: 1, 1: 7}


@pytest.mark.parametrize(
    ("kind", "params", "grid"),
    [
        ("logistic_regression", {"Cc": 1.0}, {}),
        ("decision_tree", {}, {"max_dept": [2]}),
        ("random_forest", {"n_estimator": 10}, {}),
    ],
)
def test_unknown_estimator_param_names_the_model(kind, params, grid):
    typo = next(iter({**params, **grid}))
    train = TrainParams(models={"my_model": ModelSpec(kind=kind, params=params, grid=grid)})
    with pytest.raises(CandidateError) as caught:
        build_pipeline(candidates(train)[0], train, SCHEMA, positive_share=0.1)
    message = str(caught.value)
    assert message.startswith("train.models.my_model: ")
    assert f"'{typo}' is not a parameter of" in message
    assert "did you mean" in message


def test_unknown_xgboost_param_names_the_model():
    train = TrainParams(models={"boost": ModelSpec(kind="xgboost", grid={"max_dept": [3]})})
    with pytest.raises(CandidateError, match=r"train\.models\.boost: 'max_dept'.*max_depth"):
        build_pipeline(candidates(train)[0], train, SCHEMA, positive_share=0.1)


# ------------------------------------------------------------------- pipelines


@pytest.mark.parametrize(
    ("positives", "negatives", "ratio", "oversample", "expected"),
    [
        (10, 990, 0.1, True, {1: 99}),  # grow the frauds to 10% of the genuine rows
        (10, 990, 0.1, False, {0: 100}),  # or shrink the genuine rows to 10 / 0.1
        (200, 800, 0.1, True, {1: 200}),  # already more balanced: left as it is
        (200, 800, 0.1, False, {0: 800}),
        (900, 100, 0.5, True, {0: 450}),  # the minority is whichever class is rarer
    ],
)
def test_resampling_target_works_on_each_folds_labels(
    positives, negatives, ratio, oversample, expected
):
    y = np.array([1] * positives + [0] * negatives)
    assert ResamplingTarget(ratio, oversample)(y) == expected


def test_resampling_a_fold_more_balanced_than_asked_does_not_fail():
    """A fixed float ratio below the data's own makes imbalanced-learn raise."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = (rng.random(400) < 0.3).astype(int)  # 30% minority, ratio 0.43 > the 0.1 asked
    params = train_params(
        {"m": {"kind": "dummy"}},
        smote=SmoteParams(sampling_strategy=0.1),
        undersample=UndersampleParams(sampling_strategy=0.1),
    )
    for strategy in ("smote", "undersample"):
        _, resampled_y = sampler(strategy, params).fit_resample(X, y)
        np.testing.assert_array_equal(np.bincount(resampled_y), np.bincount(y))


def test_samplers_follow_the_strategy():
    params = train_params(
        {"m": {"kind": "dummy"}},
        seed=11,
        undersample=UndersampleParams(sampling_strategy=0.4),
        smote=SmoteParams(sampling_strategy=0.3, k_neighbors=2),
    )
    under = sampler("undersample", params)
    assert isinstance(under, RandomUnderSampler)
    assert under.get_params()["sampling_strategy"] == ResamplingTarget(0.4, oversample=False)
    assert under.get_params()["random_state"] == 11
    smote = sampler("smote", params)
    assert isinstance(smote, SMOTE)
    assert smote.get_params()["k_neighbors"] == 2
    assert smote.get_params()["sampling_strategy"] == ResamplingTarget(0.3, oversample=True)
    assert sampler("none", params) is None
    assert sampler("class_weight", params) is None


@pytest.mark.parametrize(
    ("strategy", "steps"),
    [
        ("none", ["preprocess", "model"]),
        ("class_weight", ["preprocess", "model"]),
        ("undersample", ["preprocess", "resample", "model"]),
        ("smote", ["preprocess", "resample", "model"]),
    ],
)
def test_pipeline_steps(strategy, steps):
    params = train_params({"m": {"kind": "logistic_regression", "strategies": [strategy]}})
    pipeline = build_pipeline(candidates(params)[0], params, SCHEMA, positive_share=0.1)
    assert isinstance(pipeline, ImbPipeline)
    assert [name for name, _ in pipeline.steps] == steps


def test_preprocessor_imputes_scales_and_encodes():
    X, _ = synthetic()
    transformer = preprocessor(SCHEMA).fit(X)
    out = transformer.transform(X)
    names = list(transformer.get_feature_names_out())
    assert names == ["a", "b", "shop_phone", "shop_store", "shop_web"]
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out[:, 0].mean(), 0, atol=1e-9)
    np.testing.assert_allclose(out[:, 0].std(), 1, atol=1e-9)
    # An unseen category encodes as all zeros rather than failing.
    unseen = transformer.transform(pd.DataFrame({"a": [0.0], "b": [np.nan], "shop": ["atm"]}))
    assert unseen[0, 2:].tolist() == [0.0, 0.0, 0.0]


def test_numeric_only_schema_has_no_categorical_branch():
    schema = FeatureSchema(source="csv", features=[Feature(name="a", kind="numeric")], target="y")
    assert [name for name, _, _ in preprocessor(schema).transformers] == ["numeric"]


def test_inference_pipeline_drops_the_sampler_and_predicts_the_same():
    X, y = synthetic()
    params = train_params(
        {"m": {"kind": "logistic_regression", "strategies": ["undersample"]}},
        undersample=UndersampleParams(sampling_strategy=0.5),
    )
    fitted = build_pipeline(candidates(params)[0], params, SCHEMA, positive_share=float(y.mean()))
    fitted.fit(X, y)
    shipped = inference_pipeline(fitted)
    assert type(shipped) is Pipeline
    assert [name for name, _ in shipped.steps] == ["preprocess", "model"]
    assert shipped.named_steps["model"] is fitted.named_steps["model"]
    np.testing.assert_allclose(shipped.predict_proba(X), fitted.predict_proba(X))


@pytest.mark.parametrize("kind", ["random_forest", "xgboost", "lightgbm", "mlp", "dummy"])
def test_refit_for_serving_ships_a_single_threaded_model(kind):
    X, y = synthetic()
    params = train_params({"m": {"kind": kind, "strategies": ["smote"]}})
    candidate = candidates(params)[0]
    shipped = refit_for_serving(
        build_pipeline(candidate, params, SCHEMA, positive_share=float(y.mean())), X, y
    )
    assert [name for name, _ in shipped.steps] == ["preprocess", "model"]
    model_params = shipped.named_steps["model"].get_params()
    assert model_params.get("n_jobs", 1) == 1
    # Threads change the speed of the fit, not its result.
    reference = build_pipeline(candidate, params, SCHEMA, positive_share=float(y.mean())).fit(X, y)
    np.testing.assert_allclose(shipped.predict_proba(X), reference.predict_proba(X))


def test_refit_for_serving_leaves_logistic_regression_threads_alone():
    # Its n_jobs is deprecated: setting it warns now and fails in scikit-learn 1.10.
    X, y = synthetic()
    params = train_params({"m": {"kind": "logistic_regression", "strategies": ["none"]}})
    pipeline = build_pipeline(candidates(params)[0], params, SCHEMA, positive_share=float(y.mean()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        shipped = refit_for_serving(pipeline, X, y)
    assert shipped.named_steps["model"].get_params()["n_jobs"] is None


# ------------------------------------------------------------------- selection


@pytest.fixture
def selection() -> Selection:
    params = train_params(
        {
            "forest": {
                "kind": "random_forest",
                "params": {"n_estimators": 15, "min_samples_leaf": 2},
                "grid": {"max_depth": [4, None]},
                "strategies": ["smote"],
            }
        },
        seed=9,
        smote=SmoteParams(sampling_strategy=0.5, k_neighbors=3),
    )
    winner = candidates(params)[1]
    return Selection.of(
        winner,
        params,
        positive_share=0.08,
        cv_average_precision=0.61,
        decision="forest/smote [max_depth=None] has the best CV AP",
        tied=["forest/smote"],
        calibration_method="sigmoid",
    )


def test_selection_round_trips_through_json(selection):
    again = Selection.model_validate_json(selection.model_dump_json())
    assert again == selection
    assert again.fingerprint == selection.fingerprint

    assert again.settings == {"max_depth": None}
    assert again.candidate == Candidate("forest", "random_forest", "smote", {"max_depth": None})
    assert again.label == "forest/smote [max_depth=None]"
    assert again.model_spec.params == {"n_estimators": 15, "min_samples_leaf": 2}


def test_selection_holds_no_tracking_state_and_its_fingerprint_follows_its_content(selection):
    """Run ids and experiment ids live in the MLflow store, found by the fingerprint."""
    fields = set(Selection.model_fields)
    assert not {"experiment_id", "parent_run_id", "run_id"} & fields
    assert len(selection.fingerprint) == 16
    other = selection.model_copy(update={"cv_average_precision": 0.62})
    assert other.fingerprint != selection.fingerprint


def test_unfitted_pipeline_rebuilds_the_same_estimator(selection):
    params = TrainParams(
        models={"forest": selection.model_spec},
        seed=selection.seed,
        smote=selection.smote,
        undersample=selection.undersample,
    )
    original = build_pipeline(selection.candidate, params, SCHEMA, positive_share=0.08)
    rebuilt = Selection.model_validate_json(selection.model_dump_json()).unfitted_pipeline(SCHEMA)
    assert [name for name, _ in rebuilt.steps] == ["preprocess", "resample", "model"]
    for step in ("resample", "model"):
        assert rebuilt.named_steps[step].get_params() == original.named_steps[step].get_params()
    model_params = rebuilt.named_steps["model"].get_params()
    assert model_params["n_estimators"] == 15
    assert model_params["max_depth"] is None
    assert model_params["random_state"] == 9
    assert rebuilt.named_steps["resample"].get_params()["k_neighbors"] == 3
    # Same estimator, same data: same predictions.
    X, y = synthetic()
    np.testing.assert_allclose(
        rebuilt.fit(X, y).predict_proba(X), original.fit(X, y).predict_proba(X)
    )

"""Cross-validation: folds, resampling confined to training folds, results and leaderboard."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from imblearn.under_sampling import RandomUnderSampler
from joblib import parallel_config
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from fraud_detection.errors import DataValidationError
from fraud_detection.modeling import Candidate, build_pipeline, candidates, inference_pipeline
from fraud_detection.params import CrossValidationParams, ModelSpec, TrainParams, UndersampleParams
from fraud_detection.schema import Feature, FeatureSchema
from fraud_detection.validation import (
    CandidateResult,
    FoldResult,
    all_folds,
    all_grid_points,
    cross_validate,
    leaderboard,
    leaderboard_markdown,
    make_folds,
    scheme_for,
)

SCHEMA = FeatureSchema(
    source="csv",
    features=[Feature(name="a", kind="numeric"), Feature(name="b", kind="numeric")],
    target="y",
)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    """600 rows, ~10% positives, learnable from ``a`` and ``b``."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=600), rng.normal(size=600)
    y = (rng.uniform(size=600) < 1 / (1 + np.exp(-(2.5 * a - b - 3.0)))).astype(np.int64)
    return pd.DataFrame({"a": a, "b": b}), y


# ------------------------------------------------------------------------ folds


def test_scheme_for():
    auto = CrossValidationParams(scheme="auto")
    assert scheme_for(auto, has_time=True) == "time"
    assert scheme_for(auto, has_time=False) == "stratified"
    assert scheme_for(CrossValidationParams(scheme="stratified"), has_time=True) == "stratified"
    assert scheme_for(CrossValidationParams(scheme="time"), has_time=False) == "time"


@pytest.mark.parametrize("gap", [0, 5])
def test_time_folds_train_on_the_past(data, gap):
    _, y = data
    folds = make_folds(y, CrossValidationParams(n_splits=4, gap=gap), has_time=True, seed=0)
    assert len(folds) == 4
    for train, validation in folds:
        assert train.max() < validation.min()
        assert validation.min() - train.max() - 1 == gap
        assert np.array_equal(validation, np.arange(validation[0], validation[-1] + 1))
        assert 0 < y[validation].sum() < len(validation)
    # Validation blocks follow each other to the last row.
    assert folds[-1][1][-1] == len(y) - 1
    starts = [validation[0] for _, validation in folds]
    assert starts == sorted(starts)


def test_stratified_folds_partition_the_rows(data):
    _, y = data
    folds = make_folds(y, CrossValidationParams(n_splits=4), has_time=False, seed=0)
    validation_rows = np.concatenate([validation for _, validation in folds])
    assert sorted(validation_rows.tolist()) == list(range(len(y)))
    total = int(y.sum())
    for train, validation in folds:
        assert not set(train) & set(validation)
        assert len(train) + len(validation) == len(y)
        # Stratified: each fold holds about a quarter of the positives.
        assert abs(int(y[validation].sum()) - total / 4) <= 1
    other = make_folds(y, CrossValidationParams(n_splits=4), has_time=False, seed=1)
    assert not np.array_equal(folds[0][1], other[0][1])


def test_too_few_positives_for_the_folds():
    y = np.zeros(100, dtype=np.int64)
    y[[10, 50, 90]] = 1
    with pytest.raises(
        DataValidationError,
        match=r"3 positive row\(s\) \(target 1\), fewer than train\.cv\.n_splits=4",
    ):
        make_folds(y, CrossValidationParams(n_splits=4), has_time=False, seed=0)


def test_time_fold_without_fraud_is_reported():
    y = np.zeros(100, dtype=np.int64)
    y[80:90] = 1  # every fraud at the end: the first validation blocks have none
    with pytest.raises(
        DataValidationError, match=r"time fold 0 has 0 positive row\(s\) in its 20 validation rows"
    ):
        make_folds(y, CrossValidationParams(n_splits=4), has_time=True, seed=0)


def test_too_few_training_positives_for_smote():
    y = np.zeros(100, dtype=np.int64)
    # Time folds of 20 rows: fold 0 trains on rows 0-19 (one fraud) and validates on 20-39.
    y[[5, 25, 45, 65, 85]] = 1
    params = CrossValidationParams(n_splits=4)
    assert len(make_folds(y, params, has_time=True, seed=0, min_train_positives=1)) == 4
    with pytest.raises(
        DataValidationError, match=r"time fold 0 trains on 1 positive row\(s\); at least 2"
    ):
        make_folds(y, params, has_time=True, seed=0, min_train_positives=2)


# --------------------------------------------- resampling inside training folds only

EVENTS: list[tuple[str, int, int]] = []


class SpyUnderSampler(RandomUnderSampler):  # type: ignore[misc]
    """Records how many rows it was given and how many it returned."""

    def fit_resample(self, X: Any, y: Any, **params: Any) -> Any:
        X_out, y_out = super().fit_resample(X, y, **params)
        EVENTS.append(("resample", len(X), len(X_out)))
        return X_out, y_out


class SpyClassifier(LogisticRegression):  # type: ignore[misc]
    """Records the size of every fit and prediction."""

    def fit(self, X: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        EVENTS.append(("fit", len(X), int(np.sum(y))))
        return super().fit(X, y, *args, **kwargs)

    def predict_proba(self, X: Any) -> Any:
        EVENTS.append(("predict", len(X), 0))
        return super().predict_proba(X)


@pytest.fixture
def spied_pipeline(data):
    _, y = data
    params = TrainParams(
        models={"m": ModelSpec(kind="logistic_regression", strategies=["undersample"])},
        undersample=UndersampleParams(sampling_strategy=0.5),
    )
    candidate = candidates(params)[0]
    pipeline = build_pipeline(candidate, params, SCHEMA, positive_share=float(y.mean()))
    pipeline.set_params(
        resample=SpyUnderSampler(sampling_strategy=0.5, random_state=0), model=SpyClassifier()
    )
    EVENTS.clear()
    return candidate, pipeline


@pytest.mark.parametrize("has_time", [True, False])
def test_resampling_happens_only_inside_training_folds(data, spied_pipeline, has_time):
    X, y = data
    candidate, pipeline = spied_pipeline
    folds = make_folds(y, CrossValidationParams(n_splits=3), has_time=has_time, seed=0)
    [result] = cross_validate([candidate], lambda _: pipeline, X, y, folds, threshold=0.5, n_jobs=1)
    resamples = [e for e in EVENTS if e[0] == "resample"]
    fits = [e for e in EVENTS if e[0] == "fit"]
    predictions = sorted(e[1] for e in EVENTS if e[0] == "predict")
    train_sizes = sorted(len(train) for train, _ in folds)
    validation_sizes = [len(validation) for _, validation in folds]

    # The sampler saw exactly the training folds, and shrank them (0.5: 2 genuine per fraud).
    assert sorted(n_in for _, n_in, _ in resamples) == train_sizes
    for (_, n_in, n_out), (_, n_fit, positives) in zip(resamples, fits, strict=True):
        assert n_out < n_in
        assert n_fit == n_out == 3 * positives
    # Predictions were made on untouched rows: every validation fold (and every training
    # fold, for the training AP), never on a resampled set.
    assert predictions == sorted(validation_sizes + train_sizes)
    for fold in result.folds:
        assert len(fold.proba) == len(folds[fold.fold][1])
        np.testing.assert_array_equal(fold.validation_rows, folds[fold.fold][1])


def test_validation_predictions_come_from_the_shipped_pipeline(data, spied_pipeline):
    """Fold scores equal a model fitted on the training fold, without its sampler,
    predicting the whole validation fold."""
    X, y = data
    candidate, pipeline = spied_pipeline
    folds = make_folds(y, CrossValidationParams(n_splits=3), has_time=True, seed=0)
    [result] = cross_validate([candidate], lambda _: pipeline, X, y, folds, threshold=0.5, n_jobs=1)
    for fold in result.folds:
        train, validation = folds[fold.fold]
        fitted = clone(pipeline).fit(X.iloc[train], y[train])
        shipped = inference_pipeline(fitted)
        assert "resample" not in shipped.named_steps
        expected = shipped.predict_proba(X.iloc[validation])[:, 1]
        np.testing.assert_allclose(fold.proba, expected)
        assert fold.metrics["average_precision"] == pytest.approx(
            average_precision_score(y[validation], expected)
        )


# --------------------------------------------------------------- cross_validate


GRID_MODELS = {
    "base": ModelSpec(kind="dummy"),
    "logreg": ModelSpec(
        kind="logistic_regression", grid={"C": [0.001, 1.0]}, strategies=["none", "undersample"]
    ),
    "tree": ModelSpec(kind="decision_tree", grid={"max_depth": [1, 3]}),
}


@pytest.fixture(scope="module")
def grid_results(data) -> tuple[list[Candidate], list[CandidateResult], list[Any]]:
    X, y = data
    params = TrainParams(models=GRID_MODELS, undersample=UndersampleParams(sampling_strategy=0.5))
    to_try = candidates(params)
    folds = make_folds(y, params.cv, has_time=False, seed=0)
    results = cross_validate(
        to_try,
        lambda c: build_pipeline(c, params, SCHEMA, positive_share=float(y.mean())),
        X,
        y,
        folds,
        threshold=0.5,
        n_jobs=1,
    )
    return to_try, results, folds


def test_results_keep_the_candidates_order(grid_results):
    to_try, results, folds = grid_results
    assert [r.candidate for r in results] == to_try
    for result in results:
        assert sorted(f.fold for f in result.folds) == list(range(len(folds)))
        assert set(result.folds[0].metrics) == {
            "average_precision",
            "roc_auc",
            "brier",
            "log_loss",
            "ece",
            "f1",
            "precision",
            "recall",
            "train_average_precision",
        }


def test_dummy_scores_the_prevalence_and_logreg_beats_it(grid_results, data):
    _, y = data
    _, results, folds = grid_results
    by_label = {r.candidate.label: r for r in results}
    dummy = by_label["base/none"]
    for fold in dummy.folds:
        validation = folds[fold.fold][1]
        assert fold.metrics["average_precision"] == pytest.approx(y[validation].mean())
        assert fold.metrics["roc_auc"] == 0.5
    assert by_label["logreg/none [C=1.0]"].mean_average_precision > 0.5


def test_out_of_fold_rows_match_the_validation_rows(grid_results, data):
    _, y = data
    _, results, folds = grid_results
    result = results[1]
    oof = result.out_of_fold(len(y))
    assert oof["row"].tolist() == list(range(len(y)))  # stratified folds cover every row
    for fold in result.folds:
        part = oof[oof["fold"] == fold.fold]
        assert part["row"].tolist() == sorted(folds[fold.fold][1].tolist())
        by_row = dict(zip(fold.validation_rows.tolist(), fold.proba, strict=True))
        np.testing.assert_allclose(part["proba"], [by_row[r] for r in part["row"]])


def test_out_of_fold_skips_rows_never_validated(data):
    X, y = data
    spec = ModelSpec(kind="logistic_regression")
    params = TrainParams(models={"m": spec})
    folds = make_folds(y, CrossValidationParams(n_splits=3), has_time=True, seed=0)
    [result] = cross_validate(
        candidates(params),
        lambda c: build_pipeline(c, params, SCHEMA, positive_share=0.1),
        X,
        y,
        folds,
        threshold=0.5,
        n_jobs=1,
    )
    oof = result.out_of_fold(len(y))
    expected = np.concatenate([validation for _, validation in folds])
    assert oof["row"].tolist() == expected.tolist()
    assert oof["row"].min() == folds[0][1][0] > 0


def test_on_fit_reports_every_fit(data):
    X, y = data
    params = TrainParams(
        models={"m": ModelSpec(kind="dummy"), "t": ModelSpec(kind="decision_tree")}
    )
    folds = make_folds(y, CrossValidationParams(n_splits=3), has_time=False, seed=0)
    calls: list[tuple[int, int, str]] = []
    cross_validate(
        candidates(params),
        lambda c: build_pipeline(c, params, SCHEMA, positive_share=0.1),
        X,
        y,
        folds,
        threshold=0.5,
        n_jobs=1,
        on_fit=lambda done, total, result, candidate: calls.append((done, total, candidate.model)),
    )
    assert [(done, total) for done, total, _ in calls] == [(i, 6) for i in range(1, 7)]
    assert sorted(model for _, _, model in calls) == ["m"] * 3 + ["t"] * 3


def rerun(
    data: tuple[pd.DataFrame, np.ndarray],
    to_try: list[Candidate],
    folds: list[Any],
    n_jobs: int,
) -> list[CandidateResult]:
    X, y = data
    params = TrainParams(models=GRID_MODELS, undersample=UndersampleParams(sampling_strategy=0.5))
    return cross_validate(
        to_try,
        lambda c: build_pipeline(c, params, SCHEMA, positive_share=float(y.mean())),
        X,
        y,
        folds,
        threshold=0.5,
        n_jobs=n_jobs,
    )


def assert_same_results(one: list[CandidateResult], other: list[CandidateResult]) -> None:
    for a, b in zip(one, other, strict=True):
        assert a.candidate == b.candidate
        a_folds = sorted(a.folds, key=lambda f: f.fold)
        b_folds = sorted(b.folds, key=lambda f: f.fold)
        for fa, fb in zip(a_folds, b_folds, strict=True):
            np.testing.assert_array_equal(fa.validation_rows, fb.validation_rows)
            np.testing.assert_allclose(fa.proba, fb.proba)


def test_fits_finishing_out_of_order_are_reassembled(grid_results, data):
    """Threads finish in any order; each result still lands with its candidate and fold."""
    to_try, sequential, folds = grid_results
    with parallel_config(backend="threading"):
        threaded = rerun(data, to_try, folds, n_jobs=4)
    assert_same_results(sequential, threaded)


@pytest.mark.slow
def test_process_pool_gives_the_same_results(grid_results, data):
    to_try, sequential, folds = grid_results
    assert_same_results(sequential, rerun(data, to_try, folds, n_jobs=2))


# ------------------------------------------------------------------ leaderboard


def fake_result(candidate: Candidate, aps: list[float]) -> CandidateResult:
    folds = [
        FoldResult(
            candidate=0,
            fold=i,
            metrics={"average_precision": ap, "roc_auc": 0.5 + ap / 2},
            fit_seconds=1.0,
            validation_rows=np.array([i], dtype=np.int64),
            proba=np.array([ap]),
        )
        for i, ap in enumerate(aps)
    ]
    return CandidateResult(candidate, folds)


def test_summary_means_and_population_std():
    result = fake_result(Candidate("m", "dummy", "none"), [0.2, 0.4, 0.9])
    summary = result.summary()
    assert summary["average_precision_mean"] == pytest.approx(0.5)
    assert summary["average_precision_std"] == pytest.approx(np.std([0.2, 0.4, 0.9]))
    assert summary["fit_seconds_mean"] == 1.0
    assert summary["fit_seconds_std"] == 0.0
    assert result.mean_average_precision == pytest.approx(0.5)
    assert result.table()["fold"].tolist() == [0, 1, 2]


def test_leaderboard_keeps_the_best_grid_point_per_family_ranked_by_ap():
    results = [
        fake_result(Candidate("tree", "decision_tree", "none", {"max_depth": 2}), [0.30, 0.34]),
        fake_result(Candidate("tree", "decision_tree", "none", {"max_depth": 6}), [0.50, 0.54]),
        fake_result(Candidate("tree", "decision_tree", "smote", {"max_depth": 2}), [0.40, 0.40]),
        fake_result(Candidate("tree", "decision_tree", "smote", {"max_depth": 6}), [0.10, 0.20]),
        fake_result(Candidate("logreg", "logistic_regression", "none", {"C": 1.0}), [0.60, 0.70]),
        fake_result(Candidate("base", "dummy", "none"), [0.02, 0.02]),
    ]
    table = leaderboard(results)
    assert table["rank"].tolist() == [1, 2, 3, 4]
    assert list(zip(table["model"], table["strategy"], table["settings"], strict=True)) == [
        ("logreg", "none", "C=1.0"),
        ("tree", "none", "max_depth=6"),
        ("tree", "smote", "max_depth=2"),
        ("base", "none", "defaults"),
    ]
    assert table["average_precision_mean"].tolist() == pytest.approx([0.65, 0.52, 0.40, 0.02])
    assert table["average_precision_mean"].is_monotonic_decreasing
    assert "roc_auc_std" in table.columns


def test_leaderboard_from_a_real_comparison(grid_results):
    _, results, _ = grid_results
    table = leaderboard(results)
    families = {r.candidate.family for r in results}
    assert len(table) == len(families) == 4
    assert set(table["model"] + "/" + table["strategy"]) == families
    assert table["average_precision_mean"].is_monotonic_decreasing
    best = max(results, key=lambda r: r.mean_average_precision)
    assert table.loc[0, "average_precision_mean"] == pytest.approx(best.mean_average_precision)
    assert table.loc[0, "model"] == best.candidate.model
    assert table.loc[len(table) - 1, "model"] == "base"


def test_all_grid_points_has_one_row_per_candidate(grid_results):
    to_try, results, _ = grid_results
    table = all_grid_points(results)
    assert len(table) == len(to_try) == 7
    assert table["settings"].tolist()[:3] == ["defaults", "C=0.001", "C=1.0"]


def test_all_folds_has_one_row_per_candidate_and_fold(grid_results):
    to_try, results, folds = grid_results
    table = all_folds(results)
    assert len(table) == len(to_try) * len(folds)
    assert list(table.columns[:4]) == ["model", "strategy", "settings", "fold"]
    # The per-fold rows average to the summary's means.
    means = table.groupby(["model", "strategy", "settings"])["average_precision"].mean()
    summary = all_grid_points(results).set_index(["model", "strategy", "settings"])
    np.testing.assert_allclose(
        means.sort_index(), summary["average_precision_mean"].sort_index(), rtol=1e-12
    )


def test_leaderboard_markdown_shows_mean_and_spread(grid_results):
    _, results, _ = grid_results
    table = leaderboard(results)
    markdown = leaderboard_markdown(table)
    first = table.iloc[0]
    expected = f"{first['average_precision_mean']:.3f} ± {first['average_precision_std']:.3f}"
    assert expected in markdown
    assert markdown.count("\n|") == len(table) + 2  # header, rule, one line per family

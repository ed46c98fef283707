"""Reference data for the drift monitor: held-out scores, the reference table, its info."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from fraud_detection.reference import (
    DECISION_COLUMN,
    MAX_FOLDS,
    SCORE_COLUMN,
    ReferenceInfo,
    held_out_scores,
    reference_info,
    reference_table,
)
from fraud_detection.schema import FeatureSchema, numeric_feature

START = pd.Timestamp("2018-04-01")

TIMED_SCHEMA = FeatureSchema(
    source="simulator",
    features=[
        numeric_feature("x1", "A signal"),
        numeric_feature("x2", "Noise"),
        numeric_feature("day_index", "Days since the start (reveals the training days)"),
    ],
    target="fraud",
    time_column="when",
    group_column="card",
)
UNTIMED_SCHEMA = FeatureSchema(
    source="csv",
    features=[numeric_feature("x1", "A signal"), numeric_feature("x2", "Noise")],
    target="fraud",
)


def timed_frame(n_days: int, seed: int = 0) -> pd.DataFrame:
    """Day d has 30 + 3d rows, among them one at midnight and one a second before the next
    midnight (so days are calendar days, not 24 hours from the first row); rows shuffled."""
    rng = np.random.default_rng(seed)
    parts = []
    for day in range(n_days):
        rows = 30 + 3 * day
        seconds = rng.integers(1, 86_399, size=rows)
        seconds[0], seconds[1] = 0, 86_399
        x1 = rng.normal(size=rows)
        fraud = (rng.uniform(size=rows) < 1 / (1 + np.exp(-(2.5 * x1 - 1.5)))).astype(np.int8)
        fraud[:2] = [0, 1]  # every day has both classes
        parts.append(
            pd.DataFrame(
                {
                    "when": START + pd.Timedelta(days=day) + pd.to_timedelta(seconds, unit="s"),
                    "card": rng.integers(0, 50, size=rows),
                    "x1": x1,
                    "x2": rng.normal(size=rows),
                    "day_index": float(day),
                    "fraud": fraud,
                    "noise_column": "not a feature",
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def untimed_frame(rows: int = 100, positives: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    fraud = np.zeros(rows, dtype=np.int64)
    fraud[rng.choice(rows, size=positives, replace=False)] = 1
    return pd.DataFrame(
        {
            "x2": rng.normal(size=rows),
            "x1": rng.normal(size=rows) + 1.5 * fraud,
            "fraud": fraud,
        }
    )


def logistic() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression())


class TrainingDays(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Scores every row with a code of the days it was trained on: the sum of 2**day over
    the training days, over 2**16 (exact in float64, and inside [0, 1))."""

    def fit(self, X: pd.DataFrame, y: Any) -> TrainingDays:
        self.days_ = sorted({int(day) for day in X["day_index"]})
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> NDArray[np.float64]:
        code = sum(2**day for day in self.days_) / 2**16
        return np.column_stack([np.full(len(X), 1 - code), np.full(len(X), code)])

    def predict(self, X: pd.DataFrame) -> NDArray[np.int64]:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


def decode(score: float) -> set[int]:
    code = round(score * 2**16)
    assert code == score * 2**16
    return {day for day in range(16) if code >> day & 1}


def folds_of(scores: NDArray[np.float64], frame: pd.DataFrame) -> dict[float, set[int]]:
    """The held-out days of each fold (one fold per distinct score)."""
    days = frame["day_index"].astype(int).to_numpy()
    return {float(score): set(days[scores == score].tolist()) for score in np.unique(scores)}


# ---------------------------------------------------------------- held-out scores


def test_each_day_is_scored_by_a_model_fitted_on_the_other_days() -> None:
    frame = timed_frame(5)
    scores = held_out_scores(TrainingDays(), frame, TIMED_SCHEMA, seed=0, n_jobs=1)
    every_day = set(range(5))
    folds = folds_of(scores, frame)
    assert len(folds) == 5
    for score, held_out in folds.items():
        assert len(held_out) == 1
        assert decode(score) == every_day - held_out


def test_held_out_scores_equal_a_refit_without_the_day() -> None:
    frame = timed_frame(5)
    pipeline = logistic()
    scores = held_out_scores(pipeline, frame, TIMED_SCHEMA, seed=0, n_jobs=1)
    names = TIMED_SCHEMA.names
    y = frame["fraud"].to_numpy()
    assert scores.shape == (len(frame),)
    assert scores.dtype == np.float64
    for day in range(5):
        held_out = (frame["day_index"] == day).to_numpy()
        model = clone(pipeline).fit(frame.loc[~held_out, names], y[~held_out])
        expected = model.predict_proba(frame.loc[held_out, names])[:, 1]
        np.testing.assert_allclose(scores[held_out], expected, rtol=1e-9, atol=1e-12)
    # In-sample scores differ: the held-out ones are not a model's view of its own rows.
    in_sample = clone(pipeline).fit(frame[names], y).predict_proba(frame[names])[:, 1]
    assert np.abs(scores - in_sample).max() > 1e-3
    # The passed pipeline itself is left unfitted (cross_val_predict clones it).
    assert not hasattr(pipeline[-1], "coef_")


def test_more_than_seven_days_make_seven_folds_of_whole_days() -> None:
    frame = timed_frame(10)
    scores = held_out_scores(TrainingDays(), frame, TIMED_SCHEMA, seed=0, n_jobs=1)
    folds = folds_of(scores, frame)
    assert len(folds) == MAX_FOLDS == 7
    held_out_days = [day for days in folds.values() for day in days]
    # Every day is in exactly one fold, never split across folds, never trained on.
    assert sorted(held_out_days) == list(range(10))
    for score, held_out in folds.items():
        assert decode(score) == set(range(10)) - held_out
    assert sorted(len(days) for days in folds.values()) == [1, 1, 1, 1, 2, 2, 2]


def test_days_are_calendar_days() -> None:
    # One row at 23:59:59 and the next at 00:00:00 fall in different folds.
    frame = timed_frame(3)
    scores = held_out_scores(TrainingDays(), frame, TIMED_SCHEMA, seed=0, n_jobs=1)
    day_of_time = (pd.DatetimeIndex(frame["when"]).normalize() - START).days
    np.testing.assert_array_equal(day_of_time, frame["day_index"].astype(int))
    for score, held_out in folds_of(scores, frame).items():
        assert decode(score) == {0, 1, 2} - held_out


def test_untimed_folds_are_stratified() -> None:
    # 100 rows, 20 positives, 5 folds: every training set holds exactly 16 of 80 positives,
    # so the prior of every fold's model is 0.2 (unstratified folds would vary).
    frame = untimed_frame(rows=100, positives=20)
    scores = held_out_scores(
        DummyClassifier(strategy="prior"), frame, UNTIMED_SCHEMA, seed=3, n_jobs=1
    )
    np.testing.assert_allclose(scores, 0.2)


def test_untimed_folds_are_the_seeded_stratified_split() -> None:
    frame = untimed_frame(rows=120, positives=30)
    names, y = UNTIMED_SCHEMA.names, frame["fraud"].to_numpy()
    scores = held_out_scores(logistic(), frame, UNTIMED_SCHEMA, seed=11, n_jobs=1)
    assert scores.shape == (120,)
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=11)
    for train, test in folds.split(frame[names], y):
        model = logistic().fit(frame.iloc[train][names], y[train])
        expected = model.predict_proba(frame.iloc[test][names])[:, 1]
        np.testing.assert_allclose(scores[test], expected, rtol=1e-9, atol=1e-12)


def test_untimed_scores_are_deterministic_for_a_seed() -> None:
    frame = untimed_frame(rows=120, positives=30)
    first = held_out_scores(logistic(), frame, UNTIMED_SCHEMA, seed=4, n_jobs=1)
    again = held_out_scores(logistic(), frame, UNTIMED_SCHEMA, seed=4, n_jobs=1)
    other = held_out_scores(logistic(), frame, UNTIMED_SCHEMA, seed=5, n_jobs=1)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    # The scores rank the rows: positives were shifted up on x1.
    positive = frame["fraud"].to_numpy() == 1
    assert first[positive].mean() > first[~positive].mean() + 0.2


# ---------------------------------------------------------------- reference table


def test_reference_table_columns_and_types() -> None:
    frame = timed_frame(3)
    frame.index = frame.index * 10 + 7  # not a range index: rows are matched by position
    scores = np.linspace(0.0, 1.0, len(frame))
    table = reference_table(frame, TIMED_SCHEMA, scores, threshold=0.5)
    assert list(table.columns) == [
        "when",
        "x1",
        "x2",
        "day_index",
        "fraud",
        SCORE_COLUMN,
        DECISION_COLUMN,
    ]
    assert SCORE_COLUMN == "probability"
    assert DECISION_COLUMN == "is_fraud"
    assert table.index.tolist() == list(range(len(frame)))
    assert table["fraud"].dtype == np.int64
    assert table[DECISION_COLUMN].dtype == np.int64
    np.testing.assert_array_equal(table["fraud"], frame["fraud"].to_numpy())
    np.testing.assert_array_equal(table["x1"], frame["x1"].to_numpy())
    np.testing.assert_array_equal(table["when"], frame["when"].to_numpy())
    np.testing.assert_array_equal(table[SCORE_COLUMN], scores)
    # The input frame is not changed.
    assert "probability" not in frame.columns


def test_reference_table_without_time_column() -> None:
    frame = untimed_frame(rows=10, positives=3)
    scores = np.full(10, 0.3)
    table = reference_table(frame, UNTIMED_SCHEMA, scores, threshold=0.5)
    assert list(table.columns) == ["x1", "x2", "fraud", SCORE_COLUMN, DECISION_COLUMN]
    assert table[DECISION_COLUMN].sum() == 0


def test_decision_is_score_at_or_above_the_threshold() -> None:
    frame = untimed_frame(rows=6, positives=2)
    threshold = 0.37
    scores = np.array([0.0, np.nextafter(threshold, 0.0), threshold, 0.3700001, 0.99, 1.0])
    table = reference_table(frame, UNTIMED_SCHEMA, scores, threshold)
    assert table[DECISION_COLUMN].tolist() == [0, 0, 1, 1, 1, 1]


# ----------------------------------------------------------------- reference info


def timed_info(**overrides: Any) -> tuple[ReferenceInfo, pd.DataFrame]:
    frame = timed_frame(4)
    table = reference_table(frame, TIMED_SCHEMA, np.full(len(frame), 0.25), threshold=0.4)
    arguments: dict[str, Any] = {
        "scored_by": "held-out days (7-fold), forest/none",
        "model_fingerprint": "abc123",
        "test_metrics": {"average_precision": 0.61, "roc_auc": 0.9},
    }
    info = reference_info(table, TIMED_SCHEMA, 0.4, **(arguments | overrides))
    return info, table


def test_reference_info_describes_the_table() -> None:
    info, table = timed_info()
    assert info.rows == len(table) == 30 + 33 + 36 + 39
    assert info.positives == int(table["fraud"].sum())
    assert isinstance(info.positives, int)
    assert 4 <= info.positives < info.rows
    # Each day has a row at midnight and one at 23:59:59.
    assert info.period_start == "2018-04-01T00:00:00"
    assert info.period_end == "2018-04-04T23:59:59"
    assert info.threshold == 0.4
    assert info.feature_schema == TIMED_SCHEMA
    assert info.scored_by == "held-out days (7-fold), forest/none"
    assert info.model_fingerprint == "abc123"
    assert info.test_metrics == {"average_precision": 0.61, "roc_auc": 0.9}


def test_reference_info_without_time_has_no_period() -> None:
    frame = untimed_frame(rows=50, positives=7)
    table = reference_table(frame, UNTIMED_SCHEMA, np.full(50, 0.1), threshold=0.5)
    info = reference_info(table, UNTIMED_SCHEMA, 0.5, scored_by="stratified", test_metrics={})
    assert (info.period_start, info.period_end) == (None, None)
    assert (info.rows, info.positives) == (50, 7)
    assert info.model_fingerprint is None


def test_reference_info_of_an_empty_table_has_no_period() -> None:
    frame = timed_frame(2).iloc[:0]
    table = reference_table(frame, TIMED_SCHEMA, np.empty(0), threshold=0.5)
    info = reference_info(table, TIMED_SCHEMA, 0.5, scored_by="nothing", test_metrics={})
    assert (info.rows, info.positives) == (0, 0)
    assert (info.period_start, info.period_end) == (None, None)


def test_reference_info_round_trips_through_json() -> None:
    info, _ = timed_info()
    dumped = info.model_dump(mode="json")
    assert ReferenceInfo.model_validate(dumped) == info
    assert ReferenceInfo.model_validate_json(info.model_dump_json()) == info
    assert dumped["feature_schema"]["time_column"] == "when"


def test_reference_info_rejects_unknown_keys_and_changes() -> None:
    info, _ = timed_info()
    dumped = info.model_dump(mode="json")
    with pytest.raises(ValidationError, match=r"row\n  Extra inputs are not permitted"):
        ReferenceInfo.model_validate(dumped | {"row": 5})
    with pytest.raises(ValidationError):
        ReferenceInfo.model_validate({k: v for k, v in dumped.items() if k != "threshold"})
    field = "rows"
    with pytest.raises(ValidationError, match="frozen"):
        setattr(info, field, 3)

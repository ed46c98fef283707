"""monitoring.report: the Evidently reports, and the gate's verdict read back from them.

Each report run takes about a second: the runs are shared by module-scoped fixtures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from evidently import BinaryClassification
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from fraud_detection.params import DriftGate, MonitorParams
from fraud_detection.reference import DECISION_COLUMN, SCORE_COLUMN
from fraud_detection.schema import Feature, FeatureSchema, numeric_feature
from monitoring import report
from tests.monitoring.conftest import SCHEMA, THRESHOLD, synthetic

ROWS = 3000
CURRENT_SEED = 8  # any seed will do; this one's sample is no closer to 0.1 than 0.04
PARAMS = MonitorParams()  # wasserstein, drift threshold 0.1, gate: 0 features, share 0.5


def verdict_of(
    current: pd.DataFrame, reference: pd.DataFrame, params: MonitorParams = PARAMS
) -> report.DriftVerdict:
    snapshot = report.run(
        report.drift_report(SCHEMA, params),
        report.dataset(current, SCHEMA, labelled=False),
        report.dataset(reference, SCHEMA, labelled=False),
    )
    return report.drift_verdict(snapshot, SCHEMA, params, len(reference))


def gate_test(verdict: report.DriftVerdict, starts: str) -> report.GateTest:
    (test,) = [test for test in verdict.tests if test.name.startswith(starts)]
    return test


COUNT, SHARE, SCORE = "Count of Drifted Columns", "Share of Drifted Columns", "Value drift for"


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return synthetic(ROWS, seed=1)


@pytest.fixture(scope="module")
def steady(reference: pd.DataFrame) -> report.DriftVerdict:
    """Another sample of the same distribution, with fewer rows than the reference."""
    return verdict_of(synthetic(ROWS, seed=CURRENT_SEED).iloc[:2500], reference)


@pytest.fixture(scope="module")
def shifted_current() -> pd.DataFrame:
    """``distance`` moved by 5 standard deviations; the score does not use it."""
    return synthetic(ROWS, seed=CURRENT_SEED, shift={"distance": 5.0})


@pytest.fixture(scope="module")
def shifted(shifted_current: pd.DataFrame, reference: pd.DataFrame) -> report.DriftVerdict:
    return verdict_of(shifted_current, reference)


@pytest.fixture(scope="module")
def score_shifted(reference: pd.DataFrame) -> report.DriftVerdict:
    """The same features, but every score 0.3 higher (a model that got nervous)."""
    current = synthetic(ROWS, seed=CURRENT_SEED)
    current[SCORE_COLUMN] = np.clip(current[SCORE_COLUMN] + 0.3, 0.0, 1.0)
    current[DECISION_COLUMN] = (current[SCORE_COLUMN] >= THRESHOLD).astype(np.int64)
    return verdict_of(current, reference)


def test_data_definition_without_labels_compares_features_score_and_decision() -> None:
    schema = FeatureSchema(
        source="csv",
        target="fraud",
        features=[
            numeric_feature("amount", "A number"),
            Feature(name="channel", kind="categorical", categories=["web", "shop"]),
            numeric_feature("hour", "Another"),
        ],
    )
    definition = report.data_definition(schema, labelled=False)
    assert definition.numerical_columns == ["amount", "hour", SCORE_COLUMN]
    assert definition.categorical_columns == ["channel", DECISION_COLUMN]
    assert definition.classification is None

    labelled = report.data_definition(schema, labelled=True)
    assert labelled.numerical_columns == ["amount", "hour", SCORE_COLUMN]
    assert labelled.categorical_columns == ["channel", DECISION_COLUMN, "fraud"]
    assert labelled.classification == [
        BinaryClassification(
            target="fraud",
            prediction_labels=DECISION_COLUMN,
            prediction_probas=SCORE_COLUMN,
            pos_label=1,
        )
    ]


def test_dataset_keeps_only_the_schema_columns_as_ints(reference: pd.DataFrame) -> None:
    frame = reference.copy()
    frame["extra"] = "x"
    frame[DECISION_COLUMN] = frame[DECISION_COLUMN].astype(np.int8)
    table = report.dataset(frame, SCHEMA, labelled=True).as_dataframe()
    assert list(table.columns) == [*SCHEMA.names, SCORE_COLUMN, DECISION_COLUMN, "fraud"]
    assert table[DECISION_COLUMN].dtype == np.int64
    unlabelled = report.dataset(frame, SCHEMA, labelled=False).as_dataframe()
    assert "fraud" not in unlabelled.columns


def test_the_same_distribution_drifts_nowhere_and_passes(steady: report.DriftVerdict) -> None:
    assert steady.rows == 2500
    assert steady.reference_rows == ROWS
    assert list(steady.feature_drift) == SCHEMA.names
    assert all(0 <= score < PARAMS.drift_threshold for score in steady.feature_drift.values())
    assert steady.drifted_features == []
    assert steady.drifted_share == 0.0
    assert 0 <= steady.score_drift < PARAMS.gate.max_score_drift
    assert len(steady.tests) == 3
    assert all(test.passed for test in steady.tests)
    assert steady.passed


def test_a_shifted_feature_is_named_and_fails_the_count_test(
    shifted: report.DriftVerdict,
) -> None:
    assert shifted.drifted_features == ["distance"]
    # Wasserstein distance in reference standard deviations: about the shift itself.
    assert shifted.feature_drift["distance"] == pytest.approx(5.0, rel=0.1)
    assert shifted.drifted_share == 0.25
    assert not gate_test(shifted, COUNT).passed
    assert gate_test(shifted, SHARE).passed  # 1 of 4 is under max_drifted_share 0.5
    assert gate_test(shifted, SCORE).passed  # the score does not read `distance`
    assert not shifted.passed


def test_the_gate_limits_come_from_the_params(
    shifted_current: pd.DataFrame, reference: pd.DataFrame
) -> None:
    params = MonitorParams(gate=DriftGate(max_drifted_features=1, max_drifted_share=0.2))
    verdict = verdict_of(shifted_current, reference, params)
    assert verdict.drifted_features == ["distance"]
    assert gate_test(verdict, COUNT).passed  # one drifted feature is now allowed
    assert not gate_test(verdict, SHARE).passed  # but 0.25 > 0.2
    assert "0.2" in gate_test(verdict, SHARE).name
    assert not verdict.passed


def test_a_shifted_score_fails_the_score_test(score_shifted: report.DriftVerdict) -> None:
    assert score_shifted.drifted_features == []
    assert score_shifted.score_drift > PARAMS.gate.max_score_drift
    score_test = gate_test(score_shifted, SCORE)
    assert not score_test.passed
    assert SCORE_COLUMN in score_test.name
    assert gate_test(score_shifted, COUNT).passed
    assert gate_test(score_shifted, SHARE).passed
    assert not score_shifted.passed


def test_quality_matches_scikit_learn_on_the_same_rows() -> None:
    frame, reference = synthetic(2000, seed=3), synthetic(2000, seed=4)
    measured = report.quality(frame, reference, SCHEMA)
    for table, values in ((frame, vars(measured)), (reference, measured.reference)):
        truth, decision = table["fraud"], table[DECISION_COLUMN]
        assert 0 < truth.sum() < len(truth)
        assert values["average_precision"] == pytest.approx(
            average_precision_score(truth, table[SCORE_COLUMN])
        )
        assert values["precision"] == pytest.approx(precision_score(truth, decision))
        assert values["recall"] == pytest.approx(recall_score(truth, decision))
        assert values["f1"] == pytest.approx(f1_score(truth, decision))
    assert measured.rows == 2000
    assert measured.positives == int(frame["fraud"].sum())
    assert set(measured.reference) == {"average_precision", "precision", "recall", "f1"}


def test_quality_has_no_average_precision_with_one_class() -> None:
    frame = synthetic(500, seed=5)
    frame["fraud"] = 0
    measured = report.quality(frame, synthetic(500, seed=6), SCHEMA)
    assert measured.average_precision is None
    assert measured.positives == 0
    assert (measured.precision, measured.recall, measured.f1) == (0.0, 0.0, 0.0)
    assert measured.reference["average_precision"] is not None

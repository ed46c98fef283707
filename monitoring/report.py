"""Evidently reports for one monitoring window, and the gate's verdict read back from them.

Everything Evidently needs is built from the feature schema that came with the model (via
the reference): the data definition, the columns compared, and the classification task.
The gate's limits are Evidently tests on the report's own metrics, so the HTML report
shows the same pass/fail the exit code reports.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from evidently import BinaryClassification, DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import (
    DriftedColumnsCount,
    F1Score,
    Precision,
    Recall,
    RocAuc,
    RowCount,
    ValueDrift,
)
from evidently.presets import DataDriftPreset, DatasetStats
from evidently.tests import lte
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from fraud_detection.params import MonitorParams
from fraud_detection.reference import DECISION_COLUMN, SCORE_COLUMN
from fraud_detection.schema import FeatureSchema


@dataclass(frozen=True)
class GateTest:
    name: str
    passed: bool
    description: str


@dataclass(frozen=True)
class DriftVerdict:
    """What the drift report found, and whether the gate passed."""

    rows: int
    reference_rows: int
    # Every feature's drift score; drifted ones are those at or above the threshold.
    feature_drift: dict[str, float]
    drifted_features: list[str]
    drifted_share: float
    score_drift: float
    tests: list[GateTest]

    @property
    def passed(self) -> bool:
        return all(test.passed for test in self.tests)


@dataclass(frozen=True)
class Quality:
    """Classification quality on the rows whose labels have arrived, at the threshold."""

    rows: int
    positives: int
    average_precision: float | None
    precision: float
    recall: float
    f1: float
    # The same measures on the reference, for comparison.
    reference: dict[str, float | None] = field(default_factory=dict)


def data_definition(schema: FeatureSchema, *, labelled: bool) -> DataDefinition:
    categorical = [*schema.categorical, DECISION_COLUMN]
    classification = None
    if labelled:
        categorical.append(schema.target)
        classification = [
            BinaryClassification(
                target=schema.target,
                prediction_labels=DECISION_COLUMN,
                prediction_probas=SCORE_COLUMN,
                pos_label=1,
            )
        ]
    return DataDefinition(
        numerical_columns=[*schema.numeric, SCORE_COLUMN],
        categorical_columns=categorical,
        classification=classification,
    )


def dataset(frame: pd.DataFrame, schema: FeatureSchema, *, labelled: bool) -> Dataset:
    columns = [*schema.names, SCORE_COLUMN, DECISION_COLUMN] + ([schema.target] if labelled else [])
    table = frame[columns].copy()
    # Evidently takes class labels as plain ints (numpy int8 is rejected as a label).
    table[DECISION_COLUMN] = table[DECISION_COLUMN].astype("int64")
    if labelled:
        table[schema.target] = table[schema.target].astype("int64")
    return Dataset.from_pandas(table, data_definition=data_definition(schema, labelled=labelled))


def drift_report(schema: FeatureSchema, params: MonitorParams) -> Report:
    """Data drift per feature and overall, drift of the score, and a data summary."""
    methods: dict[str, Any] = {
        "num_method": params.numeric_method,
        "cat_method": params.categorical_method,
        "threshold": params.drift_threshold,
    }
    gate = params.gate
    return Report(
        [
            RowCount(),
            DriftedColumnsCount(
                columns=schema.names,
                tests=[lte(gate.max_drifted_features)],
                share_tests=[lte(gate.max_drifted_share)],
                **methods,
            ),
            ValueDrift(
                column=SCORE_COLUMN,
                method=params.numeric_method,
                threshold=params.drift_threshold,
                tests=[lte(gate.max_score_drift)],
            ),
            DataDriftPreset(
                columns=schema.names, drift_share=_failing_share(schema, params), **methods
            ),
            # Rows, columns, missing, constant and duplicated values. The per-column
            # DataSummaryPreset would double the run time (100,000 rows: 6 s more) to
            # redraw distributions the drift table already shows.
            DatasetStats(),
        ],
        # Only the gate's tests: the presets' default tests would add a second, different gate.
        include_tests=False,
    )


def _failing_share(schema: FeatureSchema, params: MonitorParams) -> float:
    """The smallest share of drifted features that fails the gate, so that the preset's
    own "Dataset Drift is (NOT) detected" line agrees with the gate's verdict."""
    gate = params.gate
    by_count = (gate.max_drifted_features + 1) / len(schema.names)
    return min(by_count, gate.max_drifted_share + 1e-9)


def quality_report(threshold: float) -> Report:
    """Precision (with the confusion matrix and PR curve), recall, F1 and ROC AUC at the
    model's threshold. Not the ClassificationPreset: its by-label and dummy-model metrics
    double the run time and add nothing for one positive class."""
    return Report(
        [
            Precision(probas_threshold=threshold, conf_matrix=True, pr_curve=True),
            Recall(probas_threshold=threshold),
            F1Score(probas_threshold=threshold),
            RocAuc(probas_threshold=threshold, roc_curve=True),
        ],
        include_tests=False,
    )


def run(report: Report, current: Dataset, reference: Dataset) -> Snapshot:
    with warnings.catch_warnings():
        # Precision is undefined on a window without a flagged row; the report shows 0.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        # Evidently 0.7 calls pandas APIs that pandas 3 deprecates; not ours to fix.
        warnings.simplefilter("ignore", DeprecationWarning)
        return report.run(current, reference)


def drift_verdict(
    snapshot: Snapshot, schema: FeatureSchema, params: MonitorParams, reference_rows: int
) -> DriftVerdict:
    """Read the numbers and the gate's test results back from a drift report."""
    rows, share, score_drift = 0, 0.0, math.nan
    feature_drift: dict[str, float] = {}
    content = snapshot.dict()  # builds the whole snapshot's dict: once
    for result in content["metrics"]:
        config, value = result["config"], result["value"]
        kind = config["type"].rsplit(":", 1)[-1]
        if kind == "RowCount":
            rows = int(value)
        elif kind == "DriftedColumnsCount":
            share = float(value["share"])
        elif kind == "ValueDrift" and config["column"] == SCORE_COLUMN:
            score_drift = float(value)
        elif kind == "ValueDrift":
            feature_drift[config["column"]] = float(value)
    drifted = sorted(
        (name for name, score in feature_drift.items() if score >= params.drift_threshold),
        key=lambda name: -feature_drift[name],
    )
    tests = [
        GateTest(
            name=str(test["name"]),
            passed=str(test["status"]).endswith("SUCCESS"),
            description=str(test["description"]),
        )
        for test in content["tests"]
    ]
    return DriftVerdict(
        rows=rows,
        reference_rows=reference_rows,
        feature_drift={name: feature_drift[name] for name in schema.names if name in feature_drift},
        drifted_features=drifted,
        drifted_share=share,
        score_drift=score_drift,
        tests=tests,
    )


def quality(frame: pd.DataFrame, reference: pd.DataFrame, schema: FeatureSchema) -> Quality:
    """AP (Evidently has no AP metric), precision, recall and F1 at the served decisions."""
    return Quality(
        rows=len(frame),
        positives=int(frame[schema.target].sum()),
        reference=_measures(reference, schema),
        **_measures(frame, schema),
    )


def _measures(frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, Any]:
    truth = frame[schema.target].to_numpy()
    both_classes = 0 < truth.sum() < len(truth)
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, frame[DECISION_COLUMN].to_numpy(), average="binary", zero_division=0
    )
    return {
        "average_precision": (
            float(average_precision_score(truth, frame[SCORE_COLUMN])) if both_classes else None
        ),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }

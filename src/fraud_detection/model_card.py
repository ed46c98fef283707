"""The model card: what the champion is, what it was trained and tested on, how well it
does, where it should and should not be used. Written by the evaluate stage for every
registered model (reports/evaluate/model_card.md) and logged to its MLflow run.

The fairness section is measured, not asserted: the model takes no protected attribute,
but spending habits stand in for many, so the card shows precision and recall for the
customers of each spending quartile on the test period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.metrics import precision_score, recall_score

from fraud_detection.schema import FeatureSchema

AMOUNT_COLUMN = "TX_AMOUNT"


@dataclass(frozen=True)
class CardFacts:
    """Everything the card states, gathered by the evaluate stage."""

    name: str
    version: str | None
    alias: str | None
    candidate: str
    cv_average_precision: float
    threshold: float
    threshold_rule: str
    decision: str  # why the selection rule picked this candidate
    calibration: str  # the calibrator, as it prints
    metrics: dict[str, float]
    split: dict[str, Any]
    schema: FeatureSchema
    segments: pd.DataFrame | None
    # The model's content fingerprint (registry.model_fingerprint): the pipeline's own
    # copy of the card names the model by it, since only the store knows the version.
    fingerprint: str | None = None


def spending_segments(
    test: pd.DataFrame,
    schema: FeatureSchema,
    proba: NDArray[np.float64],
    threshold: float,
) -> pd.DataFrame | None:
    """Precision and recall per quartile of the customers' average payment in the test
    period; None when the data has no customer column or no amounts."""
    if schema.group_column is None or AMOUNT_COLUMN not in test.columns:
        return None
    average = test.groupby(schema.group_column)[AMOUNT_COLUMN].transform("mean")
    quartile = pd.qcut(average, 4, labels=["Q1 (lowest)", "Q2", "Q3", "Q4 (highest)"])
    flagged = proba >= threshold
    rows = []
    for name, members in test.groupby(quartile, observed=True).groups.items():
        position = test.index.get_indexer(members)
        truth = test[schema.target].to_numpy()[position]
        decision = flagged[position]
        rows.append(
            {
                "segment": str(name),
                "payments": len(position),
                "frauds": int(truth.sum()),
                "flagged": int(decision.sum()),
                "precision": float(precision_score(truth, decision, zero_division=0)),
                "recall": float(recall_score(truth, decision, zero_division=0)),
            }
        )
    return pd.DataFrame(rows)


def render(facts: CardFacts) -> str:
    """The card as Markdown."""
    return "\n".join(
        [
            *_header(facts),
            *_data(facts),
            *_performance(facts),
            *_calibration(facts),
            *_fairness(facts),
            *_limitations(facts),
        ]
    )


def _header(facts: CardFacts) -> list[str]:
    version = f" v{facts.version}" if facts.version else ""
    alias = f" (alias `{facts.alias}`)" if facts.alias else ""
    positive, rows = facts.schema.class_names.positive, _rows(facts.schema)
    simulated = facts.schema.source == "simulator"
    use = (
        "Ranking card payments for review by fraud analysts"
        if simulated
        else f"Ranking {rows} by their probability of being {positive}, for a person to review"
    )
    acted_on = "block a payment or a customer" if simulated else "act on a case"
    return [
        f"# Model card: {facts.name}{version}{alias}",
        "",
        f"**Model.** {facts.candidate}: one scikit-learn pipeline, preprocessing included, "
        f"returning the probability that a {rows[:-1]} is {positive}. Decision threshold "
        f"{facts.threshold:.3f} ({_rule(facts.threshold_rule)}, chosen on out-of-fold "
        "predictions of the training period).",
        "",
        f"**Why this model.** {facts.decision}.",
        "",
        *_identity(facts),
        f"**Intended use.** {use}, and flagging those above the threshold. The flag is a "
        f"reason to look, not a verdict: it is not meant to {acted_on} without a "
        "person's review.",
        "",
    ]


def _identity(facts: CardFacts) -> list[str]:
    if facts.fingerprint is None:
        return []
    where = (
        f"registered as {facts.name} v{facts.version}"
        if facts.version
        else f"the registry version of {facts.name} tagged `model_fingerprint = "
        f"'{facts.fingerprint}'` (each store numbers its versions itself)"
    )
    return [f"**Identity.** Model fingerprint `{facts.fingerprint}`: {where}.", ""]


def _rows(schema: FeatureSchema) -> str:
    """What one row is: a payment for the simulator, a row for a CSV table."""
    return "payments" if schema.source == "simulator" else "rows"


def _data(facts: CardFacts) -> list[str]:
    split, schema = facts.split, facts.schema
    rows, positives = _rows(schema), _plural(schema.class_names.positive)
    source = (
        "simulated card payments (docs/dataset.md)"
        if schema.source == "simulator"
        else "a CSV file"
    )
    lines = ["## Data", "", f"Source: {source}.", ""]
    if split.get("protocol") == "period":
        lines += [
            f"- Training: {split['train_period'][0]} to {split['train_period'][1]}, "
            f"{split['train_rows']:,} {rows}, {split['train_positives']:,} {positives}.",
            f"- Test: {split['test_period'][0]} to {split['test_period'][1]}, "
            f"{split['test_rows']:,} {rows}, {split['test_positives']:,} {positives} "
            "(after a gap for the label delay; cards known to be compromised removed).",
        ]
    else:
        lines += [
            f"- Training: {split['train_rows']:,} rows, {split['train_positives']:,} {positives}.",
            f"- Test (held out): {split['test_rows']:,} rows, "
            f"{split['test_positives']:,} {positives}.",
        ]
    lines += ["", f"Inputs ({len(schema.features)}):", ""]
    lines += [
        f"- `{feature.name}`" + (f": {feature.description}" if feature.description else "")
        for feature in schema.features
    ]
    return [*lines, ""]


def _performance(facts: CardFacts) -> list[str]:
    m, names = facts.metrics, facts.schema.class_names
    lines = [
        "## Performance",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| cross-validated AP (training period) | {facts.cv_average_precision:.3f} |",
    ]
    shown = [
        ("average_precision", "test AP"),
        ("roc_auc", "test ROC AUC"),
        ("precision", "test precision at the threshold"),
        ("recall", "test recall at the threshold"),
        ("f1", "test F1 at the threshold"),
        ("card_precision_top_100", "card precision top 100 (per day)"),
    ]
    lines += [f"| {label} | {m[key]:.3f} |" for key, label in shown if key in m]
    if "true_positives" in m:
        lines += [
            "",
            f"On the test period the threshold catches {int(m['true_positives']):,} of "
            f"{int(m['true_positives'] + m['false_negatives']):,} {_plural(names.positive)} "
            f"and flags {int(m['false_positives']):,} {names.negative} "
            f"{_rows(facts.schema)}.",
        ]
    return [*lines, ""]


def _calibration(facts: CardFacts) -> list[str]:
    """Before and after the calibrator, against the base-rate constant."""
    m = facts.metrics
    if "uncalibrated_brier" not in m:
        return []
    positive = facts.schema.class_names.positive
    bins = int(m.get("ece_bins", 10))
    rows = [
        ("Brier score", "uncalibrated_brier", "brier", 5),
        ("log loss", "uncalibrated_log_loss", "log_loss", 4),
        (f"expected calibration error ({bins} equal-width bins)", "uncalibrated_ece", "ece", 5),
        ("average precision", "uncalibrated_average_precision", "average_precision", 3),
    ]
    lines = [
        "## Calibration",
        "",
        f"The probability the service returns is the classifier's score mapped by "
        f"`{facts.calibration}`, fitted on the out-of-fold scores of the training period. "
        "On the test period (lower is better except for AP, which a monotone map barely "
        "moves):",
        "",
        "| measure | before | after |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {m[a]:.{d}f} | {m[b]:.{d}f} |" for name, a, b, d in rows]
    lines += [
        "",
        f"Always answering the training share of {_plural(positive)} "
        f"({m['base_rate']:.4f}) scores a Brier of {m['base_rate_brier']:.5f}: the bar a "
        "probability has to clear to carry information. The reliability diagram is "
        "`reports/evaluate/plots/calibration.png`.",
        "",
    ]
    return lines


def _fairness(facts: CardFacts) -> list[str]:
    lines = [
        "## Fairness",
        "",
        "The inputs hold no protected attribute (no age, sex, nationality or address). "
        "Spending and location (the terminals a card uses) can stand in for some, so the "
        "errors should be watched per group of customers.",
        "",
    ]
    if facts.segments is None:
        return [*lines, "No customer column in this data: no per-group figures.", ""]
    lines += [
        "Test period, customers grouped by the quartile of their average payment:",
        "",
        f"| customers | payments | {_plural(facts.schema.class_names.positive)} | flagged | "
        "precision | recall |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {row.segment} | {row.payments:,} | {row.frauds:,} | {row.flagged:,} | "
        f"{row.precision:.3f} | {row.recall:.3f} |"
        for row in facts.segments.itertuples()
    ]
    return [*lines, ""]


def _limitations(facts: CardFacts) -> list[str]:
    simulated = facts.schema.source == "simulator"
    positive = facts.schema.class_names.positive
    lines = ["## Limitations", ""]
    if simulated:
        lines += [
            "- Trained and tested on simulated payments: the fraud patterns are the "
            "simulator's three. A real deployment needs real data and a new evaluation.",
            "- Fraud labels arrive after an investigation (the features assume 7 days): "
            "recent performance is only known later, so drift is watched on the inputs and "
            "the score (docs/monitoring.md).",
            "- Patterns absent from training (such as card testing) can go unflagged; the "
            "drift monitor's replay shows one.",
        ]
    else:
        lines.append(
            f"- Tested once on held-out rows of the same file: {positive} patterns that "
            "the file does not hold, or that change later, can go unflagged; watch the "
            "inputs and the score for drift (docs/monitoring.md)."
        )
    missed, reviewers = ("fraud", "analysts'") if simulated else (f"{positive} cases", "reviewers'")
    lines += [
        f"- The threshold trades missed {missed} against {reviewers} time; it was set on the "
        f"training period and should be revisited when the costs or the {positive} rate change.",
        "",
    ]
    return lines


def _plural(word: str) -> str:
    """``fraud`` -> ``frauds``: the count of a class, as the card's tables write it."""
    return word if word.endswith("s") else f"{word}s"


def _rule(rule: str) -> str:
    return {"max_f1": "best F1", "min_cost": "lowest expected cost"}.get(rule, rule)

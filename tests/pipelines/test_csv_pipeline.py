"""`dvc repro` on a user's CSV file: creditcard-shaped, and mixed types with missing values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.pipelines.project import TINY_OVERRIDES, Project, make_project, merged, repo_params

pytestmark = pytest.mark.slow

CSV_MODELS = {
    "dummy": {"kind": "dummy", "strategies": ["none"]},
    "logreg": {"kind": "logistic_regression", "strategies": ["class_weight", "smote"]},
    "boost": {
        "kind": "xgboost",
        "params": {"n_estimators": 40, "max_depth": 3},
        "strategies": ["none"],
    },
}


def creditcard_like(rows: int, seed: int) -> pd.DataFrame:
    """The public creditcard.csv's shape: Time, V1..V28 (here V1..V6), Amount, Class."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"Time": np.sort(rng.uniform(0, 172_800, rows)).round()})
    for i in range(1, 7):
        frame[f"V{i}"] = rng.normal(size=rows)
    frame["Amount"] = rng.exponential(60, rows).round(2)
    signal = 2.5 * frame["V1"] - 1.5 * frame["V3"] + rng.normal(scale=0.5, size=rows)
    frame["Class"] = (signal > np.quantile(signal, 0.96)).astype(int)
    return frame


def mixed_types(rows: int, seed: int) -> pd.DataFrame:
    """Numbers with gaps, text categories, a boolean, an id, and text labels."""
    rng = np.random.default_rng(seed)
    channel = rng.choice(["online", "shop", "atm"], rows, p=[0.3, 0.6, 0.1])
    amount = rng.exponential(50, rows).round(2)
    foreign = rng.random(rows) < 0.2
    risk = (channel == "online") * 1.5 + foreign * 1.5 + np.log1p(amount) / 2
    label = np.where(risk + rng.normal(scale=0.6, size=rows) > 3.6, "fraud", "genuine")
    frame = pd.DataFrame(
        {
            "payment_id": [f"p{i:05d}" for i in range(rows)],
            "amount": amount,
            "channel": channel,
            "foreign": foreign,
            "customer_age": rng.integers(18, 90, rows).astype(float),
            "outcome": label,
        }
    )
    frame.loc[rng.random(rows) < 0.05, "customer_age"] = np.nan
    frame.loc[rng.random(rows) < 0.03, "channel"] = None
    return frame


def loans(rows: int, seed: int) -> pd.DataFrame:
    """A credit-default table: Yes/No target, no time, no cards."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.5, 0.5, rows).round(-2)
    debt_ratio = rng.beta(2, 5, rows).round(3)
    risk = 4 * debt_ratio - (income - 36_000) / 30_000 + rng.normal(scale=0.4, size=rows)
    default = np.where(risk > np.quantile(risk, 0.95), "Yes", "No")
    return pd.DataFrame({"income": income, "debt_ratio": debt_ratio, "default": default})


CASES: dict[str, tuple[Any, dict[str, Any]]] = {
    "creditcard": (creditcard_like, {"target": "Class", "time_column": "Time"}),
    "mixed": (
        mixed_types,
        {"target": "outcome", "positive_label": "fraud", "drop_columns": ["payment_id"]},
    ),
    # Written as a user would: `positive_label: Yes`, unquoted (see csv_project).
    "loans": (loans, {"target": "default", "positive_label": "Yes"}),
}
# The loans' own words and registry name, where the others keep the defaults.
LOAN_NAMES = {"class_names": {"positive": "default", "negative": "repaid"}}


def csv_project(root: Path, case: str) -> Project:
    make_rows, csv_params = CASES[case]
    params = merged(
        repo_params(),
        {
            "data": {
                "source": "csv",
                "csv": {"path": "data/external/payments.csv", **csv_params},
                **(LOAN_NAMES if case == "loans" else {}),
            },
            "train": {
                "experiment_name": f"csv-{case}",
                "cv": {"n_splits": 3},
                "models": CSV_MODELS,
            },
            "evaluate": {**TINY_OVERRIDES["evaluate"], "registered_model_name": f"csv-{case}"},
        },
    )
    project = make_project(root, params)
    params_file = project.path("params.yaml")
    params_file.write_text(
        params_file.read_text().replace("positive_label: 'Yes'", "positive_label: Yes")
    )
    make_rows(3000, seed=1).to_csv(project.path("data/external/payments.csv"), index=False)
    return project


@pytest.fixture(scope="module")
def csv_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Project]:
    """Each CSV case's project after a full `dvc repro`."""
    runs = {}
    for case in sorted(CASES):
        project = csv_project(tmp_path_factory.mktemp(case), case)
        (project.root / "repro.log").write_text(project.run("dvc", "repro").stdout)
        runs[case] = project
    return runs


@pytest.mark.parametrize("case", sorted(CASES))
def test_csv_pipeline_trains_and_registers(csv_runs: dict[str, Project], case: str) -> None:
    project = csv_runs[case]
    board = pd.read_csv(project.path("reports/train/leaderboard.csv"))
    assert set(board["model"]) == set(CSV_MODELS)
    assert board.iloc[0]["model"] != "dummy"
    metrics = json.loads(project.path("reports/evaluate/metrics.json").read_text())
    assert metrics["average_precision"] > 0.3  # the fraud share is about 4%
    assert "card_precision_top_100" not in metrics  # no cards or days in these files
    # Calibrated: better probabilities than always answering the base rate.
    assert metrics["brier"] < metrics["base_rate_brier"]
    assert metrics["ece"] < 0.05
    split = json.loads(project.path("reports/split.json").read_text())
    expected = "latest rows held out" if case == "creditcard" else "stratified hold-out"
    assert split["protocol"] == expected
    mlflow.set_tracking_uri(project.tracking_uri)
    assert mlflow.MlflowClient().get_model_version_by_alias(f"csv-{case}", "champion")


def test_a_loan_table_speaks_of_defaults_and_serves_its_own_name(
    csv_runs: dict[str, Project],
) -> None:
    """`positive_label: Yes` (unquoted) names the Yes rows; the logs, the plots and the card
    use the table's words; `make serve` serves the champion params.yaml names."""
    project = csv_runs["loans"]
    assert "positive_label: Yes\n" in project.path("params.yaml").read_text()
    log = project.path("repro.log").read_text()
    positives = int((loans(3000, seed=1)["default"] == "Yes").sum())
    assert f"3,000 rows, {positives:,} default (5.00%) from csv" in log
    assert "fraud" not in log.lower()
    assert "fraud" not in project.path("reports/evaluate/model_card.md").read_text().lower()
    schema = json.loads(project.path("data/features/schema.json").read_text())
    assert schema["class_names"] == {"positive": "default", "negative": "repaid"}
    uri = project.run("python", "-m", "pipelines.champion_uri").stdout.strip()
    assert uri == "models:/csv-loans@champion"


def test_mixed_types_keep_their_kinds_and_tolerate_gaps(csv_runs: dict[str, Project]) -> None:
    project = csv_runs["mixed"]
    schema = json.loads(project.path("data/features/schema.json").read_text())
    kinds = {f["name"]: f["kind"] for f in schema["features"]}
    assert kinds == {
        "amount": "numeric",
        "foreign": "numeric",
        "customer_age": "numeric",
        "channel": "categorical",
    }
    assert schema["positive_label"] == "fraud"
    channel = next(f for f in schema["features"] if f["name"] == "channel")
    assert channel["categories"] == ["atm", "online", "shop"]
    mlflow.set_tracking_uri(project.tracking_uri)
    model = mlflow.sklearn.load_model("models:/csv-mixed@champion")
    request = pd.DataFrame(
        {
            "amount": [120.0, 5.0],
            "foreign": [1.0, 0.0],
            "customer_age": [np.nan, 40.0],
            "channel": ["a channel never seen", None],
        }
    )
    proba = model.predict_proba(request)[:, 1]
    assert np.isfinite(proba).all()


def test_broken_csv_stops_the_pipeline_with_the_line_number(tmp_path: Path) -> None:
    project = csv_project(tmp_path, "creditcard")
    rows = creditcard_like(200, seed=2).astype({"Amount": object})
    rows.loc[17, "Amount"] = "twelve"
    rows.to_csv(project.path("data/external/payments.csv"), index=False)
    result = project.run("dvc", "repro", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "column 'Amount' is numeric but 1 cell(s) are not numbers (CSV lines 19" in output
    assert "Traceback" not in output
    assert not project.path("data/raw/dataset.parquet").exists()

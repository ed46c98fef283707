"""The real pipeline with ``engine: dask``: `dvc repro` on a two-worker LocalCluster.

The data stage writes one Parquet file a day, the features stage computes on Dask, and
the rest of the pipeline, the leaderboard, the metrics and the registered champion are
what the local engine gives: checked here like tests/pipelines/test_pipeline_end_to_end.py
checks the local run.
"""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from fraud_detection.data.simulator import simulate
from fraud_detection.features import transaction_features
from fraud_detection.io.files import parquet_frame
from fraud_detection.params import FeatureParams, SimulatorParams
from tests.pipelines.project import TINY_OVERRIDES, Project, make_project, merged, repo_params

pytestmark = pytest.mark.slow

DASK_OVERRIDES = {
    "engine": {
        "kind": "dask",
        "dask": {"workers": 2, "memory_limit_gb": 1.5, "days_per_task": 20},
    },
    "train": {
        **TINY_OVERRIDES["train"],
        "experiment_name": "tiny-dask",
    },
    "evaluate": {**TINY_OVERRIDES["evaluate"], "registered_model_name": "tiny-dask-detector"},
}


@pytest.fixture(scope="module")
def dask_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    params = merged(merged(repo_params(), TINY_OVERRIDES), DASK_OVERRIDES)
    project = make_project(tmp_path_factory.mktemp("dask-project"), params)
    project.env.pop("DASK_SCHEDULER_ADDRESS", None)
    project.run("dvc", "repro", timeout=900)
    return project


def _params(project: Project) -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load(project.path("params.yaml").read_text())
    return loaded


def test_the_data_are_one_file_a_day_and_equal_a_local_simulation(dask_project: Project) -> None:
    raw = dask_project.path("data/raw/dataset.parquet")
    assert raw.is_dir()
    simulator = SimulatorParams.model_validate(_params(dask_project)["data"]["simulator"])  # type: ignore[index]
    files = sorted(p.name for p in raw.glob("*.parquet"))
    assert len(files) == simulator.n_days
    assert files[0] == f"{simulator.start_date.isoformat()}.parquet"
    local = simulate(simulator)
    on_dask = parquet_frame(raw)
    on_dask["TX_DATETIME"] = on_dask["TX_DATETIME"].astype(local["TX_DATETIME"].dtype)
    pd.testing.assert_frame_equal(on_dask, local, check_exact=True)


def test_the_features_equal_the_local_engine_s(dask_project: Project) -> None:
    features = FeatureParams.model_validate(_params(dask_project)["features"])
    raw = parquet_frame(dask_project.path("data/raw/dataset.parquet"))
    local = transaction_features(raw, features)
    on_dask = parquet_frame(dask_project.path("data/features/features.parquet"))
    pd.testing.assert_frame_equal(on_dask, local, check_exact=True)
    schema = json.loads(dask_project.path("data/features/schema.json").read_text())
    assert [f["name"] for f in schema["features"]] == [
        c
        for c in local.columns
        if c.startswith(("TX_AMOUNT", "TX_DURING", "CUSTOMER_ID_", "TERMINAL_ID_"))
    ]


def test_the_stages_say_where_they_ran(dask_project: Project) -> None:
    shown = dask_project.run("dvc", "repro", "--force", "--single-item", "features").stdout
    assert "Dask LocalCluster: 2 worker(s)" in shown
    assert "Dask dashboard: http://127.0.0.1:" in shown


def test_leaderboard_metrics_and_champion_as_with_the_local_engine(dask_project: Project) -> None:
    board = pd.read_csv(dask_project.path("reports/train/leaderboard.csv"))
    assert len(board) == len(TINY_OVERRIDES["train"]["models"]) + 1  # logreg: 2 strategies
    assert board.iloc[-1]["model"] == "dummy"
    metrics = json.loads(dask_project.path("reports/evaluate/metrics.json").read_text())
    assert metrics["average_precision"] > 0.2
    assert metrics["brier"] < metrics["base_rate_brier"]
    mlflow.set_tracking_uri(dask_project.tracking_uri)
    name = DASK_OVERRIDES["evaluate"]["registered_model_name"]
    champion = MlflowClient().get_model_version_by_alias(name, "champion")
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    test = parquet_frame(dask_project.path("data/split/test.parquet")).head(50)
    scores = model.predict(test[model.metadata.get_input_schema().input_names()])
    assert str(champion.version) == "1"
    assert len(scores) == 50

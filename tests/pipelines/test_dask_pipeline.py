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
from lightgbm import LGBMClassifier
from mlflow import MlflowClient
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from fraud_detection.calibration import without_calibration
from fraud_detection.data.simulator import simulate
from fraud_detection.features import transaction_features
from fraud_detection.io.files import parquet_frame
from fraud_detection.io.model_package import load_model_package
from fraud_detection.params import FeatureParams, SimulatorParams, TrainParams
from fraud_detection.validation import make_folds
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
        "models": {
            "dummy": {"kind": "dummy", "strategies": ["none"]},
            "forest": TINY_OVERRIDES["train"]["models"]["forest"],
            "net": TINY_OVERRIDES["train"]["models"]["net"],
            "boost": {
                "kind": "xgboost",
                "params": {"n_estimators": 30, "max_depth": 3},
                "strategies": ["none", "class_weight", "undersample"],
            },
            "gbm": {
                "kind": "lightgbm",
                "params": {"n_estimators": 30, "num_leaves": 7},
                "strategies": ["class_weight", "undersample", "smote"],
            },
        },
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


# What the Dask engine trains, and what it leaves out (and says so on the leaderboard).
TRAINED = {"boost/none", "boost/class_weight", "boost/undersample", "gbm/class_weight"}
TRAINED |= {"gbm/undersample"}
LEFT_OUT = {"dummy/none", "forest/undersample", "net/undersample", "gbm/smote"}


def test_the_leaderboard_holds_the_boosted_models_and_names_what_was_left_out(
    dask_project: Project,
) -> None:
    board = pd.read_csv(dask_project.path("reports/train/leaderboard.csv"))
    assert set(board["model"] + "/" + board["strategy"]) == TRAINED
    assert (board["fit_seconds_mean"] > 0).all()
    markdown = dask_project.path("reports/train/leaderboard.md").read_text()
    left_out = markdown.split("**Left out on the Dask engine**", 1)[1]
    for family in LEFT_OUT:
        assert f"- {family}: " in left_out
    assert "SMOTE needs each positive row's nearest neighbours" in left_out
    summary = json.loads(dask_project.path("reports/train/cv_summary.json").read_text())
    assert sorted(summary["left_out"]) == sorted(LEFT_OUT)
    assert summary["scheme"] == "time"
    shown = dask_project.run("dvc", "repro", "--force", "--single-item", "train").stdout
    assert "Dask LocalCluster: 2 worker(s)" in shown
    assert "in 2 partition(s) on the workers" in shown


def test_the_folds_are_the_local_engine_s(dask_project: Project) -> None:
    """The same time-ordered validation rows, fold by fold, as the local engine makes."""
    folds = pd.read_csv(dask_project.path("reports/train/cv_folds.csv"))
    out_of_fold = parquet_frame(dask_project.path("models/out_of_fold.parquet"))
    train = parquet_frame(dask_project.path("data/split/train.parquet"))
    params = TrainParams.model_validate(_params(dask_project)["train"])
    y = train["TX_FRAUD"].to_numpy()
    expected = make_folds(y, params.cv, has_time=True, seed=params.seed)
    assert sorted(folds["fold"].unique()) == list(range(len(expected)))
    for number, (_, validation) in enumerate(expected):
        rows = out_of_fold.loc[out_of_fold["fold"] == number, "row"].to_numpy()
        assert (rows == validation).all()
    assert (out_of_fold["y"].to_numpy() == y[out_of_fold["row"]]).all()


def test_metrics_and_champion_as_with_the_local_engine(dask_project: Project) -> None:
    metrics = json.loads(dask_project.path("reports/evaluate/metrics.json").read_text())
    assert metrics["average_precision"] > 0.2
    assert metrics["brier"] < metrics["base_rate_brier"]
    selection = json.loads(dask_project.path("models/selection.json").read_text())
    assert f"{selection['model']}/{selection['strategy']}" in TRAINED
    mlflow.set_tracking_uri(dask_project.tracking_uri)
    name = DASK_OVERRIDES["evaluate"]["registered_model_name"]
    champion = MlflowClient().get_model_version_by_alias(name, "champion")
    assert str(champion.version) == "1"
    run = MlflowClient().get_run(str(champion.run_id))
    parent = MlflowClient().get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["engine"] == "dask"
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    test = parquet_frame(dask_project.path("data/split/test.parquet"))
    names = model.metadata.get_input_schema().input_names()
    scores = model.predict(test[names])
    assert len(scores) == len(test)


def test_the_shipped_model_is_the_local_engine_s_kind_of_pipeline(dask_project: Project) -> None:
    """A plain scikit-learn Pipeline (preprocess, then a local XGBClassifier or
    LGBMClassifier): serving, the image and the monitor load it as they load today's."""
    package = load_model_package(dask_project.path("models/model"))
    steps = without_calibration(package.pipeline)
    assert isinstance(steps, Pipeline)
    assert [name for name, _ in steps.steps] == ["preprocess", "model"]
    assert type(steps.named_steps["model"]) in {XGBClassifier, LGBMClassifier}
    test = parquet_frame(dask_project.path("data/split/test.parquet")).head(200)
    reference = parquet_frame(dask_project.path("data/reference/reference.parquet"))
    assert reference["probability"].notna().all()
    assert len(reference) == len(parquet_frame(dask_project.path("data/split/train.parquet")))
    proba = package.pipeline.predict_proba(test[package.schema.names])[:, 1]
    assert ((proba >= 0) & (proba <= 1)).all()

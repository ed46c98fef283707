"""The real pipeline, end to end: `dvc repro` with tiny params, a real MLflow store."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.pipelines.project import TINY_OVERRIDES, Project

pytestmark = pytest.mark.slow

FAMILIES = {
    "dummy/none",
    "logreg/none",
    "logreg/class_weight",
    "tree/smote",
    "forest/undersample",
    "boost/class_weight",
    "gbm/smote",
    "net/undersample",
}
MODEL_NAME = TINY_OVERRIDES["evaluate"]["registered_model_name"]


def test_leaderboard_ranks_every_model_and_strategy(tiny_project: Project) -> None:
    board = pd.read_csv(tiny_project.path("reports/train/leaderboard.csv"))
    assert set(board["model"] + "/" + board["strategy"]) == FAMILIES
    assert list(board["rank"]) == list(range(1, len(FAMILIES) + 1))
    assert board["average_precision_mean"].is_monotonic_decreasing
    # The dummy model ranks by the prior alone: it must lose to every real model.
    assert board.iloc[-1]["model"] == "dummy"
    markdown = tiny_project.path("reports/train/leaderboard.md").read_text()
    assert re.search(r"^\|\s+rank\s+\|\s+model", markdown, re.MULTILINE)
    assert "forest" in markdown
    folds = pd.read_csv(tiny_project.path("reports/train/cv_folds.csv"))
    n_splits = TINY_OVERRIDES["train"]["cv"]["n_splits"]
    assert (
        len(folds) == len(pd.read_csv(tiny_project.path("reports/train/cv_results.csv"))) * n_splits
    )


def test_metrics_file_holds_test_period_metrics(tiny_project: Project) -> None:
    metrics = json.loads(tiny_project.path("reports/evaluate/metrics.json").read_text())
    for key in ("average_precision", "roc_auc", "f1", "precision", "recall", "brier"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["average_precision"] > 0.2  # far above the ~1% fraud share
    assert 0.0 < metrics["threshold"] < 1.0
    assert 0.0 <= metrics["card_precision_top_100"] <= 1.0
    shown = tiny_project.run("dvc", "metrics", "show", "--json").stdout
    assert "average_precision" in shown


def test_the_champion_is_calibrated_and_chosen_by_the_stated_rule(tiny_project: Project) -> None:
    """The shipped probabilities beat the base rate; the leaderboard names the tie group
    and the winner, and the model card says why it won."""
    metrics = json.loads(tiny_project.path("reports/evaluate/metrics.json").read_text())
    assert metrics["brier"] < metrics["base_rate_brier"]
    assert metrics["ece_bins"] == 10
    for key in ("log_loss", "ece", "uncalibrated_brier", "uncalibrated_ece"):
        assert metrics[key] >= 0, key
    board = pd.read_csv(tiny_project.path("reports/train/leaderboard.csv"))
    winners = board[board["selection"] == "winner"]
    assert len(winners) == 1
    tied = board[board["selection"].isin(["winner", "tied"])]
    assert (
        tied["average_precision_mean"].min()
        >= board["average_precision_mean"].max()
        - (
            board.loc[0, "average_precision_std"]  # one standard error is at most one std
        )
    )
    selection = json.loads(tiny_project.path("models/selection.json").read_text())
    family = winners.iloc[0]["model"] + "/" + winners.iloc[0]["strategy"]
    assert selection["label"].startswith(family)
    assert sorted(selection["tied"]) == sorted(tied["model"] + "/" + tied["strategy"])
    markdown = tiny_project.path("reports/train/leaderboard.md").read_text()
    assert f"**Selection** (`train.selection`): {selection['decision']}." in markdown
    card = tiny_project.path("reports/evaluate/model_card.md").read_text()
    assert f"**Why this model.** {selection['decision']}." in card
    assert "## Calibration" in card
    mlmodel = yaml.safe_load(tiny_project.path("models/model/MLmodel").read_text())
    assert mlmodel["metadata"]["calibration"].startswith("SigmoidCalibrator(")


def test_champion_alias_serves_probabilities(tiny_project: Project) -> None:
    mlflow.set_tracking_uri(tiny_project.tracking_uri)
    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert str(champion.version) == "1"
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    schema = json.loads(tiny_project.path("data/features/schema.json").read_text())
    test = pd.read_parquet(tiny_project.path("data/split/test.parquet"))
    names = [feature["name"] for feature in schema["features"]]
    proba = np.asarray(model.predict(test[names].head(50)))
    assert proba.shape == (50, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all()
    metadata = model.metadata.metadata
    assert metadata is not None
    assert 0 < metadata["threshold"] < 1


def test_model_carries_the_feature_schema(tiny_project: Project) -> None:
    folder = tiny_project.path("models/model")
    carried = json.loads((folder / "extra_files/feature_schema.json").read_text())
    written = json.loads(tiny_project.path("data/features/schema.json").read_text())
    assert carried == written
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [column["name"] for column in inputs] == [f["name"] for f in written["features"]]
    assert mlmodel["flavors"]["python_function"]["predict_fn"] == "predict_proba"


def test_model_card_names_the_model_and_the_logged_copy_its_version(
    tiny_project: Project,
) -> None:
    """The card in reports/ is a stage output: it names the model by fingerprint. The copy
    logged with the registered version's run names that version."""
    card = tiny_project.path("reports/evaluate/model_card.md").read_text()
    mlmodel = yaml.safe_load(tiny_project.path("models/model/MLmodel").read_text())
    fingerprint = mlmodel["metadata"]["model_fingerprint"]
    assert card.startswith(f"# Model card: {MODEL_NAME}\n")
    assert f"**Identity.** Model fingerprint `{fingerprint}`" in card
    metrics = json.loads(tiny_project.path("reports/evaluate/metrics.json").read_text())
    assert f"| test AP | {metrics['average_precision']:.3f} |" in card
    assert "| Q4 (highest) |" in card  # the simulator's data has customers: groups shown
    client = MlflowClient(tracking_uri=tiny_project.tracking_uri)
    [version] = client.search_model_versions(
        f"name = '{MODEL_NAME}' and tags.model_fingerprint = '{fingerprint}'"
    )
    assert version.run_id is not None
    logged = mlflow.artifacts.load_text(f"runs:/{version.run_id}/model_card.md")
    assert logged.startswith(f"# Model card: {MODEL_NAME} v{version.version} (alias `champion`)")
    assert f"registered as {MODEL_NAME} v{version.version}" in logged


def test_reference_is_the_training_week_scored_without_each_day(tiny_project: Project) -> None:
    table = pd.read_parquet(tiny_project.path("data/reference/reference.parquet"))
    info = json.loads(tiny_project.path("data/reference/reference.json").read_text())
    train = pd.read_parquet(tiny_project.path("data/split/train.parquet"))
    carried = json.loads(
        tiny_project.path("models/model/extra_files/feature_schema.json").read_text()
    )
    assert info["feature_schema"] == carried
    names = [feature["name"] for feature in carried["features"]]
    assert list(table.columns) == ["TX_DATETIME", *names, "TX_FRAUD", "probability", "is_fraud"]
    assert len(table) == len(train) == info["rows"]
    assert table["TX_FRAUD"].sum() == info["positives"]
    assert ((table["probability"] >= info["threshold"]) == table["is_fraud"].astype(bool)).all()
    assert table["probability"].between(0, 1).all()
    # The workspace model knows its content fingerprint (not a registry version: only one
    # store knows that), and the reference records it, so the monitor can tell its
    # predictions from another model's in any clone.
    assert not tiny_project.path("models/model/registered_model.json").exists()
    metadata = yaml.safe_load(tiny_project.path("models/model/MLmodel").read_text())["metadata"]
    assert len(metadata["model_fingerprint"]) == 16
    assert info["model_fingerprint"] == metadata["model_fingerprint"]
    assert info["model_name"] == metadata["registered_model_name"] == MODEL_NAME
    assert "model_version" not in info
    assert "model_run_id" not in info


def test_monitor_baseline_judges_a_replayed_week(tiny_project: Project) -> None:
    metrics = json.loads(tiny_project.path("reports/monitoring/baseline.json").read_text())
    assert set(metrics) >= {"passed", "rows", "drifted_features", "score_drift"}
    assert metrics["rows"] >= 500  # monitor.min_rows: the replay reached the service
    folder = tiny_project.path("reports/monitoring/baseline")
    summary = json.loads((folder / "latest-summary.json").read_text())
    assert summary["rows"] == metrics["rows"]
    assert summary["skipped"] == {
        "other_schema_rows": 0,
        "unreadable_rows": 0,
        "other_version_rows": 0,
    }
    assert summary["labels"]["labelled_rows"] == summary["rows"]  # every label, joined on id
    # The baseline served the workspace model folder: the model the reference describes.
    assert summary["model_versions"] == ["local"]
    assert (folder / "latest-drift.html").stat().st_size > 100_000
    assert (folder / "history.db").is_file()


def test_mlflow_has_a_parent_run_with_a_child_per_candidate(tiny_project: Project) -> None:
    mlflow.set_tracking_uri(tiny_project.tracking_uri)
    experiment = mlflow.get_experiment_by_name(TINY_OVERRIDES["train"]["experiment_name"])
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id], output_format="pandas")
    assert isinstance(runs, pd.DataFrame)
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert len(parents) == 1
    parent = parents.iloc[0]
    for tag in ("git_commit", "params_fingerprint", "data_fingerprint"):
        assert len(str(parent[f"tags.{tag}"])) >= 16, tag
    assert len(parent["tags.git_commit"]) == 40
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    names = set(children["tags.mlflow.runName"])
    assert names >= FAMILIES
    assert any(name.startswith("evaluate ") for name in names)
    assert parent["metrics.test_average_precision"] > 0


def test_second_repro_does_nothing(tiny_project: Project) -> None:
    started = time.perf_counter()
    output = tiny_project.run("dvc", "repro").stdout
    assert output.count("didn't change, skipping") == 7, output
    assert time.perf_counter() - started < 30


@pytest.mark.parametrize(
    ("module", "stages"),
    [
        # refit_for_serving: what the shipped model is made of.
        ("src/fraud_detection/modeling.py", {"train", "evaluate", "reference"}),
        (
            "src/fraud_detection/io/model_package.py",
            {"train", "evaluate", "reference", "monitor_baseline"},
        ),
        ("serving/routers/predict.py", {"monitor_baseline"}),
    ],
)
def test_a_change_to_an_imported_module_reruns_its_stages(
    tiny_project: Project, module: str, stages: set[str]
) -> None:
    """DVC itself sees the change: the stages that run the module, and only those."""
    path = tiny_project.path(module)
    original = path.read_text()
    try:
        path.write_text(original + "\n# changed\n")
        status = json.loads(tiny_project.run("dvc", "status", "--json").stdout)
        changed = {
            name
            for name, entries in status.items()
            if any("changed deps" in str(e) for e in entries)
        }
        assert changed == stages
    finally:
        path.write_text(original)
    assert json.loads(tiny_project.run("dvc", "status", "--json").stdout) == {}


def test_plots_render(tiny_project: Project) -> None:
    tiny_project.run("dvc", "plots", "show")
    html = tiny_project.path("dvc_plots/index.html").read_text()
    assert "precision_recall" in html
    assert "roc" in html


def test_push_and_pull_through_the_default_remote(tiny_project: Project) -> None:
    """`make push` / `make pull`: outputs survive losing both the workspace and the cache."""
    tiny_project.run("dvc", "push")
    storage = tiny_project.path("dvc-storage")
    assert sum(1 for path in storage.rglob("*") if path.is_file()) >= 10
    model_file = tiny_project.path("models/model/model.skops")
    original = model_file.read_bytes()
    shutil.rmtree(tiny_project.path(".dvc/cache"))
    shutil.rmtree(tiny_project.path("models/model"))
    tiny_project.path("data/raw/dataset.parquet").unlink()
    tiny_project.run("dvc", "pull")
    assert model_file.read_bytes() == original
    assert tiny_project.path("data/raw/dataset.parquet").exists()
    assert "up to date" in tiny_project.run("dvc", "status").stdout


def test_experiment_with_a_changed_param(tiny_project: Project) -> None:
    tiny_project.run("git", "add", "-A")
    tiny_project.run("git", "commit", "-q", "-m", "first run")
    result = tiny_project.run("dvc", "exp", "run", "-S", "train.cv_threshold=0.3")
    assert "Running stage 'train'" in result.stdout
    shown = tiny_project.run("dvc", "exp", "show", "--json").stdout
    assert "0.3" in shown


def aliases(client: MlflowClient) -> dict[str, list[str]]:
    """Each version's aliases (search results do not carry them)."""
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    return {v.version: client.get_model_version(MODEL_NAME, v.version).aliases for v in versions}


def test_a_rerun_that_reproduces_the_model_registers_no_twin(tiny_project: Project) -> None:
    """Same data, params and code: the same fingerprint, found in the registry; no new
    version, the aliases stay, and the stage outputs name the same model."""
    mlflow.set_tracking_uri(tiny_project.tracking_uri)
    client = MlflowClient()
    before = aliases(client)
    mlmodel = tiny_project.path("models/model/MLmodel")
    fingerprint = yaml.safe_load(mlmodel.read_text())["metadata"]["model_fingerprint"]
    result = tiny_project.run("dvc", "repro", "--force", "--single-item", "evaluate")
    assert "already holds this model" in result.stdout + result.stderr
    assert aliases(client) == before
    assert "champion" in str(before)
    assert yaml.safe_load(mlmodel.read_text())["metadata"]["model_fingerprint"] == fingerprint
    twins = client.search_model_versions(
        f"name = '{MODEL_NAME}' and tags.model_fingerprint = '{fingerprint}'"
    )
    assert len(twins) == 1


def test_evaluate_finds_the_train_run_in_the_store_or_says_it_is_not_there(
    tiny_project: Project, tmp_path: Path
) -> None:
    """The selection holds no run id: evaluate looks the train stage's run up by the
    selection's fingerprint, and a store without it is a clear error, not a new run."""
    selection = json.loads(tiny_project.path("models/selection.json").read_text())
    assert "parent_run_id" not in selection
    assert "experiment_id" not in selection
    mlflow.set_tracking_uri(tiny_project.tracking_uri)
    experiment = mlflow.get_experiment_by_name(selection["experiment_name"])
    assert experiment is not None
    tagged = mlflow.search_runs(
        [experiment.experiment_id],
        filter_string="tags.selection_fingerprint != ''",
        output_format="pandas",
    )
    assert isinstance(tagged, pd.DataFrame)
    assert len(tagged) >= 1
    result = tiny_project.run(
        "python",
        "-m",
        "pipelines.evaluate",
        check=False,
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'other.db'}"},
        timeout=120,
    )
    assert result.returncode == 1
    assert "made this models/selection.json" in result.stdout + result.stderr
    assert "dvc repro --force train" in result.stdout + result.stderr


def test_unreachable_tracking_server_is_a_clear_error(tiny_project: Project) -> None:
    result = tiny_project.run(
        "python",
        "-m",
        "pipelines.train",
        check=False,
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
        timeout=120,
    )
    assert result.returncode == 1
    assert "http://127.0.0.1:9 is unreachable" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("cv", "n_split", 3, "train.cv.n_split: unknown key"),
        ("calibration", "method", "platt", "train.calibration.method: Input should be"),
        # Too few positives per fold to check a calibration: stops before any fit.
        ("calibration", "min_positives", 10_000, "train.calibration.min_positives=10000"),
    ],
)
def test_bad_params_name_the_key_and_change_nothing(
    tiny_project: Project, section: str, key: str, value: object, expected: str
) -> None:
    params_file = tiny_project.path("params.yaml")
    original = params_file.read_text()
    before = tiny_project.path("reports/evaluate/metrics.json").read_bytes()
    broken = yaml.safe_load(original)
    broken["train"].setdefault(section, {})[key] = value
    try:
        tiny_project.write_params(broken)
        result = tiny_project.run("dvc", "repro", check=False)
        assert result.returncode != 0
        assert expected in result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert tiny_project.path("reports/evaluate/metrics.json").read_bytes() == before
    finally:
        params_file.write_text(original)


def test_killed_stage_leaves_nothing_a_later_stage_could_read(tiny_project: Project) -> None:
    """SIGKILL `train` mid-way: its outputs are gone (DVC removed them), not half-written,
    and `evaluate` refuses to run with a message that says what to do."""
    process = subprocess.Popen(
        ["dvc", "repro", "--force", "--single-item", "train"],
        cwd=tiny_project.root,
        env=tiny_project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if " fit " in line:  # cross-validation has started
            break
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert not tiny_project.path("models/selection.json").exists()
    assert not tiny_project.path("models/out_of_fold.parquet").exists()
    result = tiny_project.run("python", "-m", "pipelines.evaluate", check=False)
    assert result.returncode == 1
    assert "run `dvc repro train`" in result.stdout
    status = tiny_project.run("dvc", "status").stdout
    assert "train" in status
    # The pipeline recovers: a repro re-runs what is missing.
    tiny_project.run("dvc", "repro")
    assert tiny_project.path("models/selection.json").exists()


# Runs the evaluate stage and SIGKILLs it at the moment the registry has just created the
# version, before the registry rule gives it an alias: the worst place to die.
_KILLED_MID_REGISTRATION = """
import os, runpy, signal
from fraud_detection.io import tracking
tracking._promote = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
runpy.run_module("pipelines.evaluate", run_name="__main__")
"""


def test_a_stage_killed_mid_registration_leaves_no_half_registered_version(
    tiny_project: Project,
) -> None:
    """A changed evaluate param makes a new model; the stage dies right after the registry
    created its version. The rerun (`dvc repro`) finds that version by its fingerprint and
    finishes it: one version, with its alias and the rule's tag, and no twin."""
    params_file = tiny_project.path("params.yaml")
    params = yaml.safe_load(params_file.read_text())
    params["evaluate"]["permutation_repeats"] = 3  # same model; a different fingerprint
    tiny_project.write_params(params)
    client = MlflowClient(tracking_uri=tiny_project.tracking_uri)
    before = {v.version for v in client.search_model_versions(f"name='{MODEL_NAME}'")}
    killed = tiny_project.run("python", "-c", _KILLED_MID_REGISTRATION, check=False)
    assert killed.returncode == -signal.SIGKILL
    new = [
        v for v in client.search_model_versions(f"name='{MODEL_NAME}'") if v.version not in before
    ]
    assert len(new) == 1
    assert not new[0].aliases
    assert "registry_rule" not in new[0].tags
    fingerprint = new[0].tags["model_fingerprint"]

    result = tiny_project.run("dvc", "repro")
    assert "finished now" in result.stdout + result.stderr
    versions = client.search_model_versions(
        f"name = '{MODEL_NAME}' and tags.model_fingerprint = '{fingerprint}'"
    )
    assert [v.version for v in versions] == [new[0].version]
    # Search results do not carry aliases: ask for the version itself.
    finished = client.get_model_version(MODEL_NAME, new[0].version)
    assert finished.aliases
    assert finished.tags["registry_rule"] in finished.aliases
    metadata = yaml.safe_load(tiny_project.path("models/model/MLmodel").read_text())["metadata"]
    assert metadata["model_fingerprint"] == fingerprint

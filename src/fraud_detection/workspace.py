"""The project's file layout: every path a stage, the service or the monitor reads or
writes by default, defined once, relative to the project root.

The stage scripts, the service's settings, the monitor and the params defaults take their
paths from here; dvc.yaml lists the same outputs (tests/test_dvc_yaml.py checks both
ways), and params.yaml's path keys hold the same values (tests/fraud_detection/
test_params.py checks every default against the file).
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")

# ------------------------------------------------------------------ pipeline outputs
RAW_DATA = Path("data/raw/dataset.parquet")
RAW_INFO = Path("data/raw/dataset.json")
FEATURES = Path("data/features/features.parquet")
SCHEMA = Path("data/features/schema.json")
TRAIN_SET = Path("data/split/train.parquet")
TEST_SET = Path("data/split/test.parquet")
SPLIT_SUMMARY = Path("reports/split.json")
LEADERBOARD_CSV = Path("reports/train/leaderboard.csv")
LEADERBOARD_MD = Path("reports/train/leaderboard.md")
CV_RESULTS = Path("reports/train/cv_results.csv")
CV_FOLDS = Path("reports/train/cv_folds.csv")
CV_SUMMARY = Path("reports/train/cv_summary.json")
SELECTION = Path("models/selection.json")
OUT_OF_FOLD = Path("models/out_of_fold.parquet")
MODEL_DIR = Path("models/model")
METRICS = Path("reports/evaluate/metrics.json")
PLOTS_DIR = Path("reports/evaluate/plots")
CURVES_DIR = Path("reports/evaluate/curves")
IMPORTANCE = Path("reports/evaluate/feature_importance.csv")
MODEL_CARD = Path("reports/evaluate/model_card.md")
REFERENCE = Path("data/reference/reference.parquet")
REFERENCE_INFO = REFERENCE.with_suffix(".json")
BASELINE_DIR = Path("reports/monitoring/baseline")
BASELINE_METRICS = Path("reports/monitoring/baseline.json")

# ------------------------------------------------------- what the service and the monitor use
# The service appends every prediction here; the monitor reads it.
PREDICTION_LOG = Path("logs/predictions.db")
# The replay appends the true labels here; the monitor joins them to the predictions.
LABELS = Path("logs/labels.parquet")
MONITOR_REPORTS = Path("reports/monitoring")
# What `make export-model` writes and the Docker image serves.
EXPORTED_MODEL = Path("build/model")

"""What every stage script shares: file locations, logging, and error reporting."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fraud_detection.errors import USER_ERRORS

PARAMS = Path("params.yaml")

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


def logger(stage: str) -> logging.Logger:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {stage:<8} | %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )
    # Quieten libraries that log their own progress at INFO.
    for noisy in ("mlflow", "alembic", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow warns when the environment has no pip (uv venvs don't); requirements are explicit.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    return logging.getLogger(stage)


def progress_logger(
    log: logging.Logger, what: str, every: float = 0.1
) -> Callable[[int, int], None]:
    """A progress callback that logs at most every ``every`` share of the work.

    Plain lines (no carriage returns) so CI logs stay readable.
    """
    next_mark = [every]

    def report(done: int, total: int) -> None:
        if total and (done / total >= next_mark[0] or done == total):
            log.info("%s %d/%d (%.0f%%)", what, done, total, 100 * done / total)
            while next_mark[0] <= done / total:
                next_mark[0] += every

    return report


def run(stage: str, main: Callable[[logging.Logger], str]) -> None:
    """Run a stage: ``main`` returns its one-line summary; user errors exit with code 1."""
    log = logger(stage)
    started = time.perf_counter()
    try:
        summary = main(log)
    except USER_ERRORS as exc:
        log.error("failed: %s", exc)
        sys.exit(1)
    log.info("done in %.1f s: %s", time.perf_counter() - started, summary)

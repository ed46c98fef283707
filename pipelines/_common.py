"""What every stage script shares: logging and error reporting (the file locations are
fraud_detection.workspace's)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from fraud_detection.errors import USER_ERRORS


def logger(stage: str) -> logging.Logger:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {stage:<8} | %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )
    # Quieten libraries that log their own progress at INFO.
    for noisy in ("mlflow", "alembic", "urllib3", "matplotlib", "lightgbm"):
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

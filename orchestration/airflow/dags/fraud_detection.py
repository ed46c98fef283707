"""Airflow schedules for the fraud-detection project: a daily drift check, a weekly retraining.

fraud_detection_monitoring (daily): monitor >> decide >> retrain | no_drift. The drift monitor
judges the last 24 h of the prediction log; on drift, `retrain` starts a run of the retraining
DAG. fraud_detection_retraining (weekly, or started by the monitor): `make train`, which runs
`dvc repro` and registers the selected model in MLflow.

The tasks run the project's own commands in its directory: FRAUD_PROJECT_DIR, by default the
clone this file lies in. A worker needs that clone, `make` and python3; Airflow needs none of
the project's packages (it lives in .venv-airflow, see orchestration/airflow/pyproject.toml).
`make airflow-check` loads this file with Airflow's DagBag and checks its shape.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task
from monitor_decision import MONITOR_COMMAND, NO_DRIFT, RETRAIN, after_monitor

# dags/ -> airflow/ -> orchestration/ -> the clone.
PROJECT_DIR = os.environ.get("FRAUD_PROJECT_DIR") or str(Path(__file__).resolve().parents[3])
RETRAINING_DAG_ID = "fraud_detection_retraining"
# Fixed and in the past: with catchup=False only the latest interval runs on deployment.
START = datetime(2025, 1, 1, tzinfo=UTC)
TAGS = ["fraud-detection"]

DEFAULT_ARGS = {
    "owner": "fraud-detection",
    # A retry covers the passing trouble (a busy disk, a locked MLflow store); a second
    # failure is worth a look, so no more than that.
    "retries": 1,
    "retry_delay": timedelta(minutes=10),
}


@dag(
    dag_id=RETRAINING_DAG_ID,
    # Mondays 03:00 UTC, before the day's drift check (06:00).
    schedule="0 3 * * 1",
    start_date=START,
    catchup=False,
    # Runs share the clone's data/, models/ and DVC lock: never two at once. A run started by
    # the monitor while one is going waits its turn.
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "training"],
    doc_md=__doc__,
)
def fraud_detection_retraining() -> None:
    BashOperator(
        task_id="train",
        bash_command="make --no-print-directory train",
        cwd=PROJECT_DIR,
        # A full `dvc repro` takes minutes; hours means it hangs.
        execution_timeout=timedelta(hours=2),
    )


@dag(
    dag_id="fraud_detection_monitoring",
    schedule="0 6 * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "monitoring"],
    doc_md=__doc__,
)
def fraud_detection_monitoring() -> None:
    # Ends with the monitor's exit code (0 or 1) as the task's result; fails on anything else.
    monitor = BashOperator(
        task_id="monitor",
        bash_command=MONITOR_COMMAND,
        cwd=PROJECT_DIR,
        output_processor=int,
        execution_timeout=timedelta(minutes=30),
    )

    @task.branch
    def decide(exit_code: int) -> str:
        return after_monitor(exit_code)

    # Retraining is the other DAG's job, so that all training runs share its max_active_runs=1.
    retrain = TriggerDagRunOperator(
        task_id=RETRAIN,
        trigger_dag_id=RETRAINING_DAG_ID,
        conf={"reason": "drift"},
        # A paused retraining DAG would queue the run silently: fail instead.
        fail_when_dag_is_paused=True,
    )
    decide(monitor.output) >> [retrain, EmptyOperator(task_id=NO_DRIFT)]


fraud_detection_retraining()
fraud_detection_monitoring()

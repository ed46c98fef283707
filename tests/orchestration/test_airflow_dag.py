"""The Airflow DAGs (orchestration/airflow): the drift decision here, the DAGs in real Airflow.

The project's environment has no Airflow. The monitor's exit code handling and the branch
decision are plain Python and shell (dags/monitor_decision.py), tested here directly. The
slow tests run `make airflow-check`, which installs Airflow in its own .venv-airflow (about
20 s from a warm uv cache) and loads, checks and runs the DAGs there; and check that a
broken DAG file fails that check with its name.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from monitoring.inputs import EXIT_DRIFT, EXIT_ERROR, EXIT_PASSED
from orchestration.airflow.dags import monitor_decision
from orchestration.airflow.dags.monitor_decision import (
    MONITOR_COMMAND,
    NO_DRIFT,
    RETRAIN,
    MonitorFailedError,
    after_monitor,
)

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = REPO / ".venv-airflow/bin/python"
CHECK_DAGS = REPO / "orchestration/airflow/check_dags.py"
DAG_IDS = ("fraud_detection_monitoring", "fraud_detection_retraining")
Result = subprocess.CompletedProcess[str]


def test_exit_codes_are_the_monitors() -> None:
    assert (monitor_decision.EXIT_PASSED, monitor_decision.EXIT_DRIFT) == (EXIT_PASSED, EXIT_DRIFT)
    assert monitor_decision.EXIT_ERROR == EXIT_ERROR


def test_drift_retrains_and_no_drift_does_not() -> None:
    assert after_monitor(EXIT_DRIFT) == RETRAIN
    assert after_monitor(EXIT_PASSED) == NO_DRIFT


@pytest.mark.parametrize("exit_code", [EXIT_ERROR, 3, -1])
def test_a_monitor_that_could_not_run_fails_the_run(exit_code: int) -> None:
    with pytest.raises(MonitorFailedError, match=f"exit code {exit_code}"):
        after_monitor(exit_code)


def run_monitor_command(project: Path, monitor_exit: int, install_exit: int = 0) -> Result:
    """MONITOR_COMMAND in a stand-in project: `make install` and the monitor exit as told."""
    (project / "Makefile").write_text(f"install:\n\t@exit {install_exit}\n")
    python = project / ".venv/bin/python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(f'#!/bin/sh\necho "monitor $*"\nexit {monitor_exit}\n')
    python.chmod(0o755)
    return subprocess.run(
        ["bash", "-c", MONITOR_COMMAND], cwd=project, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("monitor_exit", [EXIT_PASSED, EXIT_DRIFT])
def test_the_monitor_task_passes_on_a_verdict_and_ends_with_it(
    tmp_path: Path, monitor_exit: int
) -> None:
    result = run_monitor_command(tmp_path, monitor_exit)
    assert result.returncode == 0, result.stderr
    # Airflow keeps the last line of output as the task's result: the branch reads it.
    assert result.stdout.splitlines() == ["monitor -m monitoring", str(monitor_exit)]


def test_the_monitor_task_fails_when_the_monitor_could_not_run(tmp_path: Path) -> None:
    result = run_monitor_command(tmp_path, EXIT_ERROR)
    assert result.returncode == EXIT_ERROR
    assert "could not run (exit code 2)" in result.stderr


def test_the_monitor_task_fails_when_the_environment_cannot_be_installed(tmp_path: Path) -> None:
    result = run_monitor_command(tmp_path, EXIT_PASSED, install_exit=1)
    assert result.returncode != 0
    assert "monitor" not in result.stdout


def check_dags(*args: str) -> Result:
    return subprocess.run(
        [str(AIRFLOW_PYTHON), str(CHECK_DAGS), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def airflow_check() -> Result:
    """`make airflow-check`, once: it also creates .venv-airflow for the tests after it."""
    # Under `make test`, make's variables would make this make a sub-make of that one.
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAKE")}
    return subprocess.run(
        ["make", "--no-print-directory", "airflow-check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.slow
def test_airflow_loads_checks_and_runs_the_dags(airflow_check: Result) -> None:
    assert airflow_check.returncode == 0, airflow_check.stdout + airflow_check.stderr
    for dag_id in DAG_IDS:
        assert dag_id in airflow_check.stdout
    assert "airflow-check: OK" in airflow_check.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("from airflow.sdk import dag\n\ndef broken(:\n", "SyntaxError"),
        ("from airflow.sdk import dag\nimport no_such_module\n", "ModuleNotFoundError"),
    ],
    ids=["syntax-error", "missing-module"],
)
def test_a_broken_dag_file_fails_the_check_with_its_name(
    airflow_check: Result, tmp_path: Path, source: str, error: str
) -> None:
    if not AIRFLOW_PYTHON.exists():
        pytest.fail(f"make airflow-check did not create {AIRFLOW_PYTHON}:\n{airflow_check.stderr}")
    broken = tmp_path / "broken_dag.py"
    broken.write_text(source)
    result = check_dags("--dags-folder", str(tmp_path), "--no-run")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{broken}: import error" in result.stderr
    assert error in result.stderr
    assert "airflow-check: FAILED" in result.stderr

"""The drift monitor's part of the monitoring DAG, in plain Python (no Airflow import).

The main test suite has no Airflow, so what can go wrong here (reading the monitor's exit
code, choosing the branch) lives apart from the DAG file and is tested there on its own. The
DAG file imports it from the dags folder, which Airflow puts on sys.path. Airflow also parses
it in its scan for DAGs and finds none, which is harmless. (An .airflowignore entry would
spare that, but Airflow 3.3 reads the file with a pathspec API that pathspec 1.x deprecates,
and every scan would log a DeprecationWarning.)
"""

from __future__ import annotations

# `python -m monitoring`'s exit codes (monitoring/inputs.py; a test checks they agree). The
# DAG's environment does not have the project's packages, so they are repeated here.
EXIT_PASSED, EXIT_DRIFT, EXIT_ERROR = 0, 1, 2

# The task ids the branch chooses between.
RETRAIN = "retrain"
NO_DRIFT = "no_drift"

# Runs in the project directory. Not `make monitor`: make ends with 2 whenever a recipe fails,
# so drift (1) and "could not run" (2) would look the same. `make install` is the rest of what
# `make monitor` does (it syncs .venv when uv.lock changed). The monitor's exit code is the
# last line of output, which Airflow keeps as the task's result (XCom); drift must not fail
# the task, anything but 0 or 1 must, so the failure shows on the task that holds the log.
MONITOR_COMMAND = f"""\
set -eu
make --no-print-directory install
status=0
.venv/bin/python -m monitoring || status=$?
case "$status" in
  {EXIT_PASSED}|{EXIT_DRIFT}) echo "$status" ;;
  *) echo "the drift monitor could not run (exit code $status): see its message above" >&2
     exit "$status" ;;
esac
"""


class MonitorFailedError(RuntimeError):
    """The monitor ended with an exit code other than "no drift" or "drift"."""


def after_monitor(exit_code: int) -> str:
    """The task to run after the monitor: retrain on drift, nothing (no_drift) without.

    Anything else means the monitor did not judge the window: raise, so that the run fails
    instead of passing as "no drift".
    """
    if exit_code == EXIT_DRIFT:
        return RETRAIN
    if exit_code == EXIT_PASSED:
        return NO_DRIFT
    raise MonitorFailedError(
        f"the drift monitor ended with exit code {exit_code} ({EXIT_ERROR}: it could not run); "
        "see the monitor task's log"
    )

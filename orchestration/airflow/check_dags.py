"""Load the DAGs with real Airflow and check them: what `make airflow-check` runs.

    .venv-airflow/bin/python orchestration/airflow/check_dags.py [--dags-folder DIR] [--no-run]

1. Parse. The folder is loaded as Airflow's DAG processor loads it (a BundleDagBag, each DAG
   then serialized); an import or serialization error, a warning raised while importing a
   DAG file or a value that varies between parses fails the check and names the file.
2. Shape. The two DAGs exist, with their tasks and dependencies, schedules, catchup off,
   one run at a time, retries, a time-zone-aware start date and tags; `retrain` triggers the
   retraining DAG; the commands run in the clone this file lies in.
3. Run (skipped by --no-run). In a throwaway SQLite metadata DB, Airflow's dag.test() runs
   the monitoring DAG three times against a stand-in project whose monitor exits 0, 1 and 2,
   and the retraining DAG once: no drift skips `retrain`, drift queues a retraining run,
   "could not run" fails `monitor`. Task logs go to a file, printed only when a run goes wrong.

Exit code 0 when every check passes, 1 otherwise (each problem on its own line). AIRFLOW_HOME
is a temporary folder, removed afterwards: nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
BUNDLE = "dags-folder"  # the name of Airflow's default bundle, the dags folder
MONITORING, RETRAINING = "fraud_detection_monitoring", "fraud_detection_retraining"


@dataclass(frozen=True)
class Expected:
    schedule: str
    downstream: dict[str, set[str]]  # every task id and the ids of the tasks right after it
    tags: set[str]


EXPECTED = {
    MONITORING: Expected(
        schedule="0 6 * * *",
        downstream={
            "monitor": {"decide"},
            "decide": {"retrain", "no_drift"},
            "retrain": set(),
            "no_drift": set(),
        },
        tags={"fraud-detection", "monitoring"},
    ),
    RETRAINING: Expected(
        schedule="0 3 * * 1", downstream={"train": set()}, tags={"fraud-detection", "training"}
    ),
}

# The stand-in project for the runs: its monitor exits with $STAND_IN_MONITOR_EXIT, and any
# command but the ones the DAGs should run fails (3 is no exit code the monitor has).
STAND_IN_MAKEFILE = "install:\n\t@echo stand-in make install\ntrain:\n\t@echo stand-in make train\n"
STAND_IN_PYTHON = """#!/bin/sh
[ "$*" = "-m monitoring" ] || { echo "unexpected command: python $*" >&2; exit 3; }
echo "stand-in monitor, exit code $STAND_IN_MONITOR_EXIT"
exit "$STAND_IN_MONITOR_EXIT"
"""
# For each exit code of the monitor, the state each task of the monitoring DAG should end in.
OUTCOMES = {
    0: {"monitor": "success", "decide": "success", "no_drift": "success", "retrain": "skipped"},
    1: {"monitor": "success", "decide": "success", "no_drift": "skipped", "retrain": "success"},
    2: {
        "monitor": "failed",
        "decide": "upstream_failed",
        "no_drift": "upstream_failed",
        "retrain": "upstream_failed",
    },
}


def isolate_airflow(home: Path, dags_folder: Path) -> None:
    """Point Airflow at a throwaway home (config, logs, SQLite DB); set before importing it."""
    os.environ.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        # dag.test() registers the DAGs; paused, the drift run's trigger would be refused.
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
    )
    # The check is about the committed defaults: the commands run in this clone.
    os.environ.pop("FRAUD_PROJECT_DIR", None)


def parse(dags_folder: Path) -> tuple[Any, list[str]]:
    """The DagBag, and every error or warning Airflow's DAG processor would report."""
    from airflow.dag_processing.dagbag import BundleDagBag  # noqa: PLC0415  (after isolate_airflow)
    from airflow.serialization.serialized_objects import DagSerialization  # noqa: PLC0415
    from airflow.utils.dag_version_inflation_checker import (  # noqa: PLC0415
        check_dag_file_stability,
    )

    # Airflow records the warnings raised while it imports a DAG file; its deprecated imports
    # raise FutureWarning, which Python shows anyway, but DeprecationWarning would be hidden.
    warnings.simplefilter("default")
    bag = BundleDagBag(dags_folder, bundle_path=dags_folder, bundle_name=BUNDLE)
    problems = [
        f"{dags_folder / file}: import error:\n{error}" for file, error in bag.import_errors.items()
    ]
    problems += [
        f"{file}: warning while importing: {warning}"
        for file, warnings in bag.captured_warnings.items()
        for warning in warnings
    ]
    for dag in bag.dags.values():
        try:
            DagSerialization.to_dict(dag)
        except Exception as error:  # reported, as the DAG processor does
            problems.append(f"{dag.fileloc}: {dag.dag_id} cannot be serialized: {error!r}")
    for file in sorted(dags_folder.rglob("*.py")):
        stability = check_dag_file_stability(str(file))
        problems += [
            f"{file}: {warning['dag_id']}: {warning['message']}"
            for warning in stability.get_formatted_warnings(bag.dag_ids)
        ]
    return bag, problems


def check_shape(bag: Any) -> list[str]:
    problems = []
    for dag_id in sorted(set(bag.dags) - set(EXPECTED)):
        problems.append(f"{dag_id}: unexpected DAG (add it to EXPECTED in {Path(__file__).name})")
    for dag_id, expected in EXPECTED.items():
        dag = bag.dags.get(dag_id)
        if dag is None:
            problems.append(f"{dag_id}: missing")
            continue
        downstream = {task.task_id: set(task.downstream_task_ids) for task in dag.tasks}
        facts = {
            "tasks and the tasks right after them": (downstream, expected.downstream),
            "schedule": (dag.schedule, expected.schedule),
            "catchup": (dag.catchup, False),
            "max_active_runs": (dag.max_active_runs, 1),
            "tags": (set(dag.tags), expected.tags),
            "start_date has a time zone": (dag.start_date.tzinfo is not None, True),
        }
        problems += [
            f"{dag_id}: {name} is {actual!r}, expected {wanted!r}"
            for name, (actual, wanted) in facts.items()
            if actual != wanted
        ]
        for task in dag.tasks:
            if task.retries < 1 or task.retry_delay < timedelta(minutes=1):
                problems.append(f"{dag_id}.{task.task_id}: no retry, or one within a minute")
            if hasattr(task, "cwd") and task.cwd != str(ROOT):
                problems.append(f"{dag_id}.{task.task_id}: runs in {task.cwd}, not in {ROOT}")
    retrain = bag.dags.get(MONITORING) and bag.dags[MONITORING].task_dict.get("retrain")
    if retrain is not None and getattr(retrain, "trigger_dag_id", None) != RETRAINING:
        problems.append(f"{MONITORING}.retrain: does not trigger {RETRAINING}")
    return problems


@contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send everything written to stdout and stderr (Airflow's, the tasks') to a file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("a") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def stand_in_project(folder: Path) -> Path:
    (folder / ".venv/bin").mkdir(parents=True)
    (folder / "Makefile").write_text(STAND_IN_MAKEFILE)
    python = folder / ".venv/bin/python"
    python.write_text(STAND_IN_PYTHON)
    python.chmod(0o755)
    return folder


def run_dags(bag: Any, home: Path) -> list[str]:
    """Run both DAGs with dag.test() against a stand-in project; the problems found."""
    from airflow.models.dagrun import DagRun  # noqa: PLC0415  (after isolate_airflow)
    from airflow.utils.db import initdb  # noqa: PLC0415

    project = stand_in_project(home / "project")
    log = home / "runs.log"
    problems = []
    with output_to(log):
        initdb()
        for dag in bag.dags.values():
            for task in dag.tasks:
                task.retries = 0  # a retry would wait out retry_delay
                if hasattr(task, "cwd"):
                    task.cwd = str(project)
        # First, so that the retraining DAG is registered (unpaused) when drift triggers it.
        run = bag.dags[RETRAINING].test()
        if run.state != "success":
            problems.append(f"{RETRAINING}: the run ended {run.state}, expected success")
        for exit_code, expected in OUTCOMES.items():
            os.environ["STAND_IN_MONITOR_EXIT"] = str(exit_code)
            run = bag.dags[MONITORING].test()
            states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
            if states != expected:
                problems.append(
                    f"{MONITORING} with monitor exit code {exit_code}: task states {states}, "
                    f"expected {expected}"
                )
        triggered = DagRun.find(dag_id=RETRAINING)
        if [run.conf for run in triggered if run.conf] != [{"reason": "drift"}]:
            problems.append(f"drift did not queue one {RETRAINING} run with conf reason=drift")
    if problems:
        tail = log.read_text().splitlines()[-80:]
        problems.append("the runs' log ends with:\n" + "\n".join(tail))
    return problems


def describe(bag: Any) -> list[str]:
    lines = []
    for dag_id in sorted(bag.dags):
        dag = bag.dags[dag_id]
        edges = [
            f"{task.task_id} >> {', '.join(sorted(task.downstream_task_ids))}"
            for task in dag.tasks
            if task.downstream_task_ids
        ]
        lines.append(f"  {dag_id}  ({dag.schedule}): {'; '.join(edges) or ', '.join(dag.task_ids)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--dags-folder", type=Path, default=DAGS_FOLDER)
    cli.add_argument("--no-run", action="store_true", help="parse and check, run nothing")
    args = cli.parse_args(argv)
    dags_folder = args.dags_folder.resolve()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="airflow-check-") as tmp:
        home = Path(tmp)
        isolate_airflow(home, dags_folder)
        from airflow import __version__  # noqa: PLC0415  (after isolate_airflow)

        # Airflow logs each import error with its traceback: the problems below repeat them.
        with output_to(home / "parse.log"):
            bag, problems = parse(dags_folder)
        if not problems:
            print(f"Airflow {__version__} parsed {len(bag.dags)} DAGs from {dags_folder}")
            for line in describe(bag):
                print(line)
            problems = check_shape(bag)
        if not problems and not args.no_run:
            problems = run_dags(bag, home)
            if not problems:
                print(
                    "Ran both DAGs (dag.test) against a stand-in project: monitor exit 0 skips "
                    "retrain, 1 queues a retraining run, 2 fails the monitor task"
                )
    for problem in problems:
        print(f"airflow-check: {problem}", file=sys.stderr)
    verdict = "FAILED" if problems else "OK"
    out = sys.stderr if problems else sys.stdout
    print(f"airflow-check: {verdict} ({time.perf_counter() - started:.1f} s)", file=out)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m monitoring` as a user runs it: exit codes 0 (no drift), 1 (drift) and 2
(could not run, with a message and no traceback).

A run that gets past the params imports Evidently (about 7 s a process, even when it then
refuses its input): those processes are started together, once per module, and marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.conftest import WINDOW_END, WINDOW_START

REPO = Path(__file__).resolve().parents[2]
WINDOW = ["--start", WINDOW_START.isoformat(), "--end", WINDOW_END.isoformat()]
Result = subprocess.CompletedProcess[str]


def write_params(path: Path, monitor: dict[str, Any]) -> Path:
    """The repository's params.yaml with a ``monitor`` section (it has none: defaults)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["monitor"] = monitor
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def cli(project: Path, *args: str) -> Result:
    return subprocess.run(
        [sys.executable, "-m", "monitoring", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_refused(result: Result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder with params.yaml; the monitor's default paths are relative to it."""
    root = tmp_path_factory.mktemp("project")
    write_params(root / "params.yaml", {"min_rows": 100, "keep_reports": 5})
    return root


@pytest.fixture(scope="module")
def runs(
    project: Path, steady_log: Path, drifted_log: Path, reference_file: Path
) -> dict[str, Result]:
    """Every command that imports Evidently, run in parallel (one per core)."""
    not_a_log = project / "notes.db"
    not_a_log.write_text("these are notes, not a SQLite database\n", encoding="utf-8")
    inputs = ["--reference", str(reference_file), *WINDOW]
    commands = {
        "no-drift": ["--log", str(steady_log), "--out", "out-steady", *inputs],
        "drift": ["--log", str(drifted_log), "--out", "out-drift", *inputs],
        "missing-log": ["--log", "logs/absent.db", "--out", "out-missing-log", *inputs],
        "not-a-log": ["--log", str(not_a_log), "--out", "out-not-a-log", *inputs],
        "missing-reference": [
            *["--log", str(steady_log), "--reference", "data/absent.parquet"],
            *["--out", "out-missing-reference", *WINDOW],
        ],
        "empty-window": [
            *["--log", str(steady_log), "--reference", str(reference_file)],
            *["--out", "out-empty", "--end", "2020-01-01T00:00:00Z"],
        ],
    }
    with ThreadPoolExecutor(max_workers=min(len(commands), os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(cli, project, *args) for name, args in commands.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.slow
def test_no_drift_exits_0_with_one_line_on_stdout(runs: dict[str, Result], project: Path) -> None:
    result = runs["no-drift"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("NO DRIFT: gate passed: 0 of 4 features drifted")
    assert result.stdout.count("\n") == 1
    assert "Traceback" not in result.stderr
    out = project / "out-steady"
    assert result.stdout.rstrip().endswith(f"-> {Path('out-steady') / 'latest-drift.html'}")
    for name in ("latest-drift.html", "latest-drift.json", "latest-summary.json", "history.db"):
        assert (out / name).is_file(), name


@pytest.mark.slow
def test_drift_exits_1_and_names_the_feature(runs: dict[str, Result]) -> None:
    result = runs["drift"]
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("DRIFT: gate failed")
    assert "1 of 4 features drifted (velocity" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        (
            "missing-log",
            ["monitor could not run: no prediction log at logs/absent.db", "make serve"],
        ),
        ("not-a-log", ["monitor could not run: ", "is not a readable prediction log"]),
        ("missing-reference", ["no reference data at data/absent.parquet", "dvc repro reference"]),
        ("empty-window", ["monitor could not run: only 0 usable rows", "monitor.min_rows"]),
    ],
)
def test_inputs_it_cannot_use_exit_2_with_a_message(
    runs: dict[str, Result], project: Path, case: str, fragments: list[str]
) -> None:
    assert_refused(runs[case], *fragments)
    assert not (project / f"out-{case}").exists()


@pytest.mark.parametrize(
    ("monitor", "fragments"),
    [
        ({"min_rowz": 100}, ["monitor.min_rowz: unknown key"]),
        ({"min_rows": 0}, ["monitor.min_rows: Input should be greater than 0 (got 0)"]),
        ({"numeric_method": "ks"}, ["monitor.numeric_method:"]),
    ],
    ids=["unknown-key", "bad-value", "p-value-method"],
)
def test_invalid_monitor_params_exit_2_naming_the_key(
    project: Path, tmp_path: Path, monitor: dict[str, Any], fragments: list[str]
) -> None:
    params = write_params(tmp_path / "params.yaml", monitor)
    result = cli(project, "--params", str(params))
    assert_refused(result, f"monitor could not run: {params} is invalid", *fragments)


def test_an_end_that_is_not_iso_is_a_usage_error(project: Path) -> None:
    result = cli(project, "--end", "yesterday")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: python -m monitoring")
    assert "argument --end: 'yesterday' is not an ISO 8601 time" in result.stderr


def test_a_missing_params_file_exits_2(project: Path) -> None:
    assert_refused(cli(project, "--params", "absent.yaml"), "absent.yaml not found")

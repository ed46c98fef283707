"""notebooks/explore.ipynb runs on a real Jupyter kernel, so it cannot rot unnoticed.

The slow test runs the pipeline with tiny params and executes the notebook there; the fast
ones check the committed notebook and how the runner (notebooks/run.py) reports failures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
from nbformat import NotebookNode

from fraud_detection.schema import FeatureSchema
from notebooks.run import (
    PIPELINE_OUTPUTS,
    CellFailedError,
    error_outputs,
    execute,
    read_notebook,
)
from tests.pipelines.project import REPO, TINY_OVERRIDES, Project, make_project, merged, repo_params

NOTEBOOK = REPO / "notebooks" / "explore.ipynb"
RUNNER = REPO / "notebooks" / "run.py"
MAX_BYTES = 1_500_000
# One per chart: daily fraud, amounts, features by class, leaderboard, threshold, importance.
MIN_IMAGES = 6


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project with tiny params, run up to the evaluate stage (all the notebook reads)."""
    project = make_project(
        tmp_path_factory.mktemp("project"), merged(repo_params(), TINY_OVERRIDES)
    )
    project.run("dvc", "repro", "evaluate")
    return project


@pytest.fixture
def placeholder_project(tmp_path: Path) -> Path:
    """A folder where every pipeline output the runner checks for exists, empty."""
    root = tmp_path / "project"
    for name in PIPELINE_OUTPUTS:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix:
            path.touch()
        else:
            path.mkdir()
    return root


def new_cell(kind: str, source: str) -> dict[str, Any]:
    if kind == "markdown":
        return {"cell_type": "markdown", "metadata": {}, "source": source}
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": source,
    }


def scratch_notebook(path: Path, *cells: dict[str, Any]) -> Path:
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    content = {
        "cells": list(cells),
        "metadata": {"kernelspec": kernel},
        "nbformat": 4,
        "nbformat_minor": 4,
    }
    path.write_text(json.dumps(content, indent=1), encoding="utf-8")
    return path


def code_cells(notebook: NotebookNode) -> list[NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def images(notebook: NotebookNode) -> list[str]:
    return [
        output["data"]["image/png"]
        for cell in code_cells(notebook)
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]


def printed(notebook: NotebookNode) -> str:
    return "".join(
        output["text"]
        for cell in code_cells(notebook)
        for output in cell.outputs
        if output.get("output_type") == "stream"
    )


def run_in_place(notebook: Path, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The runner's command line, as `make notebook` calls it, on ``notebook`` in ``cwd``."""
    return subprocess.run(
        [sys.executable, str(RUNNER), str(notebook), "--in-place", "--cwd", str(cwd)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_committed_notebook_is_valid_and_fully_executed() -> None:
    assert NOTEBOOK.stat().st_size < MAX_BYTES
    notebook = read_notebook(NOTEBOOK)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    cells = code_cells(notebook)
    assert len(cells) >= 10
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs, f"cell {index} was saved without outputs: run `make notebook`"
    # Executed top to bottom in a single session, every cell once.
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1))
    assert error_outputs(notebook) == []
    assert len(images(notebook)) >= MIN_IMAGES
    assert "Fraud share, training period:" in printed(notebook)
    # Outputs must not carry the machine they were made on.
    assert str(REPO) not in NOTEBOOK.read_text(encoding="utf-8")


def test_runner_asks_for_make_train_where_the_pipeline_has_not_run(tmp_path: Path) -> None:
    copy = tmp_path / "explore.ipynb"
    copy.write_bytes(NOTEBOOK.read_bytes())
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_in_place(copy, cwd=empty)
    assert result.returncode == 2
    assert "run `make train` first" in result.stderr
    assert "data/split/train.parquet" in result.stderr
    assert "Traceback" not in result.stderr
    assert copy.read_bytes() == NOTEBOOK.read_bytes()


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("ratio = total / 0", "ZeroDivisionError: division by zero"),
        # The last line's value fails to display: the kernel's reply names no exception.
        (
            "class Unrenderable:\n"
            "    def _repr_html_(self):\n"
            "        raise RuntimeError('cannot render')\n\n"
            "Unrenderable()",
            "RuntimeError: cannot render",
        ),
    ],
    ids=["raises", "result-cannot-display"],
)
def test_runner_names_the_failing_cell_and_keeps_the_notebook(
    tmp_path: Path, placeholder_project: Path, source: str, error: str
) -> None:
    path = scratch_notebook(
        tmp_path / "failing.ipynb",
        new_cell("markdown", "A cell that works, then one that does not."),
        new_cell("code", "total = 1"),
        new_cell("code", source),
        new_cell("code", "print('never reached')"),
    )
    before = path.read_bytes()
    result = run_in_place(path, cwd=placeholder_project)
    assert result.returncode == 1
    assert f"cell 2 (`{source.splitlines()[0]}`)" in result.stderr
    assert f"failed: {error}" in result.stderr
    assert "left unchanged" in result.stderr
    assert "Traceback" not in result.stderr
    assert path.read_bytes() == before


def test_kernel_is_this_interpreter_and_display_errors_fail_the_run(
    tmp_path: Path, placeholder_project: Path
) -> None:
    # IPython reports an exception raised by display() as an error output but lets the cell
    # run on and succeed (plt.show() with a figure that cannot render does this), so nbclient
    # raises nothing: the runner must still fail.
    path = scratch_notebook(
        tmp_path / "display.ipynb",
        new_cell(
            "code",
            "import os, sys\nimport fraud_detection\nprint(sys.executable)\nprint(os.getcwd())",
        ),
        new_cell(
            "code",
            "from IPython.display import display\n\n"
            "class Unrenderable:\n"
            "    def _repr_html_(self):\n"
            "        raise RuntimeError('cannot render')\n\n"
            "display(Unrenderable())\n"
            "print('the cell went on')",
        ),
    )
    with pytest.raises(CellFailedError, match="RuntimeError: cannot render") as caught:
        execute(path, placeholder_project, timeout=120)
    assert caught.value.cell_index == 1
    assert "the cell went on" in str(caught.value.notebook.cells[1].outputs)
    first = caught.value.notebook.cells[0].outputs
    # The two prints arrive as one output, whatever the kernel's timing.
    assert len(first) == 1
    # The venv's own kernel (fraud_detection imported), started in the given folder.
    assert first[0]["text"] == f"{sys.executable}\n{placeholder_project.resolve()}\n"


@pytest.mark.slow
def test_notebook_runs_on_a_tiny_pipeline_run(tiny_project: Project) -> None:
    notebook = execute(NOTEBOOK, tiny_project.root, timeout=300)
    assert error_outputs(notebook) == []
    assert all(cell.outputs for cell in code_cells(notebook))
    assert len(images(notebook)) >= MIN_IMAGES
    text = printed(notebook)
    # The figures are the tiny project's, not the repository's.
    schema = FeatureSchema.model_validate_json(
        tiny_project.path("data/features/schema.json").read_text()
    )
    train = pd.read_parquet(tiny_project.path("data/split/train.parquet"))
    share = train[schema.target].mean()
    assert f"Fraud share, training period: {share:.2%}" in text
    metrics = json.loads(tiny_project.path("reports/evaluate/metrics.json").read_text())
    assert f"Test AP from models/model: {metrics['average_precision']:.4f}" in text
    selection = json.loads(tiny_project.path("models/selection.json").read_text())
    assert f"Champion: {selection['label']}" in text

"""Execute a notebook on a real Jupyter kernel against the pipeline's outputs.

    python notebooks/run.py notebooks/explore.ipynb            # check that it runs
    python notebooks/run.py notebooks/explore.ipynb --in-place # and save its outputs

The kernel starts in ``--cwd`` (default: the current folder), which must hold the outputs of
``make train``. A failing cell is reported by its index with the error, and the notebook file
is then left untouched; the exit code is 1 when a cell fails and 2 when the notebook cannot
run at all (no pipeline outputs, no such notebook).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

# What the notebooks read, relative to the project root: `make train` writes all of them.
PIPELINE_OUTPUTS = (
    "data/features/schema.json",
    "data/split/train.parquet",
    "data/split/test.parquet",
    "models/selection.json",
    "models/model",
    "reports/train/leaderboard.csv",
    "reports/train/cv_folds.csv",
    "reports/train/cv_summary.json",
    "reports/evaluate/metrics.json",
    "reports/evaluate/feature_importance.csv",
)
KERNEL = "python3"
EXIT_CELL_FAILED = 1
EXIT_CANNOT_RUN = 2


class NotebookRunError(Exception):
    """The notebook could not be executed to the end; the message says why."""

    exit_code = EXIT_CANNOT_RUN


class MissingOutputsError(NotebookRunError):
    """The pipeline has not produced what the notebook reads."""


class CellFailedError(NotebookRunError):
    """A cell raised, timed out or killed the kernel; ``notebook`` holds the outputs so far."""

    exit_code = EXIT_CELL_FAILED

    def __init__(self, message: str, cell_index: int | None, notebook: NotebookNode) -> None:
        super().__init__(message)
        self.cell_index = cell_index
        self.notebook = notebook


def read_notebook(path: Path) -> NotebookNode:
    notebook: NotebookNode = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    return notebook


def write_notebook(notebook: NotebookNode, path: Path) -> None:
    nbformat.write(notebook, path)  # type: ignore[no-untyped-call]


def missing_outputs(root: Path) -> list[str]:
    return [name for name in PIPELINE_OUTPUTS if not (root / name).exists()]


def execute(path: Path, cwd: Path, timeout: int = 300) -> NotebookNode:
    """Run every cell of the notebook at ``path`` with ``cwd`` as the kernel's folder.

    ``timeout`` bounds each cell, in seconds. Returns the notebook with its new outputs;
    raises :class:`MissingOutputsError` or :class:`CellFailedError`.
    """
    missing = missing_outputs(cwd)
    if missing:
        raise MissingOutputsError(
            f"{cwd} lacks the pipeline outputs the notebook reads ({', '.join(missing)}): "
            "run `make train` first"
        )
    try:
        notebook = read_notebook(path)
    except (OSError, ValueError) as error:  # nbformat's NotJSONError is a ValueError
        raise NotebookRunError(f"cannot read the notebook {path}: {error}") from error
    # The kernel named python3 is ipykernel's own, launched with this interpreter.
    # No timing metadata: executing twice gives the same file.
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name=KERNEL,
        record_timing=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    started: list[int] = []

    def on_cell_start(cell: NotebookNode, cell_index: int) -> None:
        started.append(cell_index)

    client.on_cell_start = on_cell_start

    def failed(problem: str, index: int | None) -> CellFailedError:
        where = "a cell" if index is None else describe_cell(notebook, index)
        return CellFailedError(f"{where} of {path} {problem}", index, notebook)

    try:
        client.execute()
    except CellExecutionError as error:
        index = started[-1] if started else None
        # The cell's own error output names the exception best: when the result of the last
        # line fails to display, the kernel's reply carries no exception name.
        shown = [output for i, output in error_outputs(notebook) if i == index]
        name, value = (
            (shown[-1].get("ename"), shown[-1].get("evalue"))
            if shown
            else (error.ename, error.evalue)
        )
        raise failed(f"failed: {name}: {value}", index) from error
    except CellTimeoutError as error:
        raise failed(f"ran longer than {timeout} s", started[-1] if started else None) from error
    except DeadKernelError as error:
        raise failed("killed the kernel", started[-1] if started else None) from error
    merge_adjacent_streams(notebook)
    # IPython catches some errors itself, e.g. a figure that fails to render when shown: the
    # cell then "succeeds" with an error among its outputs, which nbclient does not raise.
    errors = error_outputs(notebook)
    if errors:
        index, output = errors[0]
        raise failed(f"failed: {output.get('ename')}: {output.get('evalue')}", index)
    return notebook


def describe_cell(notebook: NotebookNode, index: int) -> str:
    """``cell 7 (`first line of its code`)``: cells count from 0, markdown ones included."""
    lines = [line for line in str(notebook.cells[index].source).splitlines() if line.strip()]
    start = lines[0].strip() if lines else ""
    return f"cell {index} (`{start[:60]}`)"


def error_outputs(notebook: NotebookNode) -> list[tuple[int, NotebookNode]]:
    """Every error output of the notebook, with the index of its cell."""
    return [
        (index, output)
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]


def merge_adjacent_streams(notebook: NotebookNode) -> None:
    """Join consecutive prints of a cell into one output.

    How many stream messages the kernel sends for the same prints depends on timing; joined,
    the saved notebook no longer changes from one run to the next.
    """
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        merged: list[NotebookNode] = []
        for output in cell.get("outputs", []):
            previous = merged[-1] if merged else None
            if (
                previous is not None
                and output.get("output_type") == "stream"
                and previous.get("output_type") == "stream"
                and previous.get("name") == output.get("name")
            ):
                previous["text"] += output["text"]
            else:
                merged.append(output)
        cell["outputs"] = merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("notebook", type=Path)
    parser.add_argument(
        "--in-place", action="store_true", help="save the outputs into the notebook file"
    )
    parser.add_argument(
        "--cwd",
        type=Path,
        default=Path(),
        help="the project folder holding the pipeline outputs (default: the current folder)",
    )
    parser.add_argument("--timeout", type=int, default=300, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    try:
        notebook = execute(args.notebook, args.cwd.resolve(), args.timeout)
    except NotebookRunError as error:
        print(f"run.py: {error}", file=sys.stderr)
        if isinstance(error, CellFailedError):
            print(f"run.py: {args.notebook} left unchanged", file=sys.stderr)
        return error.exit_code
    if args.in_place:
        write_notebook(notebook, args.notebook)
        print(f"executed {args.notebook} and saved its outputs")
    else:
        print(f"executed {args.notebook}: every cell ran (outputs not saved; see --in-place)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

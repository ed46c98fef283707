"""Reading inputs with clear errors, and writing outputs atomically.

Every output is written to a temporary name beside its target and renamed into place
only once complete, so a stage that is killed halfway leaves either the previous file or
nothing, never a truncated file a later stage could read.
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from fraud_detection.errors import DataValidationError, MissingInputError, ParamsError
from fraud_detection.params import Params, parse_params


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``target``, on error it is removed.

    Works for files and directories (e.g. an MLflow model folder).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    temporary = staging / target.name
    try:
        yield temporary
        if not temporary.exists():
            raise RuntimeError(f"nothing was written for {target}")
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists() and temporary.is_dir():  # a file becomes a folder of parts
            target.unlink()
        temporary.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_parquet(frame: pd.DataFrame, target: Path | str) -> None:
    with atomic_path(target) as temporary:
        frame.to_parquet(temporary, index=False)


def write_json(payload: Any, target: Path | str) -> None:
    if isinstance(payload, BaseModel):
        text = payload.model_dump_json(indent=2)
    else:
        text = json.dumps(payload, indent=2, sort_keys=False, default=str)
    write_text(text + "\n", target)


def write_text(text: str, target: Path | str) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(text, encoding="utf-8")


def read_parquet(
    path: Path | str,
    *,
    made_by: str,
    columns: list[str] | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
) -> pd.DataFrame:
    """A stage's Parquet input (a file, or a folder of files read as one table, in order).

    ``columns`` and ``filters`` (pyarrow's: ``[(column, op, value), ...]``, all must hold)
    read less: row groups and files whose statistics rule them out are not read at all.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(
            f"{path} does not exist; it is made by the '{made_by}' stage: run `dvc repro {made_by}`"
        )
    return parquet_frame(path, columns=columns, filters=filters)


def parquet_frame(
    path: Path | str,
    columns: list[str] | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
) -> pd.DataFrame:
    """A Parquet file as pandas reads it, without Arrow's thread pools.

    `pd.read_parquet` reads on Arrow's CPU and I/O pools; a process that exits soon after
    now and then aborts in Arrow's teardown ("terminate called without an active
    exception", exit 134; apache/arrow#34314, still in pyarrow 26). Seen here in 3% of
    the monitor's runs on two busy cores; none in 200 runs read this way, at the same
    speed on 2 cores (0.18 s for 1.8 million rows of 19 columns either way).
    """
    table = pq.read_table(
        path, columns=columns, filters=filters, use_threads=False, pre_buffer=False
    )
    frame: pd.DataFrame = table.to_pandas(use_threads=False)
    return frame


def read_json(path: Path | str, *, made_by: str) -> Any:
    path = Path(path)
    if not path.exists():
        raise MissingInputError(
            f"{path} does not exist; it is made by the '{made_by}' stage: run `dvc repro {made_by}`"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate params.yaml; errors name the file and the offending keys.

    The file is read as DVC reads it (ruamel.yaml, YAML 1.2): ``Yes``, ``No``, ``on``
    and ``off`` are text, ``1e-3`` is a number, and a key given twice is an error. PyYAML
    (YAML 1.1) would read ``positive_label: Yes`` as ``True`` and keep the last of two
    keys without a word.
    """
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found; run the pipeline from the project root")
    try:
        raw = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    return parse_params(raw, source=str(path))


def _yaml_problem(error: YAMLError) -> str:
    """One line: where the parser stopped and why (ruamel's own text spans many lines)."""
    if not isinstance(error, MarkedYAMLError) or error.problem is None:
        return " ".join(str(error).split())
    mark = error.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = f"{where}{error.problem}"
    if "duplicate key" in error.problem:
        problem += "; a key may appear once in its section: keep one of them"
    return problem


def read_csv_table(path: Path | str) -> pd.DataFrame:
    """Read a user's CSV, turning the usual failures into actionable messages."""
    path = Path(path)
    if not path.exists():
        raise DataValidationError(
            f"CSV file {path} not found; put the file there or set data.csv.path in params.yaml"
        )
    if path.is_dir():
        raise DataValidationError(f"data.csv.path {path} is a directory; point it at a .csv file")
    if path.stat().st_size == 0:
        raise DataValidationError(f"CSV file {path} is empty (0 bytes)")
    try:
        frame = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"CSV file {path} has no header and no rows") from None
    except UnicodeDecodeError as exc:
        # Excel on Windows writes its "CSV" in the system's code page (cp1252, latin-1).
        command = conversion_command(path, "encoding='cp1252'", ".utf8.csv")
        raise DataValidationError(
            f"CSV file {path} is not UTF-8 text (it holds the byte 0x{exc.object[exc.start]:02x}"
            f"); save it as 'CSV UTF-8', or convert it with {command} (cp1252: Windows in "
            "Western Europe and the Americas), then set data.csv.path to the new file"
        ) from None
    except pd.errors.ParserError as exc:
        raise DataValidationError(f"CSV file {path} could not be parsed: {exc}") from None
    _check_separator(path, frame)
    _check_unique_header(path)
    return frame


def conversion_command(path: Path, read_arguments: str, suffix: str) -> str:
    """The one-line command that rewrites ``path`` as the comma-separated UTF-8 file with
    decimal points the pipeline reads, into ``path`` with ``suffix``; the messages about
    a spreadsheet's export give it, ready to run."""
    converted = path.with_suffix(suffix)
    return (
        f"python -c \"import pandas as pd; pd.read_csv('{path}', {read_arguments})"
        f".to_csv('{converted}', index=False)\""
    )


def _check_unique_header(path: Path) -> None:
    """pandas renames a repeated column name (Amount, Amount.1) without a word: a second
    Amount would train as another feature, or the target be read from the wrong one."""
    with path.open(encoding="utf-8-sig", newline="") as text:
        header = next(csv.reader(text), [])
    # Blank names are pandas' "Unnamed: n" columns, named apart (csv_source checks them).
    repeated = sorted({name for name in header if name.strip() and header.count(name) > 1})
    if repeated:
        raise DataValidationError(
            f"CSV file {path} names {', '.join(map(repr, repeated))} more than once in its "
            "header; give each column its own name"
        )


# What spreadsheets write instead of commas (Excel in most of Europe: ";" and "1,5").
_OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "bars"}


def _check_separator(path: Path, frame: pd.DataFrame) -> None:
    """A header read as one column that holds another separator: the file is not comma-
    separated. Guessing its decimal mark could misread every number, so say how to
    convert it rather than read it (a number read wrongly would pass as a category)."""
    if len(frame.columns) != 1:
        return
    header = str(frame.columns[0])
    for separator, name in _OTHER_SEPARATORS.items():
        if separator in header:
            shown = separator.replace("\t", "\\t")
            command = conversion_command(path, f"sep='{shown}'", ".comma.csv")
            raise DataValidationError(
                f"CSV file {path} is separated by {name}, not commas (its header reads as "
                f"one column: {header[:60]!r}). The pipeline reads comma-separated files: "
                f"save it as 'CSV UTF-8 (comma delimited)', or convert it with {command} "
                "(add decimal=',' to read_csv if its numbers are written 1,5), then set "
                "data.csv.path to the new file"
            )

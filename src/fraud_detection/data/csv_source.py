"""Validate and normalise a user's CSV table: binary target, numeric and categorical features.

Reading the file is the caller's job; everything here works on a DataFrame and either
returns a clean one or raises :class:`DataValidationError` with a message that names the
column or value at fault and how to fix it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fraud_detection.data.dataset import DatasetInfo
from fraud_detection.errors import DataValidationError
from fraud_detection.io.files import conversion_command
from fraud_detection.params import CsvParams
from fraud_detection.schema import Feature, FeatureSchema

# An object column is taken for a numeric one with a few bad cells (rather than a
# categorical one) when at least this share of its non-empty cells parse as numbers.
NUMERIC_MAJORITY = 0.9
MIN_POSITIVES = 2


def prepare_csv(frame: pd.DataFrame, params: CsvParams) -> tuple[pd.DataFrame, DatasetInfo]:
    """Check the table and return it with a 0/1 target and typed feature columns."""
    if frame.empty or len(frame.columns) == 0:
        raise DataValidationError("the CSV file has no data rows; check data.csv.path")
    _check_columns_exist(frame, params)
    _check_named(frame, params)
    target = _binary_target(frame[params.target], params)
    feature_columns = [
        c
        for c in frame.columns
        if c not in {params.target, params.time_column, *params.drop_columns}
    ]
    if not feature_columns:
        raise DataValidationError(
            "no feature columns are left after removing the target, the time column and "
            "data.csv.drop_columns; the model needs at least one input"
        )
    clean = pd.DataFrame(index=frame.index)
    numeric, categorical = [], []
    for column in feature_columns:
        if column not in params.categorical_columns:
            _check_decimal_mark(frame[column], column, Path(params.path))
        if column in params.categorical_columns or _is_categorical(frame[column]):
            clean[column] = _as_category_strings(frame[column])
            categorical.append(column)
        else:
            clean[column] = _as_numbers(frame[column], column)
            numeric.append(column)
    passthrough = [c for c in params.drop_columns if c in frame.columns]
    for column in passthrough:
        clean[column] = frame[column]
    if params.time_column:
        clean[params.time_column] = _time_order(frame[params.time_column], params.time_column)
    clean[params.target] = target
    positives = int(target.sum())
    info = DatasetInfo(
        source="csv",
        target=params.target,
        positive_label=params.positive_label if params.positive_label is not None else 1,
        time_column=params.time_column,
        numeric=numeric,
        categorical=categorical,
        passthrough=passthrough,
        rows=len(clean),
        positives=positives,
    )
    return clean.reset_index(drop=True), info


def _check_columns_exist(frame: pd.DataFrame, params: CsvParams) -> None:
    available = ", ".join(map(str, frame.columns[:20]))
    wanted = {
        "data.csv.target": [params.target],
        "data.csv.time_column": [params.time_column] if params.time_column else [],
        "data.csv.drop_columns": params.drop_columns,
        "data.csv.categorical_columns": params.categorical_columns,
    }
    for key, columns in wanted.items():
        for column in columns:
            if column not in frame.columns:
                raise DataValidationError(
                    f"column '{column}' named by {key} is not in the CSV; "
                    f"its columns are: {available}"
                )


def _check_named(frame: pd.DataFrame, params: CsvParams) -> None:
    """A column without a name in the header (pandas reads it as "Unnamed: n") is most
    often a saved index, pandas' to_csv without index=False: as a feature it is the row
    number, which leaks the order the file was sorted in. It is kept only when listed."""
    used = {params.target, params.time_column, *params.drop_columns, *params.categorical_columns}
    unnamed = [
        str(column)
        for column in frame.columns
        if str(column).startswith("Unnamed: ") and column not in used
    ]
    if unnamed:
        listed = ", ".join(f"'{name}'" for name in unnamed)
        raise DataValidationError(
            f"the CSV's header gives no name to {len(unnamed)} column(s), read as {listed}: "
            "a first one is usually a saved row index (pandas' to_csv without index=False), "
            "blank ones at the end trailing commas; list them in data.csv.drop_columns to "
            "keep them out of the model, or name them in the header"
        )


def _binary_target(values: pd.Series, params: CsvParams) -> pd.Series:
    name = params.target
    if values.isna().any():
        rows = _row_numbers(values.isna())
        raise DataValidationError(
            f"target column '{name}' is empty in {values.isna().sum()} row(s) (CSV lines {rows}); "
            "fill or remove those rows"
        )
    distinct = pd.unique(values)
    if params.positive_label is None:
        as_text = {str(v).strip().lower() for v in distinct}
        if not as_text <= {"0", "1", "0.0", "1.0", "true", "false"}:
            raise DataValidationError(
                f"target column '{name}' has values {_show(distinct)}, not 0/1; set "
                "data.csv.positive_label to the value of the positive class (the rows to flag)"
            )
        target = values.map(lambda v: str(v).strip().lower() in {"1", "1.0", "true"})
    else:
        if len(distinct) > 2:
            raise DataValidationError(
                f"target column '{name}' has {len(distinct)} distinct values "
                f"({_show(distinct)}); a binary target has exactly two"
            )
        positive = str(params.positive_label)
        if positive not in {str(v) for v in distinct}:
            raise DataValidationError(
                f"data.csv.positive_label {params.positive_label!r} does not occur in target "
                f"column '{name}' (values: {_show(distinct)})"
            )
        target = values.map(lambda v: str(v) == positive)
    target = target.astype(np.int8)
    _check_both_classes(target, name)
    return target


def _check_both_classes(target: pd.Series, name: str) -> None:
    positives = int(target.sum())
    if positives == 0 or positives == len(target):
        only = 1 if positives else 0
        raise DataValidationError(
            f"target column '{name}' holds a single class ({only} in all {len(target)} rows); "
            "a classifier needs rows of both classes"
        )
    if positives < MIN_POSITIVES:
        raise DataValidationError(
            f"target column '{name}' has only {positives} positive row(s); at least "
            f"{MIN_POSITIVES} are needed to hold some out for testing"
        )


# A number written with a decimal comma ("1,5", "1.234,56"): a spreadsheet's export in
# most of Europe. Read as text it would become a category with a level per amount.
_DECIMAL_COMMA = r"^\s*[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+\s*$"


def _check_decimal_mark(column: pd.Series, name: str, path: Path) -> None:
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return
    cells = column.dropna().astype(str)
    if cells.empty:
        return
    comma = cells.str.match(_DECIMAL_COMMA)
    numbers = pd.to_numeric(cells, errors="coerce").notna()
    if comma.any() and (comma | numbers).mean() >= NUMERIC_MAJORITY:
        found = comma.reindex(column.index, fill_value=False)
        command = conversion_command(path, "decimal=','", ".points.csv")
        raise DataValidationError(
            f"column '{name}' holds numbers written with a decimal comma (CSV lines "
            f"{_row_numbers(found)}: {_show(pd.unique(column[found]))}); convert the file "
            f"with {command} and set "
            f"data.csv.path to the new file, or list '{name}' in data.csv.categorical_columns "
            "if it is really a category"
        )


def _is_categorical(column: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return False
    cells = column.dropna()
    if cells.empty:
        return False
    parsed = pd.to_numeric(cells, errors="coerce")
    return bool(parsed.notna().mean() < NUMERIC_MAJORITY)


def _as_numbers(column: pd.Series, name: str) -> pd.Series:
    if column.isna().all():
        raise DataValidationError(
            f"column '{name}' is empty in every row; remove it or list it in data.csv.drop_columns"
        )
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column.astype(np.float64)
    parsed = pd.to_numeric(column, errors="coerce")
    bad = parsed.isna() & column.notna()
    if bad.any():
        examples = _show(pd.unique(column[bad]))
        raise DataValidationError(
            f"column '{name}' is numeric but {int(bad.sum())} cell(s) are not numbers "
            f"(CSV lines {_row_numbers(bad)}: {examples}); fix those cells, or list '{name}' "
            "in data.csv.categorical_columns if it is really a category"
        )
    return parsed.astype(np.float64)


def _as_category_strings(column: pd.Series) -> pd.Series:
    # Missing stays missing (the model imputes it); everything else becomes text.
    return column.astype("string").astype(object).where(column.notna(), None)


def _time_order(column: pd.Series, name: str) -> pd.Series:
    """The time column as numbers or datetimes, so that sorting it sorts by time."""
    if column.isna().any():
        raise DataValidationError(
            f"time column '{name}' is empty in {int(column.isna().sum())} row(s) "
            f"(CSV lines {_row_numbers(column.isna())}); fill them or set "
            "data.csv.time_column: null"
        )
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
        return column
    parsed = pd.to_datetime(column, errors="coerce")
    bad = parsed.isna()
    if bad.any():
        raise DataValidationError(
            f"time column '{name}' has values that are neither numbers nor dates (CSV lines "
            f"{_row_numbers(bad)}: {_show(pd.unique(column[bad]))}); fix them or set "
            "data.csv.time_column: null"
        )
    return parsed


def _row_numbers(mask: pd.Series, limit: int = 5) -> str:
    # +2: one for the header line, one because CSV lines count from 1.
    lines = [str(int(i) + 2) for i in np.flatnonzero(mask.to_numpy())[:limit]]
    more = " ..." if int(mask.sum()) > limit else ""
    return ", ".join(lines) + more


def _show(values: object, limit: int = 5) -> str:
    items = list(np.asarray(values, dtype=object))
    shown = ", ".join(repr(v) for v in items[:limit])
    return shown + (" ..." if len(items) > limit else "")


def feature_schema(info: DatasetInfo, frame: pd.DataFrame) -> FeatureSchema:
    """A CSV's columns are its features as typed by :func:`prepare_csv`."""
    numeric = [Feature(name=name, kind="numeric") for name in info.numeric]
    categorical = [
        Feature(
            name=name,
            kind="categorical",
            categories=sorted(frame[name].dropna().astype(str).unique().tolist()),
        )
        for name in info.categorical
    ]
    return FeatureSchema(
        source="csv",
        features=numeric + categorical,
        target=info.target,
        positive_label=info.positive_label,
        time_column=info.time_column,
        group_column=info.group_column,
    )

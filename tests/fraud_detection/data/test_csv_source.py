"""Bring-your-own CSV: typing the columns, the binary target, and actionable errors."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data.csv_source import feature_schema, prepare_csv
from fraud_detection.errors import DataValidationError
from fraud_detection.io.files import load_params, read_csv_table
from fraud_detection.params import CsvParams


def from_csv(text: str) -> pd.DataFrame:
    """Parse CSV text the way the data stage reads a file."""
    return pd.read_csv(io.StringIO(text), low_memory=False)


def creditcard_like(rows: int = 40, seed: int = 0) -> pd.DataFrame:
    """The Kaggle credit-card layout: Time, V1..V28 (a subset here), Amount, Class."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"Time": np.sort(rng.integers(0, 172_800, rows)).astype(float)})
    for i in range(1, 6):
        frame[f"V{i}"] = rng.normal(size=rows)
    frame["Amount"] = rng.exponential(80, rows).round(2)
    frame["Class"] = (np.arange(rows) % 10 == 0).astype(np.int64)
    return frame


# ---------------------------------------------------------------- accepted tables


def test_creditcard_like_table():
    raw = creditcard_like()
    clean, info = prepare_csv(raw, CsvParams())
    assert info.source == "csv"
    assert info.target == "Class"
    assert info.numeric == ["Time", "V1", "V2", "V3", "V4", "V5", "Amount"]
    assert info.categorical == []
    assert info.rows == 40
    assert info.positives == 4
    assert info.positive_share == pytest.approx(0.1)
    assert list(clean.columns) == [*info.numeric, "Class"]
    assert clean["Class"].dtype == np.int8
    assert clean["Class"].tolist() == raw["Class"].tolist()
    for column in info.numeric:
        assert clean[column].dtype == np.float64
        np.testing.assert_array_equal(clean[column].to_numpy(), raw[column].to_numpy())


def test_time_column_is_kept_but_not_a_feature():
    clean, info = prepare_csv(creditcard_like(), CsvParams(time_column="Time"))
    assert "Time" not in info.numeric
    assert info.time_column == "Time"
    assert "Time" in clean.columns
    schema = feature_schema(info, clean)
    assert "Time" not in schema.names
    assert schema.time_column == "Time"


def test_mixed_types_from_a_csv_file():
    lines = ["id,amount,country,channel,code,Class"]
    for i in range(20):
        amount = "" if i == 3 else f"{i * 1.5}"
        country = "" if i == 5 else ("BE" if i % 3 else "FR")
        lines.append(
            f"{1000 + i},{amount},{country},{'web' if i % 2 else 'shop'},{i % 4},{int(i % 5 == 0)}"
        )
    raw = from_csv("\n".join(lines) + "\n")
    params = CsvParams(drop_columns=["id"], categorical_columns=["code"])
    clean, info = prepare_csv(raw, params)

    assert info.numeric == ["amount"]
    assert info.categorical == ["country", "channel", "code"]
    assert info.passthrough == ["id"]
    assert info.positives == 4
    # Numbers are float64 with NaN for the empty cell.
    assert clean["amount"].dtype == np.float64
    assert np.isnan(clean["amount"].to_numpy()[3])
    assert clean.loc[4, "amount"] == 6.0
    # Categories are Python strings, with None where the cell was empty.
    assert clean["country"].dtype == object
    assert clean.loc[5, "country"] is None
    assert clean.loc[1, "country"] == "BE"
    assert clean.loc[0, "country"] == "FR"
    # A numeric-looking column listed as categorical becomes text.
    assert clean["code"].tolist()[:5] == ["0", "1", "2", "3", "0"]
    # Drop columns travel with the rows (traceability) but are no feature.
    assert clean["id"].tolist() == list(range(1000, 1020))
    schema = feature_schema(info, clean)
    assert "id" not in schema.names


def test_object_column_of_numbers_is_numeric():
    raw = pd.DataFrame(
        {"x": pd.Series(["1", None, "2.5", "4"] * 5, dtype=object), "Class": [0, 1] * 10}
    )
    clean, info = prepare_csv(raw, CsvParams())
    assert info.numeric == ["x"]
    assert clean["x"].dtype == np.float64
    assert clean["x"].tolist()[:4] == pytest.approx([1.0, np.nan, 2.5, 4.0], nan_ok=True)


def test_mostly_text_column_is_categorical():
    values = ["a", "b", "c", "7"] * 5
    clean, info = prepare_csv(pd.DataFrame({"x": values, "Class": [0, 1] * 10}), CsvParams())
    assert info.categorical == ["x"]
    assert clean["x"].tolist() == values


def test_boolean_columns_are_numeric():
    raw = pd.DataFrame({"flag": [True, False] * 10, "Class": [0, 0, 1, 0] * 5})
    clean, info = prepare_csv(raw, CsvParams())
    assert info.numeric == ["flag"]
    assert clean["flag"].tolist() == [1.0, 0.0] * 10


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([0, 1, 0, 0, 1], [0, 1, 0, 0, 1]),
        ([0.0, 1.0, 0.0, 0.0, 1.0], [0, 1, 0, 0, 1]),
        ([True, False, False, True, False], [1, 0, 0, 1, 0]),
        (["true", "False", "FALSE", "True", "false"], [1, 0, 0, 1, 0]),
        (["1", "0", "0", "1", "0"], [1, 0, 0, 1, 0]),
    ],
)
def test_zero_one_targets_need_no_positive_label(labels, expected):
    raw = pd.DataFrame({"x": range(5), "Class": labels})
    clean, info = prepare_csv(raw, CsvParams())
    assert clean["Class"].tolist() == expected
    assert info.positive_label == 1


@pytest.mark.parametrize(
    ("labels", "positive", "expected"),
    [
        (["fraud", "ok", "ok", "fraud", "ok"], "fraud", [1, 0, 0, 1, 0]),
        ([2, 1, 1, 2, 1], 2, [1, 0, 0, 1, 0]),
        ([0, 1, 1, 0, 1], 0, [1, 0, 0, 1, 0]),  # inverted 0/1 coding
    ],
)
def test_positive_label_maps_the_target(labels, positive, expected):
    raw = pd.DataFrame({"x": range(5), "label": labels})
    clean, info = prepare_csv(raw, CsvParams(target="label", positive_label=positive))
    assert clean["label"].tolist() == expected
    assert info.positive_label == positive
    assert feature_schema(info, clean).positive_label == positive


def test_row_order_and_index_are_normalised():
    raw = creditcard_like().iloc[::-1]
    clean, _ = prepare_csv(raw, CsvParams())
    assert clean.index.tolist() == list(range(len(raw)))
    assert clean["Amount"].tolist() == raw["Amount"].tolist()


# ------------------------------------------------------------------------ errors


def test_empty_frame():
    with pytest.raises(DataValidationError, match="no data rows"):
        prepare_csv(pd.DataFrame({"x": [], "Class": []}), CsvParams())
    with pytest.raises(DataValidationError, match="no data rows"):
        prepare_csv(pd.DataFrame(), CsvParams())


def test_missing_target_names_it_and_lists_the_columns():
    raw = creditcard_like().rename(columns={"Class": "is_fraud"})
    with pytest.raises(DataValidationError) as caught:
        prepare_csv(raw, CsvParams())
    message = str(caught.value)
    assert "column 'Class' named by data.csv.target is not in the CSV" in message
    assert "its columns are: Time, V1, V2, V3, V4, V5, Amount, is_fraud" in message


@pytest.mark.parametrize(
    ("params", "key", "column"),
    [
        (CsvParams(drop_columns=["id"]), "data.csv.drop_columns", "id"),
        (CsvParams(time_column="when"), "data.csv.time_column", "when"),
        (CsvParams(categorical_columns=["shop"]), "data.csv.categorical_columns", "shop"),
    ],
)
def test_other_missing_columns_are_named_with_their_key(params, key, column):
    with pytest.raises(DataValidationError, match=rf"column '{column}' named by {key} "):
        prepare_csv(creditcard_like(), params)


def test_single_class():
    raw = creditcard_like().assign(Class=0)
    with pytest.raises(DataValidationError, match=r"single class \(0 in all 40 rows\)"):
        prepare_csv(raw, CsvParams())
    with pytest.raises(DataValidationError, match=r"single class \(1 in all 40 rows\)"):
        prepare_csv(raw.assign(Class=1), CsvParams())


def test_a_single_positive_is_not_enough():
    raw = creditcard_like().assign(Class=0)
    raw.loc[7, "Class"] = 1
    with pytest.raises(DataValidationError, match=r"only 1 positive row"):
        prepare_csv(raw, CsvParams())


def test_labels_that_are_not_zero_one_need_a_positive_label():
    raw = pd.DataFrame({"x": range(6), "Class": ["fraud", "ok"] * 3})
    with pytest.raises(DataValidationError) as caught:
        prepare_csv(raw, CsvParams())
    message = str(caught.value)
    assert "'fraud'" in message
    assert "'ok'" in message
    assert "not 0/1; set data.csv.positive_label" in message


def test_three_numeric_labels_without_positive_label():
    raw = pd.DataFrame({"x": range(6), "Class": [0, 1, 2] * 2})
    with pytest.raises(DataValidationError, match=r"values 0, 1, 2, not 0/1"):
        prepare_csv(raw, CsvParams())


def test_positive_label_that_does_not_occur():
    raw = pd.DataFrame({"x": range(6), "Class": ["fraud", "ok"] * 3})
    with pytest.raises(DataValidationError) as caught:
        prepare_csv(raw, CsvParams(positive_label="Fraud"))
    message = str(caught.value)
    assert "data.csv.positive_label 'Fraud' does not occur in target column 'Class'" in message
    assert "'fraud', 'ok'" in message


def test_more_than_two_labels_with_a_positive_label():
    raw = pd.DataFrame({"x": range(6), "Class": ["fraud", "ok", "unknown"] * 2})
    with pytest.raises(DataValidationError, match=r"has 3 distinct values .*exactly two"):
        prepare_csv(raw, CsvParams(positive_label="fraud"))


def test_missing_target_cells_give_their_csv_lines():
    raw = from_csv("x,Class\n1,0\n2,\n3,1\n4,1\n5,\n")
    with pytest.raises(DataValidationError, match=r"empty in 2 row\(s\) \(CSV lines 3, 6\)"):
        prepare_csv(raw, CsvParams())


def test_stray_text_in_a_numeric_column_names_column_and_csv_line():
    lines = ["amount,Class"] + [f"{i}.5,{int(i % 4 == 0)}" for i in range(20)]
    lines[8] = "oops,0"  # DataFrame row 7 is CSV line 9 (the header is line 1)
    raw = from_csv("\n".join(lines) + "\n")
    assert raw.loc[7, "amount"] == "oops"
    with pytest.raises(DataValidationError) as caught:
        prepare_csv(raw, CsvParams())
    message = str(caught.value)
    assert "column 'amount' is numeric but 1 cell(s) are not numbers" in message
    assert "(CSV lines 9: 'oops')" in message
    assert "data.csv.categorical_columns" in message


def test_stray_cells_are_listed_up_to_five_lines():
    values = [str(i) for i in range(100)]
    for row in (0, 10, 20, 30, 40, 50):
        values[row] = "n.a."
    raw = pd.DataFrame({"amount": values, "Class": [0, 1] * 50})
    with pytest.raises(
        DataValidationError, match=r"6 cell\(s\) .*CSV lines 2, 12, 22, 32, 42 \.\.\."
    ):
        prepare_csv(raw, CsvParams())


def test_column_empty_in_every_row():
    raw = creditcard_like().assign(V3=np.nan)
    with pytest.raises(DataValidationError, match=r"column 'V3' is empty in every row"):
        prepare_csv(raw, CsvParams())


def test_no_feature_left():
    raw = pd.DataFrame({"id": range(6), "Class": [0, 1] * 3})
    with pytest.raises(DataValidationError, match="no feature columns are left"):
        prepare_csv(raw, CsvParams(drop_columns=["id"]))


# -------------------------------------------------------------------- the schema


def test_feature_schema_for_csv():
    raw = pd.DataFrame(
        {
            "amount": np.arange(12, dtype=float),
            "country": ["FR", "BE", None, "DE"] * 3,
            "Time": np.arange(12),
            "Class": [0, 1, 0] * 4,
        }
    )
    clean, info = prepare_csv(raw, CsvParams(time_column="Time", positive_label=None))
    schema = feature_schema(info, clean)
    assert schema.source == "csv"
    assert schema.names == ["amount", "country"]
    assert schema.numeric == ["amount"]
    assert schema.categorical == ["country"]
    assert schema.features[1].categories == ["BE", "DE", "FR"]
    assert schema.target == "Class"
    assert schema.time_column == "Time"
    assert schema.group_column is None


# ------------------------------------------------------------ reading the file


def test_read_csv_table_reads_a_file(tmp_path):
    path = tmp_path / "data.csv"
    creditcard_like(rows=12).to_csv(path, index=False)
    frame = read_csv_table(path)
    assert frame.shape == (12, 8)
    assert frame["Class"].sum() == 2


def test_read_csv_table_missing_file(tmp_path):
    path = tmp_path / "absent.csv"
    with pytest.raises(DataValidationError, match=r"absent\.csv not found.*data\.csv\.path"):
        read_csv_table(path)


def test_read_csv_table_directory(tmp_path):
    with pytest.raises(DataValidationError, match=r"is a directory"):
        read_csv_table(tmp_path)


def test_read_csv_table_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataValidationError, match=r"empty\.csv is empty \(0 bytes\)"):
        read_csv_table(path)


def test_read_csv_table_blank_file(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"blank\.csv has no header and no rows"):
        read_csv_table(path)


def test_header_only_file(tmp_path):
    """read_csv_table returns the empty table; prepare_csv (next in the data stage) rejects it."""
    path = tmp_path / "header.csv"
    path.write_text("Time,V1,Amount,Class\n", encoding="utf-8")
    frame = read_csv_table(path)
    assert list(frame.columns) == ["Time", "V1", "Amount", "Class"]
    assert len(frame) == 0
    with pytest.raises(DataValidationError, match="the CSV file has no data rows"):
        prepare_csv(frame, CsvParams())


def test_read_csv_table_unparsable_file(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_bytes(b"a,b\n1,2\n3,4,5\n")  # a row with more cells than the header
    with pytest.raises(DataValidationError, match=r"broken\.csv could not be parsed"):
        read_csv_table(path)


def test_a_windows_code_page_file_is_named_and_the_conversion_it_gives_works(
    tmp_path: Path,
) -> None:
    path = tmp_path / "export.csv"
    table = creditcard_like(rows=12).assign(Shop=["Café", "Bäckerei", "Kiosk"] * 4)
    path.write_bytes(table.to_csv(index=False).encode("cp1252"))
    with pytest.raises(DataValidationError) as caught:
        read_csv_table(path)
    message = str(caught.value)
    assert "export.csv is not UTF-8 text (it holds the byte 0xe9)" in message
    _run_conversion(message)
    converted = read_csv_table(tmp_path / "export.utf8.csv")
    assert converted["Shop"].tolist() == table["Shop"].tolist()


def _run_conversion(message: str) -> None:
    """Run the conversion a message gives, as a user would copy it."""
    (command,) = re.findall(r'python -c "([^"]+)"', message)
    subprocess.run([sys.executable, "-c", command], check=True, timeout=60)


@pytest.mark.parametrize(
    ("separator", "name"), [(";", "semicolons"), ("\t", "tabs"), ("|", "bars")]
)
def test_another_separator_is_named_and_the_conversion_it_gives_works(
    tmp_path: Path, separator: str, name: str
) -> None:
    path = tmp_path / "export.csv"
    table = creditcard_like(rows=12)
    table.to_csv(path, sep=separator, index=False)
    with pytest.raises(DataValidationError) as caught:
        read_csv_table(path)
    message = str(caught.value)
    assert f"export.csv is separated by {name}, not commas" in message
    # The conversion the message gives, run as written, makes a file the pipeline reads.
    _run_conversion(message)
    converted = read_csv_table(tmp_path / "export.comma.csv")
    pd.testing.assert_frame_equal(converted, table, check_dtype=False)


def _with_decimal_commas(path: Path) -> pd.DataFrame:
    """A comma-separated export whose Amount cells are quoted decimal-comma numbers."""
    table = creditcard_like(rows=40)
    written = table.assign(Amount=table["Amount"].map(lambda v: f"{v:.2f}".replace(".", ",")))
    written.to_csv(path, index=False)
    return table


def test_decimal_commas_are_named_and_the_conversion_it_gives_works(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    table = _with_decimal_commas(path)
    frame = read_csv_table(path)
    params = CsvParams(path=str(path))
    with pytest.raises(DataValidationError) as caught:
        prepare_csv(frame, params)
    message = str(caught.value)
    assert "column 'Amount' holds numbers written with a decimal comma (CSV lines 2, 3" in message
    _run_conversion(message)
    converted = read_csv_table(tmp_path / "export.points.csv")
    clean, info = prepare_csv(converted, params)
    assert "Amount" in info.numeric
    np.testing.assert_allclose(clean["Amount"], table["Amount"])


def test_decimal_commas_in_a_listed_category_or_in_text_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    _with_decimal_commas(path)
    frame = read_csv_table(path)
    _, info = prepare_csv(frame, CsvParams(path=str(path), categorical_columns=["Amount"]))
    assert "Amount" in info.categorical
    # Text with a comma here and there is a category, as before.
    frame["Amount"] = [f"shop {i}" for i in range(len(frame) - 1)] + ["1,5"]
    _, info = prepare_csv(frame, CsvParams(path=str(path)))
    assert "Amount" in info.categorical


def test_a_column_name_given_twice_is_named(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("Time,Amount,Amount,Class,,\n1,2.5,3.5,0,,\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"names 'Amount' more than once in its header"):
        read_csv_table(path)


def test_a_saved_index_is_named_and_kept_out_when_listed(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    creditcard_like(rows=40).to_csv(path)  # index=True: a first column without a name
    frame = read_csv_table(path)
    with pytest.raises(DataValidationError) as caught:
        prepare_csv(frame, CsvParams(path=str(path)))
    message = str(caught.value)
    assert "gives no name to 1 column(s), read as 'Unnamed: 0'" in message
    assert "data.csv.drop_columns" in message
    _, info = prepare_csv(frame, CsvParams(path=str(path), drop_columns=["Unnamed: 0"]))
    assert "Unnamed: 0" not in info.numeric + info.categorical


def test_trailing_commas_are_named(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    text = creditcard_like(rows=40).to_csv(index=False)
    path.write_text(text.replace("\n", ",\n"), encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"read as 'Unnamed: 8'"):
        prepare_csv(read_csv_table(path), CsvParams(path=str(path)))


def test_a_one_column_file_is_read_as_one_column(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("Class\n0\n1\n", encoding="utf-8")
    assert list(read_csv_table(path).columns) == ["Class"]


def test_text_dates_in_the_time_column_become_datetimes():
    raw = pd.DataFrame(
        {"when": ["1/9/2020", "1/31/2020", "2/1/2020"], "x": [1.0, 2.0, 3.0], "Class": [0, 1, 1]}
    )
    clean, _ = prepare_csv(raw, CsvParams(time_column="when"))
    assert pd.api.types.is_datetime64_any_dtype(clean["when"])
    assert clean["when"].is_monotonic_increasing


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (
            ["1/9/2020", "soon", "2/1/2020"],
            r"time column 'when' has values that are neither.*line.* 3",
        ),
        (
            ["1/9/2020", None, "2/1/2020"],
            r"time column 'when' is empty in 1 row\(s\) \(CSV lines 3\)",
        ),
    ],
)
def test_bad_time_column_is_rejected(cells, message):
    raw = pd.DataFrame({"when": cells, "x": [1.0, 2.0, 3.0], "Class": [0, 1, 1]})
    with pytest.raises(DataValidationError, match=message):
        prepare_csv(raw, CsvParams(time_column="when"))


@pytest.mark.parametrize(("label", "column"), [("Yes", ["No", "Yes"]), ("true", [False, True])])
def test_an_unquoted_positive_label_in_params_yaml_is_the_label_meant(tmp_path, label, column):
    """`positive_label: Yes` in params.yaml names the Yes rows (PyYAML made it 1 and the
    stage refused a column of Yes/No); `true` names the True rows of a boolean column."""
    (tmp_path / "params.yaml").write_text(
        "train:\n  models: {m: {kind: dummy}}\n"
        f"data:\n  csv:\n    target: default\n    positive_label: {label}\n",
        encoding="utf-8",
    )
    params = load_params(tmp_path / "params.yaml").data.csv
    raw = pd.DataFrame({"x": range(20), "default": [column[i % 5 == 0] for i in range(20)]})
    clean, info = prepare_csv(raw, params)
    assert clean["default"].tolist() == [int(i % 5 == 0) for i in range(20)]
    assert info.positives == 4

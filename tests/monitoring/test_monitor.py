"""monitoring.monitor.run_monitor end to end: a reference and a prediction log on disk,
the reports, summary and history it writes, and every input it refuses (before writing).

Each run takes a second or two (Evidently): runs are shared by module-scoped fixtures."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, precision_score, recall_score

from fraud_detection.params import MonitorParams
from fraud_detection.reference import DECISION_COLUMN, SCORE_COLUMN
from monitoring import history
from monitoring.inputs import Window, current_rows, load_reference
from monitoring.monitor import HISTORY_DB, HISTORY_PLOT, MonitorResult, run_monitor
from monitoring.prediction_log import MonitorInputError
from tests.monitoring.conftest import (
    LOGGED_FROM,
    OTHER_SCHEMA,
    REFERENCE_ROWS,
    SCHEMA,
    TEST_METRICS,
    WINDOW_END,
    WINDOW_START,
    request_id,
    write_log,
    write_reference,
)

PARAMS = MonitorParams(min_rows=100)
WINDOW = Window(WINDOW_START, WINDOW_END)
NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def monitor(
    log: Path,
    reference: Path,
    out: Path,
    *,
    params: MonitorParams = PARAMS,
    labels: Path | None = None,
    labels_as_of: datetime | None = None,
    now: datetime = NOW,
    window: Window = WINDOW,
) -> MonitorResult:
    return run_monitor(
        params,
        window=window,
        log_path=log,
        reference_path=reference,
        out_dir=out,
        labels_path=labels,
        labels_as_of=labels_as_of,
        now=now,
    )


def stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S%fZ")


def stamps_in(folder: Path) -> list[str]:
    return sorted({path.name.split("-", 1)[0] for path in folder.iterdir()})


def insert_raw(path: Path, features: str, request: str = "raw") -> None:
    """A row written behind the service's back (a damaged or hand-edited log)."""
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(
            "INSERT INTO predictions (logged_at, request_id, row_index, model_name, "
            "model_version, schema_fingerprint, features, probability, is_fraud, threshold) "
            "VALUES (?, ?, 0, 'fraud-detector', '3', ?, ?, 0.3, 0, 0.5)",
            (LOGGED_FROM.isoformat(timespec="microseconds"), request, SCHEMA.fingerprint, features),
        )


# --- a window without drift, with rows of another schema and unreadable rows ---------


@pytest.fixture(scope="module")
def mixed_log(tmp_path_factory: pytest.TempPathFactory, reference_frame: pd.DataFrame) -> Path:
    """The reference's own rows, plus 3 rows of another schema and 2 unreadable ones."""
    path = tmp_path_factory.mktemp("mixed") / "predictions.db"
    write_log(path, reference_frame)
    write_log(
        path,
        reference_frame[["amount"]].head(3).assign(**{SCORE_COLUMN: 0.1, DECISION_COLUMN: 0}),
        schema=OTHER_SCHEMA,
        prefix="other",
    )
    insert_raw(path, "not json", "broken-1")
    insert_raw(path, "[1.0, 2.0]", "broken-2")  # two values where the schema has four
    return path


@dataclass(frozen=True)
class Runs:
    out: Path
    results: list[MonitorResult]
    times: list[datetime]


@pytest.fixture(scope="module")
def steady_runs(
    tmp_path_factory: pytest.TempPathFactory, mixed_log: Path, reference_file: Path
) -> Runs:
    """Two runs an hour apart into the same report folder."""
    out = tmp_path_factory.mktemp("steady-runs") / "monitoring"
    times = [NOW, NOW + timedelta(hours=1)]
    results = [monitor(mixed_log, reference_file, out, now=when) for when in times]
    return Runs(out, results, times)


def test_no_drift_exits_0_with_a_one_line_verdict(steady_runs: Runs) -> None:
    result = steady_runs.results[-1]
    assert result.exit_code == 0
    assert result.line.startswith("NO DRIFT: gate passed: 0 of 4 features drifted")
    assert f"{REFERENCE_ROWS:,} rows" in result.line
    assert result.line.endswith(f"-> {steady_runs.out / 'latest-drift.html'}")
    summary = result.summary
    assert (summary["verdict"], summary["exit_code"]) == ("no drift", 0)
    assert summary["rows"] == REFERENCE_ROWS
    assert summary["drifted_features"] == []
    assert summary["feature_drift"] == dict.fromkeys(SCHEMA.names, 0.0)
    assert summary["score_drift"] == 0.0
    assert [test["passed"] for test in summary["tests"]] == [True, True, True]
    assert summary["window"] == {"start": WINDOW_START.isoformat(), "end": WINDOW_END.isoformat()}
    assert summary["run_at"] == steady_runs.times[-1].isoformat()
    assert summary["reference"]["rows"] == REFERENCE_ROWS
    assert summary["reference"]["schema_fingerprint"] == SCHEMA.fingerprint
    assert summary["labels"] == {
        "labelled_rows": 0,
        "pending_rows": 0,
        "next_labels_at": None,
        "quality": None,
        "test_period": TEST_METRICS,
    }


def test_rows_of_another_schema_and_unreadable_rows_are_skipped_and_counted(
    steady_runs: Runs,
) -> None:
    summary = steady_runs.results[0].summary
    assert summary["rows_in_window"] == REFERENCE_ROWS + 5
    assert summary["skipped"] == {
        "other_schema_rows": 3,
        "unreadable_rows": 2,
        "other_version_rows": 0,
    }
    assert summary["model_versions"] == ["3"]
    assert summary["rows"] == REFERENCE_ROWS


def test_a_run_writes_latest_and_timestamped_reports(steady_runs: Runs) -> None:
    out = steady_runs.out
    for name in ("latest-drift.html", "latest-drift.json", "latest-summary.json"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "latest-quality.html").exists()  # no labels given
    assert "<html" in (out / "latest-drift.html").read_text(encoding="utf-8").lower()
    snapshot = json.loads((out / "latest-drift.json").read_text(encoding="utf-8"))
    assert isinstance(snapshot, dict)
    assert snapshot
    written = json.loads((out / "latest-summary.json").read_text(encoding="utf-8"))
    assert written == steady_runs.results[-1].summary
    for when in steady_runs.times:
        for suffix in ("drift.html", "drift.json", "summary.json"):
            assert (out / "history" / f"{stamp(when)}-{suffix}").is_file(), (when, suffix)
    latest = stamp(steady_runs.times[-1])
    assert (out / "latest-summary.json").read_bytes() == (
        out / "history" / f"{latest}-summary.json"
    ).read_bytes()
    assert written["reports"]["html"] == str(out / "history" / f"{latest}-drift.html")
    assert (out / HISTORY_PLOT).read_bytes().startswith(PNG_MAGIC)


def test_the_history_has_one_row_per_run(steady_runs: Runs) -> None:
    runs = history.read(steady_runs.out / HISTORY_DB)
    assert len(runs) == 2
    assert [stamp.isoformat() for stamp in runs["run_at"]] == [
        when.isoformat() for when in steady_runs.times
    ]
    assert runs["rows"].tolist() == [REFERENCE_ROWS, REFERENCE_ROWS]
    assert runs["passed"].tolist() == [1, 1]
    assert runs["drifted_features"].tolist() == [0, 0]
    assert runs["labelled_rows"].tolist() == [0, 0]
    assert runs["average_precision"].isna().all()


def test_keep_reports_prunes_old_reports_but_not_the_history(
    steady_runs: Runs, mixed_log: Path, reference_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "monitoring"
    shutil.copytree(steady_runs.out, out)
    third = NOW + timedelta(hours=2)
    monitor(
        mixed_log,
        reference_file,
        out,
        params=MonitorParams(min_rows=100, keep_reports=2),
        now=third,
    )
    assert stamps_in(out / "history") == [stamp(steady_runs.times[1]), stamp(third)]
    assert len(list((out / "history").iterdir())) == 6  # drift html + json, summary; twice
    assert len(history.read(out / HISTORY_DB)) == 3


# --- drift ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drift_run(
    tmp_path_factory: pytest.TempPathFactory, drifted_log: Path, reference_file: Path
) -> Runs:
    out = tmp_path_factory.mktemp("drift-run") / "monitoring"
    return Runs(out, [monitor(drifted_log, reference_file, out)], [NOW])


def test_a_shifted_feature_exits_1_and_is_named(drift_run: Runs) -> None:
    result = drift_run.results[0]
    assert result.exit_code == 1
    assert result.line.startswith("DRIFT: gate failed (Count of Drifted Columns")
    assert "1 of 4 features drifted (velocity 3." in result.line
    summary = result.summary
    assert (summary["verdict"], summary["exit_code"]) == ("drift", 1)
    assert summary["drifted_features"] == ["velocity"]
    assert summary["feature_drift"]["velocity"] == pytest.approx(3.0, rel=0.05)
    assert summary["drifted_share"] == 0.25
    assert [test["passed"] for test in summary["tests"]] == [False, True, True]
    runs = history.read(drift_run.out / HISTORY_DB)
    assert runs["passed"].tolist() == [0]
    assert runs["drifted_features"].tolist() == [1]


# --- labels ------------------------------------------------------------------------------

LABELLED_REQUESTS = 80  # of the log's 120 requests of 10 rows
FIRST_LABELS = NOW - timedelta(days=2)  # the labels of the first 40 requests arrive then
LATER_LABELS = NOW + timedelta(days=5)  # the others' then


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory: pytest.TempPathFactory, reference_frame: pd.DataFrame) -> Path:
    """True labels of the first 800 logged rows, in shuffled order."""
    rows = LABELLED_REQUESTS * 10
    labels = pd.DataFrame(
        {
            "request_id": [request_id("req", row // 10) for row in range(rows)],
            "row_index": [row % 10 for row in range(rows)],
            "label": reference_frame["fraud"].head(rows).to_numpy(),
            "available_at": [
                FIRST_LABELS if row < rows // 2 else LATER_LABELS for row in range(rows)
            ],
        }
    ).sample(frac=1.0, random_state=0)
    path = tmp_path_factory.mktemp("labels") / "labels.parquet"
    labels.to_parquet(path, index=False)
    return path


@dataclass(frozen=True)
class LabelledRuns:
    out: Path
    with_labels: MonitorResult
    quality_report_written: bool
    before_labels: MonitorResult


@pytest.fixture(scope="module")
def labelled_runs(
    tmp_path_factory: pytest.TempPathFactory,
    steady_log: Path,
    reference_file: Path,
    labels_file: Path,
) -> LabelledRuns:
    """A run when half the labels have arrived, then one as of before any had."""
    out = tmp_path_factory.mktemp("labelled-runs") / "monitoring"
    with_labels = monitor(steady_log, reference_file, out, labels=labels_file, labels_as_of=NOW)
    written = (out / "latest-quality.html").is_file()
    before = monitor(
        steady_log,
        reference_file,
        out,
        labels=labels_file,
        labels_as_of=FIRST_LABELS - timedelta(seconds=1),
        now=NOW + timedelta(hours=1),
    )
    return LabelledRuns(out, with_labels, written, before)


def test_arrived_labels_are_joined_on_request_id_for_quality(
    labelled_runs: LabelledRuns, reference_frame: pd.DataFrame
) -> None:
    result = labelled_runs.with_labels
    labels = result.summary["labels"]
    assert labels["labelled_rows"] == 400
    assert labels["pending_rows"] == 400
    assert labels["next_labels_at"] == LATER_LABELS.isoformat()
    quality = labels["quality"]
    arrived = reference_frame.head(400)  # requests 0-39: the labels that have arrived
    truth = arrived["fraud"]
    assert quality["rows"] == 400
    assert quality["positives"] == int(truth.sum()) > 0
    assert quality["average_precision"] == pytest.approx(
        average_precision_score(truth, arrived[SCORE_COLUMN])
    )
    assert quality["precision"] == pytest.approx(precision_score(truth, arrived[DECISION_COLUMN]))
    assert quality["recall"] == pytest.approx(recall_score(truth, arrived[DECISION_COLUMN]))
    assert quality["reference"]["average_precision"] == pytest.approx(
        average_precision_score(reference_frame["fraud"], reference_frame[SCORE_COLUMN])
    )
    assert f"AP {quality['average_precision']:.3f} on 400 labelled rows" in result.line
    assert "labels of 400 rows still to come" in result.line
    assert labelled_runs.quality_report_written
    assert (labelled_runs.out / "history" / f"{stamp(NOW)}-quality.html").is_file()
    assert result.summary["reports"]["latest_quality_html"] == str(
        labelled_runs.out / "latest-quality.html"
    )


def test_labels_not_yet_available_give_no_quality_but_are_counted(
    labelled_runs: LabelledRuns,
) -> None:
    result = labelled_runs.before_labels
    labels = result.summary["labels"]
    assert labels["labelled_rows"] == 0
    assert labels["quality"] is None
    assert labels["pending_rows"] == 800
    assert labels["next_labels_at"] == FIRST_LABELS.isoformat()
    assert "AP " not in result.line
    assert "labels of 800 rows still to come" in result.line
    assert "latest_quality_html" not in result.summary["reports"]


def test_a_run_without_quality_removes_the_stale_quality_report(
    labelled_runs: LabelledRuns,
) -> None:
    out = labelled_runs.out
    assert not (out / "latest-quality.html").exists()
    # The earlier run's timestamped quality report stays with its drift report.
    assert (out / "history" / f"{stamp(NOW)}-quality.html").is_file()
    runs = history.read(out / HISTORY_DB)
    assert runs["labelled_rows"].tolist() == [400, 0]
    assert runs["average_precision"].notna().tolist() == [True, False]


# --- model version --------------------------------------------------------------------


def test_monitor_model_version_keeps_that_version_and_counts_the_others(
    tmp_path: Path, reference_frame: pd.DataFrame, reference_file: Path
) -> None:
    log = tmp_path / "predictions.db"
    write_log(log, reference_frame)
    write_log(log, reference_frame.head(300), version="4", prefix="v4")
    result = monitor(
        log,
        reference_file,
        tmp_path / "out",
        params=MonitorParams(min_rows=100, model_version="3"),
    )
    assert result.summary["rows"] == REFERENCE_ROWS
    assert result.summary["rows_in_window"] == REFERENCE_ROWS + 300
    assert result.summary["skipped"]["other_version_rows"] == 300
    assert result.summary["model_versions"] == ["3"]
    assert result.exit_code == 0


def test_the_reference_s_model_is_the_one_judged(
    tmp_path: Path, reference_frame: pd.DataFrame
) -> None:
    """A reference built for a model judges that model's predictions, known by its
    fingerprint whatever version or folder served it (and rows logged before fingerprints
    existed, which cannot be told apart), and counts the rows another model scored: their
    scores are not comparable."""
    reference = write_reference(tmp_path / "reference", reference_frame, model_fingerprint="fp")
    log = tmp_path / "predictions.db"
    write_log(log, reference_frame.head(600), version="4", fingerprint="fp", prefix="v4")
    write_log(log, reference_frame.head(300), version="local", fingerprint="fp", prefix="dir")
    write_log(log, reference_frame.head(100), version="2", fingerprint="", prefix="old")
    write_log(log, reference_frame.head(200), version="3", fingerprint="other", prefix="v3")
    result = monitor(log, reference, tmp_path / "out", params=MonitorParams(min_rows=100))
    assert result.summary["rows"] == 1000
    assert result.summary["skipped"]["other_version_rows"] == 200
    assert result.summary["model_versions"] == ["2", "4", "local"]


def test_a_log_of_another_model_than_the_reference_s_is_refused_with_the_fix(
    tmp_path: Path, reference_frame: pd.DataFrame, steady_log: Path
) -> None:
    # The workspace model (a challenger) built the reference; the champion (v3) served.
    reference = write_reference(tmp_path / "reference", reference_frame, model_fingerprint="fp7")
    message = refused(steady_log, reference, tmp_path / "out", MonitorParams(min_rows=100))
    assert (
        f"{REFERENCE_ROWS:,} came from another model (v3) than the one the reference "
        "describes (model fingerprint fp7)"
    ) in message
    assert "SERVING_MODEL_URI=models/model" in message
    assert not (tmp_path / "out").exists()


# --- inputs the monitor refuses, before it writes anything --------------------------------


def refused(
    log: Path,
    reference: Path,
    out: Path,
    params: MonitorParams = PARAMS,
    *,
    window: Window = WINDOW,
) -> str:
    with pytest.raises(MonitorInputError) as caught:
        run_monitor(
            params,
            window=window,
            log_path=log,
            reference_path=reference,
            out_dir=out,
            labels_path=None,
            labels_as_of=None,
            now=NOW,
        )
    assert not out.exists(), "a refused run must not write anything"
    return str(caught.value)


def test_too_few_rows_says_how_many_and_what_to_do(
    mixed_log: Path, reference_file: Path, tmp_path: Path
) -> None:
    message = refused(mixed_log, reference_file, tmp_path / "out", MonitorParams(min_rows=5000))
    assert f"only {REFERENCE_ROWS:,} usable rows" in message
    assert "at least 5,000 (monitor.min_rows)" in message
    assert f"Of {REFERENCE_ROWS + 5:,} logged rows" in message
    assert "3 were logged under another feature schema" in message
    assert "2 could not be read" in message
    assert "make replay" in message
    assert "--start" in message


def test_an_empty_window_is_refused(steady_log: Path, reference_file: Path, tmp_path: Path) -> None:
    message = refused(
        steady_log,
        reference_file,
        tmp_path / "out",
        window=Window(WINDOW_END, WINDOW_END + timedelta(hours=24)),
    )
    assert message.startswith("only 0 usable rows")


def test_a_log_of_another_schema_only_points_at_the_reference_stage(
    tmp_path: Path, reference_frame: pd.DataFrame, reference_file: Path
) -> None:
    log = tmp_path / "predictions.db"
    write_log(log, reference_frame, schema=OTHER_SCHEMA)
    message = refused(log, reference_file, tmp_path / "out")
    assert message.startswith("only 0 usable rows")
    assert f"{REFERENCE_ROWS:,} were logged under another feature schema" in message
    assert SCHEMA.fingerprint in message
    assert "dvc repro reference" in message


def test_another_model_version_only_names_the_setting(
    steady_log: Path, reference_file: Path, tmp_path: Path
) -> None:
    message = refused(
        steady_log, reference_file, tmp_path / "out", MonitorParams(min_rows=100, model_version="9")
    )
    assert f"{REFERENCE_ROWS:,} came from other model versions" in message
    assert "monitor.model_version='9'" in message


def test_a_missing_log_is_refused(reference_file: Path, tmp_path: Path) -> None:
    message = refused(tmp_path / "absent.db", reference_file, tmp_path / "out")
    assert "no prediction log at" in message
    assert "make serve" in message


@pytest.mark.parametrize("missing", ["parquet", "json"])
def test_a_missing_reference_names_the_stage(
    missing: str, steady_log: Path, reference_frame: pd.DataFrame, tmp_path: Path
) -> None:
    reference = write_reference(tmp_path / "reference", reference_frame)
    reference.with_suffix(f".{missing}").unlink()
    message = refused(steady_log, reference, tmp_path / "out")
    assert message.startswith(f"no reference data at {reference}")
    assert "dvc repro reference" in message


def test_a_reference_without_a_schema_column_names_it(
    steady_log: Path, reference_frame: pd.DataFrame, tmp_path: Path
) -> None:
    reference = write_reference(tmp_path / "reference", reference_frame.drop(columns="velocity"))
    message = refused(steady_log, reference, tmp_path / "out")
    assert "lacks column(s) ['velocity']" in message
    assert "dvc repro reference" in message


@pytest.mark.parametrize(
    "damage", ["json-text", "json-fields", "parquet"], ids=["bad-json", "bad-info", "bad-table"]
)
def test_an_unreadable_reference_names_the_stage(
    damage: str, steady_log: Path, reference_frame: pd.DataFrame, tmp_path: Path
) -> None:
    reference = write_reference(tmp_path / "reference", reference_frame)
    if damage == "json-text":
        reference.with_suffix(".json").write_text("{not json", encoding="utf-8")
    elif damage == "json-fields":
        reference.with_suffix(".json").write_text('{"threshold": 0.5}', encoding="utf-8")
    else:
        reference.write_bytes(b"PAR1 not really parquet")
    message = refused(steady_log, reference, tmp_path / "out")
    assert f"the reference at {reference} cannot be read" in message
    assert "dvc repro reference" in message


def test_window_ends_are_checked() -> None:
    with pytest.raises(MonitorInputError, match=r"starts .* after it ends"):
        Window.ending(WINDOW_START, WINDOW_END, 24)
    with pytest.raises(MonitorInputError, match="no time zone"):
        Window.ending(datetime(2026, 11, 30, 12), None, 24)
    window = Window.ending(WINDOW_END, None, 6)
    assert (window.start, window.end) == (WINDOW_END - timedelta(hours=6), WINDOW_END)


# --- damaged rows the monitor promises to skip --------------------------------------------


@pytest.fixture
def small_log(tmp_path: Path, reference_frame: pd.DataFrame) -> Path:
    path = tmp_path / "predictions.db"
    write_log(path, reference_frame.head(200))
    return path


def rows_and_counts(log: Path, reference_file: Path) -> tuple[pd.DataFrame, dict[str, object]]:
    return current_rows(log, load_reference(reference_file), WINDOW, PARAMS)


def test_feature_texts_that_are_not_one_array_of_the_schema_width_are_skipped(
    small_log: Path, reference_file: Path
) -> None:
    for number, text in enumerate(["not json", "[1.0, 2.0]", '{"amount": 1}', "", "1.5"]):
        insert_raw(small_log, text, f"broken-{number}")
    frame, counts = rows_and_counts(small_log, reference_file)
    assert counts["unreadable_rows"] == 5
    assert len(frame) == 200
    assert not frame["request_id"].str.startswith("broken").any()


def test_a_feature_text_holding_two_arrays_is_skipped(
    small_log: Path, reference_file: Path
) -> None:
    insert_raw(small_log, "[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]", "two-arrays")
    frame, counts = rows_and_counts(small_log, reference_file)
    assert counts["unreadable_rows"] == 1
    assert len(frame) == 200


def test_a_non_numeric_value_of_a_numeric_feature_is_skipped(
    small_log: Path, reference_file: Path
) -> None:
    insert_raw(small_log, '[1.0, "seven", 3.0, 4.0]', "text-value")
    frame, counts = rows_and_counts(small_log, reference_file)
    assert counts["unreadable_rows"] == 1
    assert len(frame) == 200

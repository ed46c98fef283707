"""One monitoring run: a window of the prediction log against the reference, judged.

Reads only the log, the reference (with the schema the model carries) and, if present,
the labels file (monitoring/inputs.py). Writes the reports (HTML and JSON, a stable
"latest" name and a timestamped copy), appends to the history and redraws its plot.
Every input problem is a :class:`MonitorInputError` with a message that says what to do,
raised before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from fraud_detection.params import MonitorParams
from fraud_detection.reference import SCORE_COLUMN
from monitoring import history, report
from monitoring.inputs import EXIT_DRIFT, EXIT_PASSED, MonitorInputs, Window, read_inputs
from monitoring.labels import join_labels

log = logging.getLogger("monitoring")
HISTORY_DB = "history.db"
HISTORY_PLOT = "history.png"
# The UI project is named after the registered model the reference describes.
UI_PROJECT_FALLBACK = "drift-monitor"


@dataclass(frozen=True)
class MonitorResult:
    exit_code: int
    line: str
    summary: dict[str, Any]


def run_monitor(
    params: MonitorParams,
    *,
    window: Window,
    log_path: str | Path,
    reference_path: Path,
    out_dir: Path,
    labels_path: Path | None,
    labels_as_of: datetime | None,
    workspace: Path | None = None,
    now: datetime | None = None,
) -> MonitorResult:
    """Judge one window and write its reports; MonitorInputError if it cannot be judged."""
    clock = time.perf_counter()
    inputs = read_inputs(
        params,
        window=window,
        log_path=log_path,
        reference_path=reference_path,
        labels_path=labels_path,
    )
    log.info("read %s logged rows in %.1f s", f"{len(inputs.frame):,}", time.perf_counter() - clock)
    return judge(
        inputs,
        params,
        out_dir=out_dir,
        labels_as_of=labels_as_of,
        workspace=workspace,
        now=now,
    )


def judge(
    inputs: MonitorInputs,
    params: MonitorParams,
    *,
    out_dir: Path,
    labels_as_of: datetime | None,
    workspace: Path | None = None,
    now: datetime | None = None,
) -> MonitorResult:
    """Run the reports on inputs already read, apply the gate, write the files."""
    now = now or datetime.now(UTC)
    drift_snapshot, verdict = _drift(inputs, params)
    labelled = _labelled(inputs, labels_as_of)
    quality_snapshot, quality = _quality(inputs, labelled.arrived)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    paths = _report_paths(out_dir, stamp, with_quality=quality_snapshot is not None)
    summary = _summary(
        inputs,
        now=now,
        verdict=verdict,
        quality=quality,
        labelled=labelled,
        paths=paths,
    )
    _write_reports(paths, drift_snapshot, quality_snapshot, summary)
    _prune(paths["html"].parent, params.keep_reports)
    _record(out_dir, summary=summary, verdict=verdict, quality=quality, params=params)
    if workspace is not None:
        name = inputs.reference.info.model_name or UI_PROJECT_FALLBACK
        _add_to_workspace(workspace, name, drift_snapshot, quality_snapshot)
    exit_code = _exit_code(verdict)
    line = one_line(verdict, quality, paths["latest_html"], len(labelled.pending))
    return MonitorResult(exit_code, line, summary)


@dataclass(frozen=True)
class Labelled:
    """The window's rows with a label: arrived by the labels' time, and still to come."""

    arrived: pd.DataFrame
    pending: pd.DataFrame


def _drift(inputs: MonitorInputs, params: MonitorParams) -> tuple[Any, report.DriftVerdict]:
    clock = time.perf_counter()
    schema = inputs.reference.info.feature_schema
    snapshot = report.run(
        report.drift_report(schema, params),
        report.dataset(inputs.frame, schema, labelled=False),
        report.dataset(inputs.reference.table, schema, labelled=False),
    )
    verdict = report.drift_verdict(snapshot, schema, params, len(inputs.reference.table))
    log.info("drift report in %.1f s", time.perf_counter() - clock)
    return snapshot, verdict


def _labelled(inputs: MonitorInputs, labels_as_of: datetime | None) -> Labelled:
    schema = inputs.reference.info.feature_schema
    joined = join_labels(inputs.frame, inputs.labels, schema.target)
    if labels_as_of is None:  # every label counts, as if all had arrived
        return Labelled(joined, joined[:0])
    arrived = joined["available_at"] <= pd.Timestamp(labels_as_of)
    return Labelled(joined[arrived], joined[~arrived])


def _quality(
    inputs: MonitorInputs, labelled: pd.DataFrame
) -> tuple[Any | None, report.Quality | None]:
    """The quality report, when the labelled rows hold both classes."""
    reference = inputs.reference
    schema = reference.info.feature_schema
    if not len(labelled) or labelled[schema.target].nunique() < 2:
        return None, None
    clock = time.perf_counter()
    snapshot = report.run(
        report.quality_report(reference.info.threshold),
        report.dataset(labelled, schema, labelled=True),
        report.dataset(reference.table, schema, labelled=True),
    )
    quality = report.quality(labelled, reference.table, schema)
    log.info(
        "quality report on %s labelled rows in %.1f s",
        f"{len(labelled):,}",
        time.perf_counter() - clock,
    )
    return snapshot, quality


def one_line(
    verdict: report.DriftVerdict,
    quality: report.Quality | None,
    html: Path,
    pending_labels: int = 0,
) -> str:
    shown = ", ".join(
        f"{name} {verdict.feature_drift[name]:.2f}" for name in verdict.drifted_features[:4]
    )
    more = len(verdict.drifted_features) - 4
    drifted = f"{len(verdict.drifted_features)} of {len(verdict.feature_drift)} features drifted"
    if verdict.drifted_features:
        drifted += f" ({shown}{f', +{more} more' if more > 0 else ''})"
    failed = [test.name for test in verdict.tests if not test.passed]
    head = (
        "NO DRIFT: gate passed" if verdict.passed else f"DRIFT: gate failed ({'; '.join(failed)})"
    )
    labels = (
        f", AP {quality.average_precision:.3f} on {quality.rows:,} labelled rows"
        if quality is not None and quality.average_precision is not None
        else ""
    )
    if pending_labels:
        labels += f", labels of {pending_labels:,} rows still to come"
    return (
        f"{head}: {drifted}, score drift {verdict.score_drift:.3f}, {verdict.rows:,} rows"
        f"{labels} -> {html}"
    )


def _exit_code(verdict: report.DriftVerdict) -> int:
    return EXIT_PASSED if verdict.passed else EXIT_DRIFT


def _report_paths(out_dir: Path, stamp: str, *, with_quality: bool) -> dict[str, Path]:
    past = out_dir / "history"
    paths = {
        "html": past / f"{stamp}-drift.html",
        "json": past / f"{stamp}-drift.json",
        "summary": past / f"{stamp}-summary.json",
        "latest_html": out_dir / "latest-drift.html",
        "latest_json": out_dir / "latest-drift.json",
        "latest_summary": out_dir / "latest-summary.json",
    }
    if with_quality:
        paths["quality_html"] = past / f"{stamp}-quality.html"
        paths["latest_quality_html"] = out_dir / "latest-quality.html"
    return paths


def _summary(
    inputs: MonitorInputs,
    *,
    now: datetime,
    verdict: report.DriftVerdict,
    quality: report.Quality | None,
    labelled: Labelled,
    paths: dict[str, Path],
) -> dict[str, Any]:
    window, counts, info = inputs.window, inputs.counts, inputs.reference.info
    pending = labelled.pending["available_at"]
    return {
        "verdict": "no drift" if verdict.passed else "drift",
        "exit_code": _exit_code(verdict),
        "run_at": now.isoformat(),
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        "rows": verdict.rows,
        "rows_in_window": counts["rows_in_window"],
        "skipped": {
            k: v for k, v in counts.items() if k.endswith("_rows") and k != "rows_in_window"
        },
        "model_versions": counts["model_versions"],
        "reference": {
            "rows": verdict.reference_rows,
            "period": [info.period_start, info.period_end],
            "scored_by": info.scored_by,
            "schema_fingerprint": info.feature_schema.fingerprint,
        },
        "drifted_features": verdict.drifted_features,
        "feature_drift": verdict.feature_drift,
        "drifted_share": verdict.drifted_share,
        "score_drift": verdict.score_drift,
        "tests": [asdict(test) for test in verdict.tests],
        "labels": {
            "labelled_rows": len(labelled.arrived),
            "pending_rows": len(pending),
            "next_labels_at": pending.min().isoformat() if len(pending) else None,
            "quality": asdict(quality) if quality is not None else None,
            "test_period": info.test_metrics,
        },
        "reports": {name: str(path) for name, path in paths.items()},
    }


def _write_reports(
    paths: dict[str, Path],
    drift: Any,
    quality: Any | None,
    summary: dict[str, Any],
) -> None:
    """Timestamped files first, then each "latest" file replaced in one rename."""
    paths["html"].parent.mkdir(parents=True, exist_ok=True)
    _atomic(paths["html"], drift.save_html)
    _atomic(paths["json"], drift.save_json)
    text = json.dumps(summary, indent=2) + "\n"
    _atomic(paths["summary"], lambda p: Path(p).write_text(text, encoding="utf-8"))
    pairs = [("html", "latest_html"), ("json", "latest_json"), ("summary", "latest_summary")]
    if quality is not None:
        _atomic(paths["quality_html"], quality.save_html)
        pairs.append(("quality_html", "latest_quality_html"))
    else:
        # A stale quality report beside a new drift report would mislead.
        (paths["latest_html"].parent / "latest-quality.html").unlink(missing_ok=True)
    for source, latest in pairs:
        _atomic(paths[latest], partial(_copy, paths[source]))


def _copy(source: Path, target: str) -> None:
    """A hard link where the file system allows it: the reports are megabytes each."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _prune(folder: Path, keep: int) -> None:
    """Keep the reports of the latest ``keep`` runs; history.db keeps every run's numbers."""
    stamps = sorted({path.name.split("-", 1)[0] for path in folder.glob("*-summary.json")})
    for stamp in stamps[:-keep] if len(stamps) > keep else []:
        for path in folder.glob(f"{stamp}-*"):
            path.unlink(missing_ok=True)


def _atomic(target: Path, write: Callable[[str], Any]) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        write(str(temporary))
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)


def _record(
    out_dir: Path,
    *,
    summary: dict[str, Any],
    verdict: report.DriftVerdict,
    quality: report.Quality | None,
    params: MonitorParams,
) -> None:
    database = out_dir / HISTORY_DB
    history.append(
        database,
        history.HistoryRecord(
            run_at=summary["run_at"],
            window_start=summary["window"]["start"],
            window_end=summary["window"]["end"],
            rows=verdict.rows,
            drifted_features=len(verdict.drifted_features),
            drifted_share=verdict.drifted_share,
            score_drift=verdict.score_drift,
            passed=verdict.passed,
            labelled_rows=summary["labels"]["labelled_rows"],
            average_precision=quality.average_precision if quality else None,
            precision=quality.precision if quality else None,
            recall=quality.recall if quality else None,
            report=summary["reports"]["html"],
        ),
    )
    history.plot(
        history.read(database),
        out_dir / HISTORY_PLOT,
        max_share=params.gate.max_drifted_share,
        max_score_drift=params.gate.max_score_drift,
    )


def _add_to_workspace(workspace: Path, name: str, *snapshots: Any) -> None:
    """Add the run's snapshots to a local Evidently UI workspace (make monitor-ui)."""
    # The UI's workspace pulls in its own stack; only runs that ask for it pay for that.
    from evidently.ui.workspace import Workspace  # noqa: PLC0415

    space = Workspace.create(str(workspace))
    projects = space.search_project(name)
    project = projects[0] if projects else _new_project(space, name)
    for snapshot in snapshots:
        if snapshot is not None:
            space.add_run(project.id, snapshot, include_data=False)


def _new_project(space: Any, name: str) -> Any:
    """The UI project, with a dashboard of the gate's numbers over the runs."""
    from evidently.sdk.models import PanelMetric  # noqa: PLC0415
    from evidently.sdk.panels import line_plot_panel  # noqa: PLC0415

    project = space.create_project(name, description="Drift of the served model")
    panels = [
        ("Drifted features", "DriftedColumnsCount", {"value_type": "count"}),
        ("Score drift", "ValueDrift", {"column": SCORE_COLUMN}),
        ("Rows judged", "RowCount", {}),
        ("Precision at the threshold", "Precision", {}),
        ("Recall at the threshold", "Recall", {}),
    ]
    for title, metric, labels in panels:
        project.dashboard.add_panel(
            line_plot_panel(
                title=title,
                values=[PanelMetric(legend=title, metric=metric, metric_labels=labels)],
                size="half",
            )
        )
    return project

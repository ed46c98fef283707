"""DVC stage `monitor_baseline`: serve the new model, replay a seeded week, judge it.

The same parts as production, end to end: the service (`python -m serving`, a real
process on a free local port) scores the replayed traffic and writes its prediction log;
the monitor reads only that log, the reference and the labels. Drift scenarios are
switched off whatever params.yaml says, so the baseline shows what "no drift" looks like
for this model and reference. A baseline that drifts is reported loudly (the reference
and the traffic disagree), but it is a finding, not a failed pipeline; a monitor that
cannot run is a failure.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from fraud_detection.errors import USER_ERRORS
from fraud_detection.io.files import load_params, write_json
from fraud_detection.params import DriftScenarios
from fraud_detection.workspace import BASELINE_DIR, BASELINE_METRICS, MODEL_DIR
from monitoring.inputs import Window
from monitoring.monitor import run_monitor
from monitoring.prediction_log import MonitorInputError
from monitoring.replay import ReplayError, replay

READY_TIMEOUT_SECONDS = 90

log = logging.getLogger("monitor_baseline")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_service(
    model: Path, prediction_log: Path, port: int, output: Path
) -> subprocess.Popen[bytes]:
    """`python -m serving` with its output in a file (a pipe nobody reads could fill up)."""
    env = os.environ | {
        "SERVING_MODEL_URI": str(model.resolve()),
        "SERVING_PREDICTION_LOG": str(prediction_log),
        "SERVING_HOST": "127.0.0.1",
        "SERVING_PORT": str(port),
        "SERVING_ACCESS_LOG": "false",
    }
    with output.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "serving"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )


def wait_ready(
    service: subprocess.Popen[bytes],
    url: str,
    output: Path,
    *,
    path: str = "/ready",
    timeout: float = READY_TIMEOUT_SECONDS,
) -> None:
    """Until ``url + path`` answers 200; the service's last output if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.poll() is not None:
            said = output.read_text(errors="replace")[-3000:]
            raise ReplayError(f"the service exited with code {service.returncode}:\n{said}")
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ReplayError(f"{url}{path} did not answer 200 within {timeout:g} s")


def stop_service(service: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as an orchestrator would: the service drains its log before it exits."""
    if service.poll() is None:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s baseline | %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    params = load_params()
    # Batches: the transport does not change what is logged, and it is 50x faster.
    replay_params = params.replay.model_copy(
        update={"scenarios": DriftScenarios(), "batch_size": 500, "concurrency": 2, "rate": 0.0}
    )
    with tempfile.TemporaryDirectory(prefix="baseline-") as scratch:
        prediction_log, labels = Path(scratch, "predictions.db"), Path(scratch, "labels.parquet")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        start = datetime.now(UTC)
        output = Path(scratch, "service.log")
        service = start_service(MODEL_DIR, prediction_log, port, output)
        try:
            wait_ready(service, url, output)
            code = replay(
                params,
                replay_params.model_copy(update={"url": url}),
                labels_path=labels,
                show_progress=False,
            )
        finally:
            stop_service(service)
        if code != 0:
            raise ReplayError("some replayed requests failed; see the lines above")
        result = run_monitor(
            params.monitor,
            window=Window(start, datetime.now(UTC) + timedelta(seconds=1)),
            log_path=prediction_log,
            reference_path=Path(params.monitor.reference_path),
            out_dir=BASELINE_DIR,
            labels_path=labels,
            labels_as_of=None,  # the baseline shows quality as it will be once labels arrive
        )
    print(result.line)
    summary = result.summary
    quality = summary["labels"]["quality"] or {}
    write_json(
        {
            "passed": summary["verdict"] == "no drift",
            "rows": summary["rows"],
            "drifted_features": len(summary["drifted_features"]),
            "drifted_share": summary["drifted_share"],
            "score_drift": summary["score_drift"],
            "average_precision": quality.get("average_precision"),
            "precision": quality.get("precision"),
            "recall": quality.get("recall"),
        },
        BASELINE_METRICS,
    )
    if result.exit_code != 0:
        log.warning(
            "the seeded no-drift replay DRIFTED: %s. The reference and the model's live "
            "traffic disagree; see %s",
            ", ".join(summary["drifted_features"]) or "the score",
            summary["reports"]["latest_html"],
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ReplayError, MonitorInputError, *USER_ERRORS) as error:  # type: ignore[misc]
        print(f"monitor_baseline failed: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)

"""`python -m monitoring` (make monitor): judge a window of the prediction log for drift.

Exit codes: 0 no drift (the gate passed), 1 drift (the gate failed), 2 the monitor could
not run (the message says why and what to do). Evidently is imported only after the
arguments, params and input files are checked, so mistakes there answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fraud_detection.errors import USER_ERRORS
from fraud_detection.io.files import load_params
from monitoring.inputs import EXIT_ERROR, Window, read_inputs
from monitoring.prediction_log import MonitorInputError

EXPECTED_ERRORS: tuple[type[Exception], ...] = (MonitorInputError, *USER_ERRORS)

log = logging.getLogger("monitoring")


def moment(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time such as 2026-11-30T12:00:00Z"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def duration(text: str) -> timedelta:
    """A length of time such as 90s, 15m, 2h or 1d."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    try:
        amount = float(text[:-1])
        if text[-1:] not in units or amount <= 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration such as 90s, 15m, 2h or 1d"
        ) from None
    return timedelta(**{units[text[-1]]: amount})


def labels_moment(text: str) -> datetime | None:
    return None if text == "all" else moment(text)


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="python -m monitoring",
        description="Compare a window of the prediction log with the reference data "
        "(Evidently) and apply the drift gate. Exit 0: no drift; 1: drift; 2: could not run.",
    )
    cli.add_argument("--params", type=Path, default=Path("params.yaml"))
    cli.add_argument(
        "--log",
        help="prediction log: a SQLite file or a postgresql:// URL (default: the service's "
        "SERVING_PREDICTION_LOG when set, else monitor.log_path)",
    )
    cli.add_argument("--reference", type=Path, help="default: monitor.reference_path")
    cli.add_argument("--out", type=Path, help="report folder (default: monitor.out_dir)")
    cli.add_argument("--start", type=moment, help="window start, UTC (default: end - window)")
    cli.add_argument("--end", type=moment, help="window end, UTC (default: now)")
    cli.add_argument(
        "--last", type=duration, help="window length, e.g. 15m or 2h (default: window_hours)"
    )
    cli.add_argument("--labels", type=Path, help="labels file (default: monitor.labels_path)")
    cli.add_argument(
        "--labels-as-of",
        type=labels_moment,
        default=datetime.now(UTC),
        metavar="TIME|all",
        help="use the labels available at this time (default: now; 'all': every label)",
    )
    cli.add_argument(
        "--workspace", type=Path, help="also add the snapshots to this Evidently UI workspace"
    )
    return cli


# The service's setting: in a shell set up for the shared stack (python -m stack env) the
# monitor reads the log the replicas write.
LOG_VARIABLE = "SERVING_PREDICTION_LOG"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    started = time.perf_counter()
    try:
        params = load_params(args.params).monitor
        hours = args.last.total_seconds() / 3600 if args.last else params.window_hours
        inputs = read_inputs(
            params,
            window=Window.ending(args.end, args.start, hours),
            log_path=args.log or os.environ.get(LOG_VARIABLE) or params.log_path,
            reference_path=args.reference or Path(params.reference_path),
            labels_path=args.labels or Path(params.labels_path),
        )
        log.info("read %s logged rows", f"{len(inputs.frame):,}")
        # Evidently takes seconds to import: only once the inputs are known to be good.
        from monitoring.monitor import judge  # noqa: PLC0415

        result = judge(
            inputs,
            params,
            out_dir=args.out or Path(params.out_dir),
            labels_as_of=args.labels_as_of,
            workspace=args.workspace,
        )
    except EXPECTED_ERRORS as error:
        print(f"monitor could not run: {error}", file=sys.stderr)
        return EXIT_ERROR
    except Exception:
        # Exit 2 (could not run), not 1: a crash must never read as "drift detected".
        log.exception("monitor failed unexpectedly (a bug: please report it with this trace)")
        return EXIT_ERROR
    print(result.line)
    log.info("monitor took %.1f s", time.perf_counter() - started)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())

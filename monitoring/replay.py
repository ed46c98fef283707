"""`python -m monitoring.replay` (make replay): send "production" traffic to the service.

The transactions come from the days after the test period, simulated in the same world
(fraud_detection.traffic), with any drift scenarios switched on. They go to a running
service over HTTP, row by row (POST /predict) or in batches (POST /predict/batch), at a
set rate and concurrency, each request with its own X-Request-ID. The true labels of the
transactions the service accepted are appended to a labels file with the time they become
known (features.label_delay_days later): the monitor joins them on request id.

Exit codes: 0 every request answered 2xx; 1 some failed (the labels of the others are
still written); 2 could not start (no service, wrong model, bad params).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from pydantic import ValidationError
from tqdm import tqdm

from fraud_detection.errors import USER_ERRORS, ParamsError
from fraud_detection.io.files import atomic_path, load_params, parquet_frame, read_parquet
from fraud_detection.params import Params, ReplayParams, format_validation_error
from fraud_detection.schema import FeatureSchema
from fraud_detection.traffic import held_out_traffic, replay_traffic
from fraud_detection.workspace import TEST_SET

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2
# CSV data has no world to continue: its replay sends the split stage's held-out rows.
# Stop early when this many requests in a row fail: the service is down or rejects all.
MAX_FAILURES_IN_A_ROW = 20


class ReplayError(RuntimeError):
    """The replay cannot start or go on; the message says what to do."""


EXPECTED_ERRORS: tuple[type[Exception], ...] = (ReplayError, *USER_ERRORS)


@dataclass
class Outcome:
    """What happened to the requests, and the labels of the rows the service accepted."""

    sent_rows: int = 0
    requests: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None
    accepted: list[tuple[str, int, int]] = field(default_factory=list)  # id, batch row, row
    failures_in_a_row: int = 0
    streak_error: str | None = None  # the first error of the current run of failures
    # Why the replay stopped early (the accepted rows' labels are still written).
    aborted: str | None = None

    def failed(self, what: str, detail: str) -> None:
        self.failures[what] += 1
        self.failures_in_a_row += 1
        error = f"{what}: {detail}"
        self.first_error = self.first_error or error
        if self.failures_in_a_row == 1:
            self.streak_error = error
        if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            self.aborted = (
                f"{MAX_FAILURES_IN_A_ROW} requests in a row failed, the first with "
                f"{self.streak_error}; check the service's log and GET /ready"
            )


# The service's API key, when it has keys (docs/security.md): a client's variable, not one
# of the service's SERVING_* settings. Sent in the header the service reads.
API_KEY_ENV = "FRAUD_API_KEY"
API_KEY_HEADER = "X-API-Key"


def key_headers() -> dict[str, str]:
    """The X-API-Key header from FRAUD_API_KEY, or none."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    return {API_KEY_HEADER: key} if key else {}


def served_schema(client: httpx.Client) -> FeatureSchema:
    """The schema of the model the service runs (GET /ready, then GET /model)."""
    try:
        ready = client.get("/ready")
    except httpx.HTTPError as error:
        raise ReplayError(
            f"no service answers at {client.base_url} ({error}); start it with `make serve` "
            "(or `make docker-run`), or pass --url"
        ) from None
    if ready.status_code == 401:
        sent = API_KEY_HEADER in client.headers
        raise ReplayError(
            f"the service at {client.base_url} refused "
            + (f"the key in {API_KEY_ENV}: set it to one of the service's API keys"
               if sent else f"a request without an API key: set {API_KEY_ENV} to one of its keys")
        )  # fmt: skip
    if ready.status_code != 200:
        raise ReplayError(f"the service at {client.base_url} is not ready: {ready.text}")
    card = client.get("/model").json()
    return FeatureSchema.model_validate(card["feature_schema"])


def check_traffic(traffic: pd.DataFrame, schema: FeatureSchema) -> None:
    missing = [name for name in [*schema.names, schema.target] if name not in traffic.columns]
    if missing:
        raise ReplayError(
            f"the served model expects feature(s) {missing} the simulator does not make; "
            "replay the data the model was trained on (data.source in params.yaml)"
        )
    outside = [
        f"{feature.name} {values.min():g}..{values.max():g} (the API takes "
        f"{feature.minimum if feature.minimum is not None else '-inf'}.."
        f"{feature.maximum if feature.maximum is not None else 'inf'})"
        for feature in schema.features
        if feature.kind == "numeric"
        for values in [traffic[feature.name]]
        if (feature.minimum is not None and values.min() < feature.minimum)
        or (feature.maximum is not None and values.max() > feature.maximum)
    ]
    if outside:
        raise ReplayError(
            f"the service would reject every row with {'; '.join(outside)}: change the "
            "drift scenario (e.g. replay.scenarios.broken_feature.value) to a value in range"
        )


class RateLimiter:
    """Spaces request starts evenly at ``rate`` per second across all workers (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_start = time.perf_counter()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.perf_counter()
        start = max(now, self.next_start)
        self.next_start = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


async def send_all(
    client: httpx.AsyncClient,
    rows: list[dict[str, Any]],
    params: ReplayParams,
    run_id: str,
    progress: tqdm[Any] | None = None,
) -> Outcome:
    """Send ``rows`` in chunks of ``params.batch_size`` with ``params.concurrency`` workers."""
    size = params.batch_size
    chunks: asyncio.Queue[int] = asyncio.Queue()
    for start in range(0, len(rows), size):
        chunks.put_nowait(start)
    outcome, limiter = Outcome(), RateLimiter(params.rate)

    async def worker() -> None:
        while not chunks.empty() and outcome.aborted is None:
            start = chunks.get_nowait()
            await limiter.wait()
            chunk = rows[start : start + size]
            request_id = f"{run_id}-{start // size:07d}"
            await _send(
                client,
                chunk,
                first_row=start,
                request_id=request_id,
                batch_size=size,
                outcome=outcome,
            )
            if progress is not None:
                progress.update(len(chunk))

    await asyncio.gather(*(worker() for _ in range(params.concurrency)))
    return outcome


async def _send(
    client: httpx.AsyncClient,
    chunk: list[dict[str, Any]],
    *,
    first_row: int,
    request_id: str,
    batch_size: int,
    outcome: Outcome,
) -> None:
    path, body = (
        ("/predict", chunk[0]) if batch_size == 1 else ("/predict/batch", {"transactions": chunk})
    )
    outcome.requests += 1
    outcome.sent_rows += len(chunk)
    try:
        response = await client.post(path, json=body, headers={"X-Request-ID": request_id})
    except httpx.HTTPError as error:
        outcome.failed(type(error).__name__, str(error) or "no answer")
        return
    if response.is_success:
        outcome.failures_in_a_row = 0
        outcome.accepted.extend((request_id, i, first_row + i) for i in range(len(chunk)))
    else:
        outcome.failed(f"HTTP {response.status_code}", response.text[:500])


def labels_table(
    traffic: pd.DataFrame, outcome: Outcome, target: str, available_at: datetime
) -> pd.DataFrame:
    """One row per accepted transaction: its request id, row in the batch and true label."""
    accepted = outcome.accepted
    picked = traffic.iloc[[position for _, _, position in accepted]]
    return pd.DataFrame(
        {
            "request_id": pd.Series([rid for rid, _, _ in accepted], dtype="string"),
            "row_index": np.asarray([row for _, row, _ in accepted], dtype=np.int64),
            "label": picked[target].to_numpy().astype(np.int64),
            "available_at": pd.Timestamp(available_at),
        }
    ).assign(
        # Simulated traffic only: when it happened and which fraud scenario made it.
        **{
            name: picked[column].to_numpy()
            for name, column in (
                ("transaction_time", "TX_DATETIME"),
                ("fraud_scenario", "TX_FRAUD_SCENARIO"),
            )
            if column in picked.columns
        }
    )


def append_labels(path: Path, new: pd.DataFrame) -> None:
    """Add to the labels file in one atomic replace (earlier replays' labels stay)."""
    frames = [new]
    if path.is_file():
        frames.insert(0, parquet_frame(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        pd.concat(frames, ignore_index=True).to_parquet(temporary, index=False)


def with_overrides(params: ReplayParams, args: argparse.Namespace) -> ReplayParams:
    """The replay section with the command line's values on top (validated again)."""
    raw = params.model_dump()
    keys = ("url", "rows", "batch_size", "rate", "concurrency", "seed", "days", "days_after_test")
    for key in keys:
        value = getattr(args, key)
        if value is not None:
            raw[key] = value
    for name in args.scenario or []:
        if name not in raw["scenarios"]:
            raise ParamsError(f"--scenario {name}: unknown; choose from {sorted(raw['scenarios'])}")
        raw["scenarios"][name]["enabled"] = True
    try:
        return ReplayParams.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(format_validation_error(error, "replay options")) from None


def make_traffic(all_params: Params, params: ReplayParams, schema: FeatureSchema) -> pd.DataFrame:
    """Simulated days after the test period, or for CSV data the held-out test rows."""
    started = time.perf_counter()
    if all_params.data.source == "simulator":
        traffic = replay_traffic(
            all_params.data.simulator, all_params.features, all_params.split, params
        )
        origin = (
            f"transactions from {traffic['TX_DATETIME'].min():%Y-%m-%d} to "
            f"{traffic['TX_DATETIME'].max():%Y-%m-%d}"
        )
    else:
        test = read_parquet(TEST_SET, made_by="split")
        traffic, incomplete = held_out_traffic(test, schema.names, params)
        origin = f"held-out rows of {TEST_SET} ({incomplete:,} with missing values left out)"
    check_traffic(traffic, schema)
    scenarios = ", ".join(params.scenarios.enabled) or "no drift scenario"
    print(
        f"replaying {len(traffic):,} {origin} ({scenarios}; seed {params.seed}) to "
        f"{params.url}, made in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return traffic


def replay(
    all_params: Params, params: ReplayParams, *, labels_path: Path, show_progress: bool
) -> int:
    """Send the traffic; append its labels to ``labels_path`` (the monitor reads them)."""
    with httpx.Client(base_url=params.url, timeout=10, headers=key_headers()) as client:
        schema = served_schema(client)
    traffic = make_traffic(all_params, params, schema)
    rows = [
        dict(zip(schema.names, values, strict=True))
        for values in traffic[schema.names].itertuples(index=False, name=None)
    ]
    began = datetime.now(UTC)
    run_id = f"replay-{began:%Y%m%dT%H%M%S}-s{params.seed}"
    started = time.perf_counter()
    outcome = asyncio.run(_run(rows, params, run_id, show_progress))
    elapsed = time.perf_counter() - started
    delay = timedelta(days=all_params.features.label_delay_days)
    labels = labels_table(traffic, outcome, schema.target, datetime.now(UTC) + delay)
    append_labels(labels_path, labels)
    failed = sum(outcome.failures.values())
    print(
        f"sent {outcome.sent_rows:,} rows in {outcome.requests:,} requests in {elapsed:.1f} s "
        f"({outcome.sent_rows / max(elapsed, 1e-9):,.0f} rows/s); {failed:,} failed"
        + (f" ({dict(outcome.failures)}; first: {outcome.first_error})" if failed else "")
        + f"; {len(labels):,} labels appended to {labels_path}, known from "
        f"{datetime.now(UTC) + delay:%Y-%m-%d %H:%M} UTC (--labels-as-of all to use them now)"
    )
    # Seconds, rounded down: the window then starts just before the replay's first row.
    since = began.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f'to judge this replay alone: make monitor MONITOR_ARGS="--start {since}"')
    if outcome.aborted:
        raise ReplayError(f"stopped early: {outcome.aborted}")
    return EXIT_SOME_FAILED if failed else EXIT_OK


async def _run(
    rows: list[dict[str, Any]], params: ReplayParams, run_id: str, show_progress: bool
) -> Outcome:
    limits = httpx.Limits(max_connections=params.concurrency)
    with tqdm(total=len(rows), unit="rows", disable=not show_progress, mininterval=0.5) as progress:
        async with httpx.AsyncClient(
            base_url=params.url, timeout=30, limits=limits, headers=key_headers()
        ) as client:
            return await send_all(client, rows, params, run_id, progress)


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="python -m monitoring.replay",
        description="Send simulated production traffic (days after the test period) to the "
        "running service; write the true labels to a 'labels arrive later' file. Defaults "
        "come from the replay section of params.yaml.",
    )
    cli.add_argument("--params", type=Path, default=Path("params.yaml"))
    cli.add_argument("--url", help="the service's base URL")
    cli.add_argument("--rows", type=int, help="transactions to send")
    cli.add_argument("--batch-size", type=int, help="1: /predict per row; more: /predict/batch")
    cli.add_argument("--rate", type=float, help="requests per second (0: as fast as served)")
    cli.add_argument("--concurrency", type=int, help="requests in flight")
    cli.add_argument("--seed", type=int, help="which transactions are drawn")
    cli.add_argument("--days", type=int, help="days of traffic to draw the rows from")
    cli.add_argument("--days-after-test", type=int, help="first replayed day after the test")
    cli.add_argument(
        "--labels", type=Path, help="labels file to append to (default: monitor.labels_path)"
    )
    cli.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="switch on a drift scenario of replay.scenarios (repeatable): amount_shift, "
        "new_fraud_pattern, broken_feature, customer_mix",
    )
    cli.add_argument("--no-progress", action="store_true", help="no progress bar")
    return cli


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        all_params = load_params(args.params)
        params = with_overrides(all_params.replay, args)
        labels = args.labels or Path(all_params.monitor.labels_path)
        return replay(all_params, params, labels_path=labels, show_progress=not args.no_progress)
    except EXPECTED_ERRORS as error:
        print(f"replay could not run: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("replay interrupted: no labels written for this run", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

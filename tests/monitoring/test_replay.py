"""monitoring.replay: command-line overrides, pacing, sending traffic to the real service
(in-process, its lifespan run as uvicorn runs it), and the labels file it writes."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from fraud_detection.errors import ParamsError
from fraud_detection.params import ReplayParams
from fraud_detection.schema import FeatureSchema
from monitoring.labels import read_labels
from monitoring.prediction_log import read_predictions
from monitoring.replay import (
    API_KEY_ENV,
    MAX_FAILURES_IN_A_ROW,
    Outcome,
    RateLimiter,
    ReplayError,
    append_labels,
    key_headers,
    labels_table,
    main,
    parser,
    send_all,
    served_schema,
    with_overrides,
)
from serving.app import create_app
from serving.settings import ENV_PREFIX, Settings
from tests.model_helpers import mixed_data, mixed_model_folder

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "replay-20261130T120000-s1"
ARRIVES = datetime(2026, 12, 7, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_serving_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read SERVING_* variables: the developer's own must not leak in."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- command-line overrides ------------------------------------------------------------


def overrides(*argv: str) -> ReplayParams:
    return with_overrides(ReplayParams(), parser().parse_args(list(argv)))


def test_command_line_values_override_the_params() -> None:
    params = overrides(
        *["--rows", "50", "--batch-size", "8", "--rate", "12.5", "--concurrency", "3"],
        *["--seed", "9", "--days", "2", "--days-after-test", "4"],
        *["--url", "http://service:9000"],
        *["--scenario", "amount_shift", "--scenario", "broken_feature"],
    )
    assert (params.rows, params.batch_size, params.rate, params.concurrency) == (50, 8, 12.5, 3)
    assert (params.seed, params.days, params.days_after_test) == (9, 2, 4)
    assert params.url == "http://service:9000"
    assert params.scenarios.enabled == ["amount_shift", "broken_feature"]


def test_without_options_the_params_stay() -> None:
    base = ReplayParams(rows=77, batch_size=5)
    assert with_overrides(base, parser().parse_args([])) == base


def test_an_unknown_scenario_lists_the_choices() -> None:
    with pytest.raises(ParamsError) as caught:
        overrides("--scenario", "meteor_strike")
    assert str(caught.value) == (
        "--scenario meteor_strike: unknown; choose from "
        "['amount_shift', 'broken_feature', 'customer_mix', 'new_fraud_pattern']"
    )


@pytest.mark.parametrize(
    ("argv", "key"),
    [(["--batch-size", "0"], "batch_size"), (["--rate", "-1"], "rate"), (["--rows", "0"], "rows")],
)
def test_an_invalid_value_is_a_params_error_naming_the_key(argv: list[str], key: str) -> None:
    with pytest.raises(ParamsError, match=rf"replay options is invalid.*\n  - {key}:"):
        overrides(*argv)


# --- pacing ----------------------------------------------------------------------------


def test_the_rate_limiter_spaces_request_starts() -> None:
    async def twenty_waits(rate: float) -> float:
        limiter = RateLimiter(rate)
        started = time.perf_counter()
        for _ in range(20):
            await limiter.wait()
        return time.perf_counter() - started

    # The first start is at once, the next 19 a hundredth of a second apart.
    assert 0.185 <= asyncio.run(twenty_waits(100)) < 1.0
    assert asyncio.run(twenty_waits(0)) < 0.05  # 0: no limit


# --- sending to the real service ---------------------------------------------------------


@dataclass(frozen=True)
class Model:
    folder: Path
    schema: FeatureSchema


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    folder, schema, _ = mixed_model_folder(tmp_path_factory.mktemp("model") / "model")
    return Model(folder, schema)


def good_rows(count: int) -> list[dict[str, Any]]:
    """Rows the service accepts (the fixture data has NaN scores, which it refuses)."""
    X, _ = mixed_data(rows=count * 2, seed=3)
    rows = [
        {str(name): value for name, value in row.items()}
        for row in X.dropna().head(count).to_dict("records")
    ]
    assert len(rows) == count
    return rows


def without_score(row: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name != "score"}


@dataclass(frozen=True)
class Served:
    outcome: Outcome
    logged: pd.DataFrame


def serve(model: Model, log: Path, rows: list[dict[str, Any]], **options: Any) -> Served:
    """Run the service app's lifespan, send ``rows`` through it, then read its log."""
    params = ReplayParams(**({"concurrency": 4} | options))

    async def run() -> Outcome:
        app = create_app(Settings(model_uri=str(model.folder), prediction_log=log))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await send_all(client, rows, params, RUN_ID)

    outcome = asyncio.run(run())  # the lifespan has closed the log: every row is written
    return Served(outcome, read_predictions(log, model.schema).frame)


def logged_keys(logged: pd.DataFrame) -> set[tuple[str, int]]:
    return set(zip(logged["request_id"], logged["row_index"].astype(int), strict=True))


@pytest.mark.parametrize("batch_size", [1, 7])
def test_every_row_is_sent_accepted_and_logged_under_its_request_id(
    model: Model, tmp_path: Path, batch_size: int
) -> None:
    rows = good_rows(30)
    served = serve(model, tmp_path / "predictions.db", rows, batch_size=batch_size)
    outcome = served.outcome
    chunks = -(-30 // batch_size)
    assert (outcome.sent_rows, outcome.requests) == (30, chunks)
    assert outcome.failures == Counter()
    assert outcome.aborted is None
    assert sorted(outcome.accepted, key=lambda accepted: accepted[2]) == [
        (f"{RUN_ID}-{position // batch_size:07d}", position % batch_size, position)
        for position in range(30)
    ]
    assert len({request for request, _, _ in outcome.accepted}) == chunks
    logged = served.logged
    assert len(logged) == 30
    assert logged_keys(logged) == {(request, row) for request, row, _ in outcome.accepted}
    # Each logged row holds the features of the row sent under that id.
    amounts = logged.set_index(["request_id", "row_index"])["amount"]
    for request, row, position in outcome.accepted:
        assert amounts[(request, row)] == rows[position]["amount"]


def test_rejected_requests_are_counted_and_their_rows_not_labelled(
    model: Model, tmp_path: Path
) -> None:
    rows = good_rows(12)
    rows[3] = without_score(rows[3])  # a feature missing: 422
    rows[9] = without_score(rows[9])
    served = serve(model, tmp_path / "predictions.db", rows, batch_size=1, concurrency=1)
    outcome = served.outcome
    assert outcome.failures == Counter({"HTTP 422": 2})
    assert outcome.first_error is not None
    assert outcome.first_error.startswith("HTTP 422: ")
    assert "score" in outcome.first_error
    assert outcome.aborted is None
    assert outcome.failures_in_a_row == 0
    assert sorted(position for _, _, position in outcome.accepted) == [
        position for position in range(12) if position not in (3, 9)
    ]
    assert len(served.logged) == 10


def test_a_bad_row_fails_its_whole_batch(model: Model, tmp_path: Path) -> None:
    rows = good_rows(15)
    rows[6] = without_score(rows[6])  # in the second batch of five
    served = serve(model, tmp_path / "predictions.db", rows, batch_size=5)
    assert served.outcome.failures == Counter({"HTTP 422": 1})
    assert sorted(position for _, _, position in served.outcome.accepted) == [
        *range(5),
        *range(10, 15),
    ]
    assert set(served.logged["request_id"]) == {f"{RUN_ID}-0000000", f"{RUN_ID}-0000002"}


def test_too_many_failures_in_a_row_stop_the_replay(model: Model, tmp_path: Path) -> None:
    rows = [without_score(row) for row in good_rows(50)]
    served = serve(model, tmp_path / "predictions.db", rows, batch_size=1, concurrency=2)
    outcome = served.outcome
    assert outcome.aborted is not None
    assert f"{MAX_FAILURES_IN_A_ROW} requests in a row failed" in outcome.aborted
    assert "HTTP 422" in outcome.aborted
    # Stopped after the 20th failure (the other worker may have had one in flight).
    assert MAX_FAILURES_IN_A_ROW <= outcome.requests <= MAX_FAILURES_IN_A_ROW + 1
    assert outcome.sent_rows == outcome.requests
    assert outcome.failures == Counter({"HTTP 422": outcome.requests})
    assert outcome.accepted == []
    assert served.logged.empty


def test_served_schema_is_the_schema_of_the_served_model(model: Model, tmp_path: Path) -> None:
    app = create_app(Settings(model_uri=str(model.folder), prediction_log=tmp_path / "p.db"))
    with TestClient(app) as client:
        assert served_schema(client) == model.schema


def test_served_schema_of_a_service_without_a_model_says_it_is_not_ready(
    tmp_path: Path,
) -> None:
    settings = Settings(model_uri=str(tmp_path / "no-model"), prediction_log=tmp_path / "p.db")
    with TestClient(create_app(settings)) as client, pytest.raises(ReplayError) as caught:
        served_schema(client)
    assert str(caught.value).startswith("the service at http://testserver is not ready")


def test_served_schema_without_a_service_says_make_serve() -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    with httpx.Client(base_url=url, timeout=5) as client, pytest.raises(ReplayError) as caught:
        served_schema(client)
    message = str(caught.value)
    assert message.startswith(f"no service answers at {url}")
    assert "make serve" in message


def test_main_without_a_service_exits_2_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{unused_port()}"
    code = main(["--params", str(REPO / "params.yaml"), "--url", url, "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith(f"replay could not run: no service answers at {url}")
    assert "make serve" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert list(tmp_path.iterdir()) == []  # no labels file


# --- the labels file ---------------------------------------------------------------------


def traffic(rows: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "TX_DATETIME": pd.date_range("2018-09-01", periods=rows, freq="h"),
            "TX_FRAUD_SCENARIO": np.arange(rows) % 3,
            "fraud": np.arange(rows) % 2,
        }
    )


def test_labels_table_has_one_row_per_accepted_transaction() -> None:
    outcome = Outcome(accepted=[("r-1", 0, 2), ("r-1", 1, 3), ("r-0", 0, 0)])
    table = labels_table(traffic(), outcome, "fraud", ARRIVES)
    assert table["request_id"].tolist() == ["r-1", "r-1", "r-0"]
    assert table["row_index"].tolist() == [0, 1, 0]
    assert table["label"].tolist() == [0, 1, 0]
    assert table["fraud_scenario"].tolist() == [2, 0, 0]
    assert table["transaction_time"].tolist() == [
        pd.Timestamp("2018-09-01 02:00"),
        pd.Timestamp("2018-09-01 03:00"),
        pd.Timestamp("2018-09-01 00:00"),
    ]
    assert (table["available_at"] == pd.Timestamp(ARRIVES)).all()


def test_append_labels_keeps_earlier_replays_and_the_monitor_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "labels.parquet"
    first = labels_table(traffic(), Outcome(accepted=[("a", 0, 0), ("a", 1, 1)]), "fraud", ARRIVES)
    second = labels_table(traffic(), Outcome(accepted=[("b", 0, 3)]), "fraud", ARRIVES)
    append_labels(path, first)
    append_labels(path, second)
    assert pd.read_parquet(path)["request_id"].tolist() == ["a", "a", "b"]
    labels = read_labels(path)
    assert labels[["request_id", "row_index", "label"]].values.tolist() == [
        ["a", 0, 0],
        ["a", 1, 1],
        ["b", 0, 1],
    ]
    assert [child.name for child in path.parent.iterdir()] == ["labels.parquet"]


def test_a_failed_append_leaves_the_labels_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    first = labels_table(traffic(), Outcome(accepted=[("a", 0, 0)]), "fraud", ARRIVES)
    append_labels(path, first)
    before = path.read_bytes()
    unwritable = first.copy()
    unwritable["fraud_scenario"] = pd.Series([object()], dtype=object)  # parquet cannot store it
    with pytest.raises(Exception, match="object"):
        append_labels(path, unwritable)
    assert path.read_bytes() == before
    assert [child.name for child in tmp_path.iterdir()] == ["labels.parquet"]


# --- a service with API keys ------------------------------------------------------------

SERVICE_KEY = "the-services-key-0123456789abcdef"


@pytest.mark.parametrize(
    ("sent", "said"),
    [
        (None, "refused a request without an API key: set FRAUD_API_KEY"),
        ("not-the-services-key-0123456789", "refused the key in FRAUD_API_KEY"),
    ],
)
def test_a_service_with_keys_says_which_variable_to_set(
    model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sent: str | None, said: str
) -> None:
    if sent is None:
        monkeypatch.delenv(API_KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(API_KEY_ENV, sent)
    settings = Settings(
        model_uri=str(model.folder), prediction_log=tmp_path / "p.db", api_keys=SERVICE_KEY
    )
    with (
        TestClient(create_app(settings), headers=key_headers()) as client,
        pytest.raises(ReplayError) as caught,
    ):
        served_schema(client)
    assert said in str(caught.value)
    assert sent is None or sent not in str(caught.value)


def test_the_key_in_fraud_api_key_is_sent_with_every_request(
    model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_ENV, SERVICE_KEY)
    log = tmp_path / "p.db"
    settings = Settings(model_uri=str(model.folder), prediction_log=log, api_keys=SERVICE_KEY)
    with TestClient(create_app(settings), headers=key_headers()) as client:
        assert served_schema(client) == model.schema
    rows = good_rows(5)

    async def run() -> Outcome:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=key_headers()
            ) as client:
                return await send_all(client, rows, ReplayParams(concurrency=2), RUN_ID)

    outcome = asyncio.run(run())
    assert outcome.failures == Counter()
    assert len(read_predictions(log, model.schema).frame) == 5


def test_the_replay_sends_the_header_the_service_reads() -> None:
    # monitoring/ never imports serving/: the header's name is written twice, checked here.
    from monitoring.replay import API_KEY_HEADER  # noqa: PLC0415
    from serving.keys import HEADER  # noqa: PLC0415

    assert API_KEY_HEADER == HEADER

"""Shared fixtures: one small simulated world, generated once per test session."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from fraud_detection.data.simulator import simulate
from fraud_detection.features import feature_schema, transaction_features
from fraud_detection.params import (
    CompromisedCardScenario,
    CompromisedTerminalScenario,
    FeatureParams,
    FraudScenarios,
    SimulatorParams,
    SplitParams,
)
from fraud_detection.schema import FeatureSchema

if TYPE_CHECKING:
    from tests.postgres import PostgresServer

# The handbook world has 5,000 customers and 10,000 terminals and draws 2 terminals and
# 3 cards a day. This world is ~6% of that size, so the scenarios are scaled down too
# (one draw a day, shorter durations) to keep the fraud share near the handbook's ~1%.
SMALL_SCENARIOS = FraudScenarios(
    compromised_terminals=CompromisedTerminalScenario(per_day=1, duration_days=4),
    compromised_cards=CompromisedCardScenario(per_day=1, duration_days=7),
)
SMALL_START = dt.date(2018, 4, 1)


@pytest.fixture(scope="session")
def small_params() -> SimulatorParams:
    return SimulatorParams(
        seed=7,
        n_customers=300,
        n_terminals=600,
        start_date=SMALL_START,
        n_days=60,
        radius=5.0,
        scenarios=SMALL_SCENARIOS,
    )


@pytest.fixture(scope="session")
def small_transactions(small_params: SimulatorParams) -> pd.DataFrame:
    """About 34,000 transactions over 60 days (treat as read-only: copy before changing)."""
    return simulate(small_params)


@pytest.fixture(scope="session")
def feature_params() -> FeatureParams:
    return FeatureParams()


@pytest.fixture(scope="session")
def small_features(small_transactions: pd.DataFrame, feature_params: FeatureParams) -> pd.DataFrame:
    """The small world with the 15 default features (read-only)."""
    return transaction_features(small_transactions, feature_params)


@pytest.fixture(scope="session")
def simulator_schema(feature_params: FeatureParams) -> FeatureSchema:
    return feature_schema(feature_params)


@pytest.fixture(scope="session")
def small_split_params() -> SplitParams:
    """The handbook protocol moved into the small world: train from day 30 (2018-05-01)."""
    return SplitParams(train_start=dt.date(2018, 5, 1), train_days=7, delay_days=7, test_days=7)


# --- a real PostgreSQL server (the prediction log's PostgreSQL store) -----------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the session's own (tests/postgres.py), stopped afterwards.
    Skipped without PostgreSQL on the machine; with REQUIRE_STACK=1 (CI), a failure."""
    # Imported here: a session without PostgreSQL tests need not import the stack.
    from stack.postgres import INSTALL_HINT, candidates  # noqa: PLC0415
    from tests.postgres import start_server  # noqa: PLC0415

    found = candidates()
    if not found:
        if os.environ.get("REQUIRE_STACK") == "1":
            pytest.fail(f"REQUIRE_STACK=1 but {INSTALL_HINT}", pytrace=False)
        pytest.skip(INSTALL_HINT)
    server = start_server(found[0])
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """``postgresql://fraud:<password>@127.0.0.1:<port>/<db>``: a new, empty database.
    A test that stopped the server gets it started again afterwards."""
    if not postgres_server.running:
        postgres_server.start()
    yield postgres_server.create_database()
    if not postgres_server.running:
        postgres_server.start()

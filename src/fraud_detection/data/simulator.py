"""A seeded, vectorized simulator of card transactions with three fraud scenarios.

The generating process is the one described in docs/dataset.md: customers and terminals
on a 100 x 100 square, customers paying at terminals within a radius, Poisson daily
counts, and three fraud scenarios (large amounts, compromised terminals, leaked cards).

Randomness is split into independent streams keyed by (seed, purpose, calendar date), so
a given date is the same whatever period is generated around it: a longer or shorter
simulation, or a later window for replaying "production" traffic, continues the same world.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from fraud_detection.params import SimulatorParams

SECONDS_PER_DAY = 86_400
AREA_SIZE = 100.0

# Stream identifiers for np.random.SeedSequence([seed, stream, day]).
_PROFILE_STREAM = 0
_TRANSACTION_STREAM = 1
_TERMINAL_FRAUD_STREAM = 2
_CARD_FRAUD_STREAM = 3

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while days are generated."""

COLUMNS = [
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_TIME_SECONDS",
    "TX_TIME_DAYS",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
]


@dataclass(frozen=True)
class World:
    """Customer and terminal profiles, and which terminals each customer can reach."""

    customer_xy: NDArray[np.float64]  # (n_customers, 2)
    mean_amount: NDArray[np.float64]
    std_amount: NDArray[np.float64]
    tx_per_day: NDArray[np.float64]
    terminal_xy: NDArray[np.float64]  # (n_terminals, 2)
    # CSR layout: customer c reaches reachable[offsets[c]:offsets[c + 1]].
    offsets: NDArray[np.int64]
    reachable: NDArray[np.int64]

    @property
    def n_customers(self) -> int:
        return len(self.mean_amount)

    @property
    def n_terminals(self) -> int:
        return len(self.terminal_xy)


def _rng(seed: int, stream: int, day: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, day]))


def _ordinal(params: SimulatorParams, day: int) -> int:
    """The calendar date of day index ``day``, as the seed of that day's streams."""
    return (params.start_date + dt.timedelta(days=day)).toordinal()


def make_world(params: SimulatorParams) -> World:
    rng = _rng(params.seed, _PROFILE_STREAM)
    customer_xy = rng.uniform(0, AREA_SIZE, size=(params.n_customers, 2))
    mean_amount = rng.uniform(5, 100, size=params.n_customers)
    tx_per_day = rng.uniform(0, 4, size=params.n_customers)
    terminal_xy = rng.uniform(0, AREA_SIZE, size=(params.n_terminals, 2))

    neighbours = cKDTree(terminal_xy).query_ball_point(customer_xy, r=params.radius)
    counts = np.fromiter((len(n) for n in neighbours), dtype=np.int64, count=len(neighbours))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    reachable = (
        np.concatenate([np.asarray(n, dtype=np.int64) for n in neighbours])
        if offsets[-1]
        else np.empty(0, dtype=np.int64)
    )
    return World(
        customer_xy=customer_xy,
        mean_amount=mean_amount,
        std_amount=mean_amount / 2,
        tx_per_day=tx_per_day,
        terminal_xy=terminal_xy,
        offsets=offsets,
        reachable=reachable,
    )


@dataclass(frozen=True)
class _Transactions:
    customer: NDArray[np.int64]
    terminal: NDArray[np.int64]
    amount: NDArray[np.float64]
    seconds: NDArray[np.int64]  # since the start date
    day: NDArray[np.int64]


def _one_day(world: World, seed: int, day: int, ordinal: int) -> _Transactions:
    rng = _rng(seed, _TRANSACTION_STREAM, ordinal)
    per_customer = rng.poisson(world.tx_per_day)
    customer = np.repeat(np.arange(world.n_customers), per_customer)
    n = len(customer)
    time_of_day = rng.normal(SECONDS_PER_DAY / 2, 20_000, size=n)
    drawn = rng.normal(world.mean_amount[customer], world.std_amount[customer])
    fallback = rng.uniform(0, 2 * world.mean_amount[customer])
    pick = rng.uniform(size=n)

    amount = np.where(drawn < 0, fallback, drawn).round(2)
    degree = world.offsets[customer + 1] - world.offsets[customer]
    # Draws outside the day are dropped, not redrawn; customers with no terminal don't pay.
    keep = (time_of_day >= 0) & (time_of_day < SECONDS_PER_DAY) & (degree > 0)
    customer, amount = customer[keep], amount[keep]
    slot = world.offsets[customer] + (pick[keep] * degree[keep]).astype(np.int64)
    return _Transactions(
        customer=customer,
        terminal=world.reachable[slot],
        amount=amount,
        seconds=day * SECONDS_PER_DAY + time_of_day[keep].astype(np.int64),
        day=np.full(len(customer), day, dtype=np.int64),
    )


def _concat(parts: list[_Transactions]) -> _Transactions:
    return _Transactions(
        customer=np.concatenate([p.customer for p in parts]),
        terminal=np.concatenate([p.terminal for p in parts]),
        amount=np.concatenate([p.amount for p in parts]),
        seconds=np.concatenate([p.seconds for p in parts]),
        day=np.concatenate([p.day for p in parts]),
    )


def _compromised_terminals(
    tx: _Transactions, params: SimulatorParams, n_terminals: int, draw_days: range
) -> NDArray[np.bool_]:
    """Scenario 2: a mask of transactions made at a terminal while it was compromised."""
    scenario = params.scenarios.compromised_terminals
    last_day = int(tx.day.max()) + 1 if len(tx.day) else 0
    # active[t, d] > 0 when terminal t is compromised on day d (a difference array).
    active = np.zeros((n_terminals, last_day + scenario.duration_days + 1), dtype=np.int32)
    per_day = min(scenario.per_day, n_terminals)
    for day in draw_days:
        drawn = _rng(params.seed, _TERMINAL_FRAUD_STREAM, _ordinal(params, day)).choice(
            n_terminals, size=per_day, replace=False
        )
        active[drawn, day] += 1
        active[drawn, day + scenario.duration_days] -= 1
    active = np.cumsum(active, axis=1)
    return active[tx.terminal, tx.day] > 0


def _leaked_cards(
    tx: _Transactions, params: SimulatorParams, n_customers: int, draw_days: range
) -> NDArray[np.int64]:
    """Scenario 3: indices of transactions made with a leaked card (one per inflation).

    Each day, ``per_day`` customers are drawn; over the next ``duration_days`` days a share
    of their transactions, drawn at random, is fraud with an inflated amount. A transaction
    picked by two overlapping draws appears twice, like applying the draws day after day.
    """
    scenario = params.scenarios.compromised_cards
    span = int(tx.day.max()) + scenario.duration_days + 2 if len(tx.day) else 1
    order = np.lexsort((tx.seconds, tx.customer))
    key = tx.customer[order] * span + tx.day[order]
    per_day = min(scenario.per_day, n_customers)
    picked: list[NDArray[np.int64]] = []
    for day in draw_days:
        rng = _rng(params.seed, _CARD_FRAUD_STREAM, _ordinal(params, day))
        for customer in rng.choice(n_customers, size=per_day, replace=False):
            lo, hi = np.searchsorted(
                key, [customer * span + day, customer * span + day + scenario.duration_days]
            )
            n_picked = int((hi - lo) * scenario.share)
            ranks = rng.permutation(hi - lo)[:n_picked]
            picked.append(order[lo + ranks])
    return np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)


def _label(
    tx: _Transactions,
    world: World,
    params: SimulatorParams,
    terminal_draws: range,
    card_draws: range,
) -> tuple[NDArray[np.int8], NDArray[np.int8], NDArray[np.float64]]:
    """Apply the fraud scenarios in order; later scenarios overwrite earlier labels."""
    scenarios = params.scenarios
    scenario = np.zeros(len(tx.amount), dtype=np.int8)
    amount = tx.amount.copy()
    if scenarios.large_amount.enabled:
        scenario[amount > scenarios.large_amount.threshold] = 1
    if scenarios.compromised_terminals.enabled:
        scenario[_compromised_terminals(tx, params, world.n_terminals, terminal_draws)] = 2
    if scenarios.compromised_cards.enabled:
        leaked = _leaked_cards(tx, params, world.n_customers, card_draws)
        np.multiply.at(amount, leaked, scenarios.compromised_cards.amount_multiplier)
        amount = np.round(amount, 2)
        scenario[leaked] = 3
    return (scenario > 0).astype(np.int8), scenario, amount


def _draws_reaching(days: range, duration: int) -> range:
    """The days whose draws (of ``duration`` days each) still act inside ``days``."""
    return range(max(0, days.start - duration + 1), days.stop)


def generated_days(params: SimulatorParams, days: range) -> range:
    """The days whose payments :func:`simulate` draws to label ``days``.

    A leaked card's share of fraud is drawn from all its payments over its leak period,
    so the periods that overlap ``days`` are drawn whole: ``duration - 1`` days before and
    after. Compromised terminals need only the day's draw of terminals, no payments.
    """
    reach = params.scenarios.compromised_cards.duration_days - 1
    return range(max(0, days.start - reach), days.stop + reach)


def simulate(
    params: SimulatorParams,
    days: range | None = None,
    progress: Progress | None = None,
    world: World | None = None,
) -> pd.DataFrame:
    """Transactions for ``days`` (day indices from ``params.start_date``; default: all).

    A day's transactions and labels do not depend on the range asked for: fraud that
    started before ``days.start`` and still runs (a compromised terminal, a leaked card)
    carries over, and a card leaked near ``days.stop`` has its share of fraud drawn from
    its whole leak period, as in a longer simulation. ``world`` saves re-making the
    customers and terminals when several ranges of one world are simulated.
    """
    days = days if days is not None else range(params.n_days)
    world = world if world is not None else make_world(params)
    generated = generated_days(params, days)
    # Draws from earlier days still act inside ``days``: a terminal drawn up to its duration
    # earlier is still compromised, a card leaked up to its duration earlier still spends.
    terminal_draws = _draws_reaching(days, params.scenarios.compromised_terminals.duration_days)
    card_draws = _draws_reaching(days, params.scenarios.compromised_cards.duration_days)
    parts = []
    for i, day in enumerate(generated, start=1):
        parts.append(_one_day(world, params.seed, day, _ordinal(params, day)))
        if progress is not None:
            progress(i, len(generated))
    tx = _concat(parts)
    fraud, scenario, amount = _label(tx, world, params, terminal_draws, card_draws)

    keep = (tx.day >= days.start) & (tx.day < days.stop)
    order = np.argsort(tx.seconds[keep], kind="stable")
    seconds = tx.seconds[keep][order]
    start = pd.Timestamp(params.start_date)
    frame = pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(len(seconds), dtype=np.int64),
            "TX_DATETIME": start + pd.to_timedelta(seconds, unit="s"),
            "CUSTOMER_ID": tx.customer[keep][order],
            "TERMINAL_ID": tx.terminal[keep][order],
            "TX_AMOUNT": amount[keep][order],
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": tx.day[keep][order],
            "TX_FRAUD": fraud[keep][order],
            "TX_FRAUD_SCENARIO": scenario[keep][order],
        }
    )
    return frame

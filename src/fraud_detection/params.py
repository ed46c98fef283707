"""Typed view of ``params.yaml``: one section per pipeline stage.

Every model rejects unknown keys, so a typo such as ``n_customer`` fails loudly with the
key's full path instead of being silently ignored.  :func:`parse_params` takes an already
parsed mapping (pure); reading the YAML file is the stage scripts' job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from fraud_detection import workspace
from fraud_detection.errors import ParamsError
from fraud_detection.schema import ClassNames

# The registry name of the model (serving's default URI is this model's champion).
DEFAULT_MODEL_NAME = "fraud-detector"

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class Section(BaseModel):
    """Base for every params section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data


class LargeAmountScenario(Section):
    """Scenario 1: every transaction above ``threshold`` is fraud."""

    enabled: bool = True
    threshold: float = Field(220.0, gt=0)


class CompromisedTerminalScenario(Section):
    """Scenario 2: ``per_day`` terminals a day turn fraudulent for ``duration_days`` days."""

    enabled: bool = True
    per_day: NonNegativeInt = 2
    duration_days: PositiveInt = 28


class CompromisedCardScenario(Section):
    """Scenario 3: ``per_day`` customers a day have a share of their spending inflated."""

    enabled: bool = True
    per_day: NonNegativeInt = 3
    duration_days: PositiveInt = 14
    share: float = Field(1 / 3, gt=0, le=1)
    amount_multiplier: float = Field(5.0, gt=0)


class FraudScenarios(Section):
    large_amount: LargeAmountScenario = LargeAmountScenario()
    compromised_terminals: CompromisedTerminalScenario = CompromisedTerminalScenario()
    compromised_cards: CompromisedCardScenario = CompromisedCardScenario()


class SimulatorParams(Section):
    """The card-transaction simulator (see docs/dataset.md)."""

    seed: NonNegativeInt = 42
    n_customers: PositiveInt = 5000
    n_terminals: PositiveInt = 10000
    # The 58 days the default protocol needs; the handbook's full size is 183 days from
    # 2018-04-01 (the same days draw the same payments: seeds follow the date).
    start_date: dt.date = dt.date(2018, 6, 18)
    n_days: PositiveInt = 58
    radius: float = Field(5.0, gt=0)
    scenarios: FraudScenarios = FraudScenarios()


class CsvParams(Section):
    """Any CSV file with a binary target."""

    path: str = "data/external/creditcard.csv"
    target: str = "Class"
    # The label of the positive class. ``None`` accepts targets that are already 0/1.
    # A YAML true/false stays a boolean (for a column of booleans), not 1/0.
    positive_label: bool | int | str | None = None
    # A numeric or datetime column that orders rows in time; ``None`` means no time order.
    time_column: str | None = None
    # Columns that are neither features nor target (ids); kept out of the model.
    drop_columns: list[str] = []
    # Columns to treat as categorical even if they look numeric (e.g. codes).
    categorical_columns: list[str] = []


class DataParams(Section):
    source: Literal["simulator", "csv"] = "simulator"
    # The words for the two classes in logs, reports and the model card.
    class_names: ClassNames = ClassNames()
    simulator: SimulatorParams = SimulatorParams()
    csv: CsvParams = CsvParams()


# ----------------------------------------------------------------------- features


class FeatureParams(Section):
    """Feature engineering for simulator data (CSV columns are used as they are)."""

    customer_windows_days: list[PositiveInt] = Field([1, 7, 30], min_length=1)
    terminal_windows_days: list[PositiveInt] = Field([1, 7, 30], min_length=1)
    # Fraud labels become known this many days after a transaction (investigation time).
    label_delay_days: NonNegativeInt = 7
    # A transaction is "at night" when its hour is at most this value.
    night_last_hour: Annotated[int, Field(ge=0, le=23)] = 6


# -------------------------------------------------------------------------- split


class SplitParams(Section):
    """Time-ordered protocol for the simulator; a hold-out for CSV data."""

    train_start: dt.date = dt.date(2018, 7, 25)
    train_days: PositiveInt = 7
    # Days between training and test: their labels are not yet known when the model ships.
    delay_days: NonNegativeInt = 7
    test_days: PositiveInt = 7
    # Drop from the test set the cards whose fraud was already known (handbook protocol).
    remove_known_compromised: bool = True
    # For CSV data: the share of rows held out (the latest rows if a time column is set).
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: NonNegativeInt = 42


# -------------------------------------------------------------------------- train

ModelKind = Literal[
    "dummy", "logistic_regression", "decision_tree", "random_forest", "xgboost", "lightgbm", "mlp"
]
Strategy = Literal["none", "class_weight", "undersample", "smote"]


class ModelSpec(Section):
    """One model family: fixed estimator params, a small grid, the imbalance strategies."""

    kind: ModelKind
    params: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    strategies: list[Strategy] = ["none"]

    @model_validator(mode="after")
    def _grid_is_usable(self) -> ModelSpec:
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid.{key} is an empty list; give at least one value")
            if key in self.params:
                raise ValueError(f"'{key}' is in both params and grid; keep it in one")
        if not self.strategies:
            raise ValueError("strategies is empty; use [none] for no imbalance handling")
        return self


class CrossValidationParams(Section):
    # "time" keeps folds in time order (train on the past, validate on the future);
    # "stratified" shuffles; "auto" picks "time" when the data has a time order.
    scheme: Literal["auto", "time", "stratified"] = "auto"
    n_splits: Annotated[int, Field(ge=2)] = 4
    # Rows left out between a time fold's training and validation blocks.
    gap: NonNegativeInt = 0


class UndersampleParams(Section):
    # Minority/majority ratio after resampling (1.0 = balanced).
    sampling_strategy: float = Field(0.1, gt=0, le=1)


class SmoteParams(Section):
    sampling_strategy: float = Field(0.1, gt=0, le=1)
    k_neighbors: PositiveInt = 5


CalibrationMethod = Literal["sigmoid", "isotonic", "none"]
TieBreak = Literal["brier", "log_loss"]


class CalibrationParams(Section):
    # sigmoid: a logistic fit on the log-odds of the winner's out-of-fold scores (Platt
    # scaling); isotonic: a monotone step fit; none: ship the raw scores.
    method: CalibrationMethod = "sigmoid"
    # Each out-of-fold fold needs this many positive rows: its calibrated scores come from
    # a calibrator fitted on the other folds, and fewer positives make that fit noise.
    min_positives: PositiveInt = 10


class SelectionParams(Section):
    # Candidates whose mean CV AP is within this many standard errors of the best one's
    # are tied (0: the highest AP wins outright).
    tie_standard_errors: float = Field(1.0, ge=0)
    # The tie goes to the lowest calibrated out-of-fold score of this kind, then to the
    # simpler model and strategy.
    tie_break: TieBreak = "brier"


class TrainParams(Section):
    experiment_name: str = "fraud-detection"
    seed: NonNegativeInt = 42
    # Parallel fits; -1 uses every core.
    n_jobs: int = -1
    cv: CrossValidationParams = CrossValidationParams()
    # Threshold for the F1/precision/recall columns of the leaderboard.
    cv_threshold: float = Field(0.5, gt=0, lt=1)
    undersample: UndersampleParams = UndersampleParams()
    smote: SmoteParams = SmoteParams()
    calibration: CalibrationParams = CalibrationParams()
    selection: SelectionParams = SelectionParams()
    models: dict[str, ModelSpec]

    @model_validator(mode="after")
    def _has_models(self) -> TrainParams:
        if not self.models:
            raise ValueError("models is empty; list at least one model to compare")
        return self


# ----------------------------------------------------------------------- evaluate


class ThresholdParams(Section):
    # max_f1: the threshold with the best F1 on out-of-fold predictions;
    # min_cost: the one with the lowest expected cost given the two error costs.
    rule: Literal["max_f1", "min_cost"] = "max_f1"
    cost_false_positive: float = Field(1.0, ge=0)
    cost_false_negative: float = Field(10.0, ge=0)


class EvaluateParams(Section):
    registered_model_name: str = Field(DEFAULT_MODEL_NAME, min_length=1)
    threshold: ThresholdParams = ThresholdParams()
    # Cards per day for card precision top-k (CP@k), simulator data only.
    top_k_cards: PositiveInt = 100
    permutation_repeats: PositiveInt = 5
    # Permutation importance runs on a stratified sample of at most this many test rows.
    permutation_max_rows: PositiveInt = 10000


# ------------------------------------------------------------------------- replay


class AmountShift(Section):
    """Every replayed amount is multiplied (a price rise, a currency change upstream)."""

    enabled: bool = False
    multiplier: float = Field(1.5, gt=0)


class NewFraudPattern(Section):
    """Card testing, a pattern absent from training: each day ``cards_per_day`` cards make
    ``transactions_per_card`` small night-time payments, all of them fraud."""

    enabled: bool = False
    cards_per_day: PositiveInt = 60
    transactions_per_card: PositiveInt = 10
    min_amount: float = Field(0.5, gt=0)
    max_amount: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _amounts_are_ordered(self) -> NewFraudPattern:
        if self.min_amount >= self.max_amount:
            raise ValueError("min_amount must be below max_amount")
        return self


class BrokenFeature(Section):
    """An upstream job breaks: ``feature`` arrives with the same ``value`` in every request.

    The API rejects a request without the field, or with a value out of the schema's
    bounds, so a broken feature that still gets through looks like this: by default the
    7-day count comes from a wiped cache, and every card looks as if it were new (1).
    """

    enabled: bool = False
    feature: str = Field("CUSTOMER_ID_NB_TX_7DAY_WINDOW", min_length=1)
    value: float = 1.0


class CustomerMix(Section):
    """The mix of customers changes: those in the top ``top_share`` by average spending are
    ``weight`` times as likely to be replayed (a campaign aimed at big spenders)."""

    enabled: bool = False
    top_share: float = Field(0.25, gt=0, lt=1)
    weight: float = Field(5.0, gt=0)


class DriftScenarios(Section):
    amount_shift: AmountShift = AmountShift()
    new_fraud_pattern: NewFraudPattern = NewFraudPattern()
    broken_feature: BrokenFeature = BrokenFeature()
    customer_mix: CustomerMix = CustomerMix()

    @property
    def enabled(self) -> list[str]:
        return [name for name, scenario in self if getattr(scenario, "enabled", False)]


class ReplayParams(Section):
    """Replayed "production" traffic: days after the test period, from the same world."""

    # Draws which transactions of the replayed days are sent (the world stays the same).
    seed: NonNegativeInt = 1
    # The first replayed day, counted from the day after the test period.
    days_after_test: NonNegativeInt = 0
    days: PositiveInt = 7
    # Transactions sent, drawn from those days and sent in time order (capped at all).
    rows: PositiveInt = 20000
    # 1: one POST /predict per transaction; more: POST /predict/batch with this many rows.
    batch_size: Annotated[int, Field(ge=1, le=10000)] = 1
    # Requests in flight at once, and requests per second in total (0: no limit).
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    rate: float = Field(0.0, ge=0)
    url: str = Field("http://127.0.0.1:8000", min_length=1)
    scenarios: DriftScenarios = DriftScenarios()


# ------------------------------------------------------------------------ monitor


class DriftGate(Section):
    """When the monitor exits 1. Each limit becomes an Evidently test in the report."""

    # Features whose drift score crosses the drift threshold, as a count and as a share.
    max_drifted_features: NonNegativeInt = 0
    max_drifted_share: float = Field(0.5, ge=0, le=1)
    # Drift score of the model's fraud probability (same method and scale as features).
    max_score_drift: float = Field(0.1, gt=0)


# Evidently's distance measures, where a larger score means more drift. Tests that return a
# p-value (ks, chisquare, ...) are left out on purpose: they count as drifted the other way
# round, and at these row counts they flag differences too small to matter.
DriftMethod = Literal["wasserstein", "ed", "psi", "hellinger", "jensenshannon", "kl_div"]


class MonitorParams(Section):
    """Drift monitoring: which rows, which drift measure, and the gate."""

    # The service's prediction log (serving's SERVING_PREDICTION_LOG has the same default).
    log_path: str = Field(str(workspace.PREDICTION_LOG), min_length=1)
    reference_path: str = Field(str(workspace.REFERENCE), min_length=1)
    out_dir: str = Field(str(workspace.MONITOR_REPORTS), min_length=1)
    # Timestamped reports of this many latest runs are kept (about 9 MB a run).
    keep_reports: PositiveInt = 30
    # The window ends at --end (default: now) and spans this many hours (or --start).
    window_hours: float = Field(24.0, gt=0)
    # Fewer logged rows in the window than this, and the monitor cannot judge (exit 2).
    min_rows: PositiveInt = 500
    # Only rows logged by this model version (null: every version, listed in the report).
    model_version: str | None = None
    # The true labels: the replay appends them here (known features.label_delay_days after
    # each payment), the monitor uses them once their available_at has passed.
    labels_path: str = Field(str(workspace.LABELS), min_length=1)
    # Evidently drift methods and the score at or above which one column counts as drifted.
    numeric_method: DriftMethod = "wasserstein"
    categorical_method: DriftMethod = "jensenshannon"
    drift_threshold: float = Field(0.1, gt=0)
    gate: DriftGate = DriftGate()


# ------------------------------------------------------------------------- engine


class DaskParams(Section):
    """The LocalCluster started when DASK_SCHEDULER_ADDRESS is not set."""

    workers: PositiveInt = 2
    threads_per_worker: PositiveInt = 1
    # Per worker. Dask spills to disk at 60% of it and restarts a worker that passes 95%.
    memory_limit_gb: float = Field(3.0, gt=0)
    # Days of transactions a generating task draws. Each task also draws the 26 days around
    # its block that leaked cards reach into: more days a task, less drawn twice, more memory.
    days_per_task: PositiveInt = 30
    # Rows a partition of the features stage holds (day files are combined up to it):
    # fewer, larger partitions make the shuffles by card and by terminal cheaper.
    rows_per_partition: PositiveInt = 1_000_000
    # Seconds to wait for the scheduler (and the LocalCluster's workers) before failing.
    connect_timeout_seconds: float = Field(10.0, gt=0)


class EngineParams(Section):
    """Where the data and features stages compute: in this process, or on a Dask cluster."""

    kind: Literal["local", "dask"] = "local"
    dask: DaskParams = DaskParams()


# ------------------------------------------------------------------------ the file


class Params(Section):
    engine: EngineParams = EngineParams()
    data: DataParams = DataParams()
    features: FeatureParams = FeatureParams()
    split: SplitParams = SplitParams()
    train: TrainParams
    evaluate: EvaluateParams = EvaluateParams()
    replay: ReplayParams = ReplayParams()
    monitor: MonitorParams = MonitorParams()


def parse_params(raw: Mapping[str, Any] | None, *, source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping, turning pydantic errors into one readable message."""
    if raw is None:
        raise ParamsError(f"{source} is empty; it needs at least a 'train' section")
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{source} must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(format_validation_error(exc, source)) from None


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source} is invalid ({exc.error_count()} problem(s)):"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  - {key}: {_problem(error)}")
    return "\n".join(lines)


def _problem(error: ErrorDetails) -> str:
    given = error.get("input")
    if error["type"] == "extra_forbidden":
        return "unknown key; check its spelling against params.yaml"
    if error["type"] == "string_type" and given is None:
        return "needs a value (YAML read an empty value or null)"
    if error["type"] == "string_type" and (read := _yaml_reading(given)):
        # YAML types unquoted values: `2018` is a number, `2018-06-18` a date.
        leaf, text = error["loc"][-1], f'"{_as_written(given)}"'
        example = text if isinstance(leaf, int) else f"{leaf}: {text}"
        return (
            f"takes text, but YAML read {_as_written(given)} as {read}; "
            f"if you meant the text, quote it: {example}"
        )
    shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
    return f"{error['msg']}{shown}"


def _yaml_reading(value: object) -> str | None:
    """What YAML made of an unquoted value that was meant as text, if it did."""
    if isinstance(value, bool):  # before int: a bool is an int
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a date" if isinstance(value, dt.date) else None


def _as_written(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return value.isoformat() if isinstance(value, dt.date) else str(value)

"""Boosted models trained on Dask partitions, on a real LocalCluster: the candidates Dask
keeps, the rows a fit reads, and the pipeline that comes back (the local engine's kind).

The tests that need no cluster run Dask's synchronous scheduler; the others share one
LocalCluster of two workers. The test that kills a worker starts its own, through
``dask_client``: with ``allowed-failures`` at 0 (as tests/fraud_detection/io does) and
with Dask's default, the pipeline's.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask.utils import key_split
from distributed import Client, LocalCluster, wait
from lightgbm import LGBMClassifier
from numpy.typing import NDArray
from sklearn.compose import ColumnTransformer
from sklearn.metrics import average_precision_score
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from fraud_detection.cluster.training import (
    ROW_COLUMN,
    DaskFitter,
    _thin,
    cross_validate_on_dask,
    held_out_on_dask,
    negative_share_kept,
    numbered,
    score_frame,
    split_candidates,
)
from fraud_detection.errors import CandidateError, ClusterError
from fraud_detection.io.dask_cluster import SCHEDULER_VARIABLE, dask_client
from fraud_detection.modeling import Candidate, ResamplingTarget, build_pipeline, candidates
from fraud_detection.params import (
    DaskParams,
    ModelKind,
    ModelSpec,
    Strategy,
    TrainParams,
    UndersampleParams,
)
from fraud_detection.reference import held_out_folds
from fraud_detection.schema import Feature, FeatureSchema
from fraud_detection.validation import FoldResult

LOG = logging.getLogger(__name__)

SCHEMA = FeatureSchema(
    source="csv",
    features=[
        Feature(name="a", kind="numeric"),
        Feature(name="b", kind="numeric"),
        Feature(name="shop", kind="categorical"),
    ],
    target="y",
)
NAMES = SCHEMA.names
ROWS, PARTITIONS = 6_000, 4  # 1,500 rows a partition
TRAIN, HELD = np.arange(4_500, dtype=np.int64), np.arange(4_500, ROWS, dtype=np.int64)
# Small models: a fit takes well under a second. sampling_strategy 0.5 (not the default
# 0.1, which this data's ~7% positives already exceed) makes undersampling drop rows.
PARAMS = TrainParams(
    models={
        "xgb": ModelSpec(kind="xgboost", params={"n_estimators": 40, "max_depth": 3}),
        "lgbm": ModelSpec(
            kind="lightgbm", params={"n_estimators": 40, "num_leaves": 7, "min_child_samples": 5}
        ),
    },
    undersample=UndersampleParams(sampling_strategy=0.5),
)
KINDS: dict[ModelKind, str] = {"xgboost": "xgb", "lightgbm": "lgbm"}  # kind: params key
SHIPPED: dict[ModelKind, type[XGBClassifier | LGBMClassifier]] = {
    "xgboost": XGBClassifier,
    "lightgbm": LGBMClassifier,
}
STRATEGIES: list[Strategy] = ["none", "class_weight", "undersample"]


def _candidate(kind: ModelKind, strategy: Strategy) -> Candidate:
    return Candidate(KINDS[kind], kind, strategy)


def _synthetic(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """A learnable, imbalanced problem (~7% positives) with a categorical column, a few NaN
    and a time column over three days; rows in time order."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    shop = rng.choice(["web", "store", "phone"], size=rows)
    logit = 4.0 * a - 2.0 * b + (shop == "web") - 7.5
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame({"a": a, "b": b, "shop": shop, "y": y})
    frame.loc[::37, "b"] = np.nan
    frame["time"] = pd.Timestamp("2018-04-01") + pd.to_timedelta(
        np.linspace(0, 3 * 86_400 - 1, rows), unit="s"
    )
    return frame


def _local_proba(model: Pipeline, frame: pd.DataFrame, rows: NDArray[np.int64]) -> Any:
    return model.predict_proba(frame.iloc[rows][NAMES])[:, 1]


# ---------------------------------------------------------------- split_candidates


def _every_kind() -> TrainParams:
    every = ["none", "class_weight", "undersample", "smote"]
    return TrainParams(
        models={
            "xgb": ModelSpec(kind="xgboost", grid={"max_depth": [2, 3]}, strategies=every),
            "lgbm": ModelSpec(kind="lightgbm", strategies=every),
            "baseline": ModelSpec(kind="dummy"),
            "logreg": ModelSpec(kind="logistic_regression", strategies=["none", "class_weight"]),
            "tree": ModelSpec(kind="decision_tree", strategies=["undersample"]),
            "forest": ModelSpec(kind="random_forest"),
            "mlp": ModelSpec(kind="mlp", strategies=["none", "smote"]),
        }
    )


def test_boosted_models_without_smote_are_kept_in_order_with_their_grid() -> None:
    found = candidates(_every_kind())
    kept, _ = split_candidates(found)
    boosted = [c for c in found if c.kind in KINDS and c.strategy != "smote"]
    assert kept == boosted  # the same candidates, grid points and order
    assert [c.label for c in kept] == [
        "xgb/none [max_depth=2]",
        "xgb/none [max_depth=3]",
        "xgb/class_weight [max_depth=2]",
        "xgb/class_weight [max_depth=3]",
        "xgb/undersample [max_depth=2]",
        "xgb/undersample [max_depth=3]",
        "lgbm/none",
        "lgbm/class_weight",
        "lgbm/undersample",
    ]


def test_smote_and_single_process_models_are_left_out_with_the_reason() -> None:
    _, left_out = split_candidates(candidates(_every_kind()))
    one_process = {
        "baseline/none": "dummy",
        "logreg/none": "logistic_regression",
        "logreg/class_weight": "logistic_regression",
        "tree/undersample": "decision_tree",
        "forest/none": "random_forest",
        "mlp/none": "mlp",
        "mlp/smote": "mlp",  # no Dask form, whatever its strategy
    }
    assert set(left_out) == {"xgb/smote", "lgbm/smote", *one_process}
    for family in ("xgb/smote", "lgbm/smote"):
        assert "SMOTE" in left_out[family]
        assert "nearest neighbours" in left_out[family]
        assert "other partitions" in left_out[family]
    for family, kind in one_process.items():
        assert left_out[family].startswith(f"{kind} fits in one process"), family
        assert "xgboost.dask and lightgbm.dask" in left_out[family]


@pytest.mark.parametrize(
    "found",
    [
        [Candidate("baseline", "dummy", "none"), Candidate("forest", "random_forest", "none")],
        [Candidate("xgb", "xgboost", "smote"), Candidate("lgbm", "lightgbm", "smote")],
        [],
    ],
    ids=["single-process", "smote", "empty"],
)
def test_nothing_to_train_on_dask_is_a_candidate_error_with_the_fix(
    found: list[Candidate],
) -> None:
    with pytest.raises(CandidateError) as caught:
        split_candidates(found)
    message = str(caught.value)
    assert "xgboost or lightgbm" in message
    assert "none, class_weight or undersample" in message
    assert "set engine.kind: local" in message  # the fix, or add one that Dask trains


# ---------------------------------------------------------------- undersampling


@pytest.mark.parametrize(
    ("positives", "negatives", "ratio", "share"),
    [
        (10, 990, 0.1, 10 / 99),  # 10 / (0.1 x 990)
        (10, 990, 1.0, 10 / 990),  # balanced: as many negatives as positives
        (30, 270, 0.5, 30 / 135),
        (60, 100, 0.5, 1.0),  # already more balanced than asked: every negative kept
        (5, 0, 0.1, 1.0),  # no negatives to thin
    ],
)
def test_negative_share_kept(positives: int, negatives: int, ratio: float, share: float) -> None:
    y = np.array([1] * positives + [0] * negatives, dtype=np.int64)
    kept = negative_share_kept(y, ratio)
    assert kept == pytest.approx(share, rel=1e-12)
    if negatives:
        # The local sampler's count of negatives, give or take its rounding down.
        local = ResamplingTarget(ratio, oversample=False)(y)[0]
        assert kept * negatives == pytest.approx(local, abs=1)


def _labelled(rows: int = 20_000, positive_share: float = 0.02) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    y = (rng.uniform(size=rows) < positive_share).astype(np.int64)
    return pd.DataFrame({"x": rng.normal(size=rows), "y": y})


def _thinned(frame: pd.DataFrame, partitions: int, keep: float, seed: int) -> pd.DataFrame:
    rows = numbered(dd.from_pandas(frame, npartitions=partitions))
    thinned = rows.map_partitions(_thin, "y", keep, seed, meta=rows._meta)
    result: pd.DataFrame = thinned.compute(scheduler="sync")
    return result


def test_thinning_keeps_every_positive_and_the_share_of_negatives() -> None:
    frame = _labelled()
    keep = 0.1
    thinned = _thinned(frame, 3, keep, seed=42)
    positives = frame.index[frame["y"] == 1]
    negatives = int((frame["y"] == 0).sum())
    assert set(positives) <= set(thinned[ROW_COLUMN])
    kept_negatives = int((thinned["y"] == 0).sum())
    # ~19,600 negatives each kept with probability 0.1: the kept share's standard error is
    # sqrt(0.1 x 0.9 / 19,600) ~ 0.0021, so 0.01 is over 4 of them.
    assert kept_negatives / negatives == pytest.approx(keep, abs=0.01)
    pd.testing.assert_frame_equal(
        thinned.drop(columns=ROW_COLUMN), frame.loc[thinned[ROW_COLUMN]]
    )  # whole rows, as they were


def test_thinning_keeps_the_same_rows_however_the_data_are_partitioned() -> None:
    frame = _labelled()
    kept = [_thinned(frame, n, 0.1, seed=42)[ROW_COLUMN].tolist() for n in (1, 3, 7)]
    assert kept[0] == kept[1] == kept[2]
    other_seed = _thinned(frame, 3, 0.1, seed=7)[ROW_COLUMN].tolist()
    assert other_seed != kept[0]  # the seed, not the partitioning, draws the rows


@pytest.mark.parametrize("partitions", [1, 3, 7])
def test_numbered_counts_rows_in_partition_order(partitions: int) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"order": np.arange(1_000)}, index=rng.permutation(1_000) * 3
    )  # an index that is neither 0..n-1 nor sorted: the number is the row's position
    rows = numbered(dd.from_pandas(frame, npartitions=partitions, sort=False))
    assert rows.npartitions == partitions
    result = rows.compute(scheduler="sync")
    assert result[ROW_COLUMN].dtype == np.int64
    assert result[ROW_COLUMN].tolist() == list(range(1_000))
    assert result["order"].tolist() == list(range(1_000))  # the rows were not reordered
    assert result.index.tolist() == frame.index.tolist()


# ---------------------------------------------------------------- on a LocalCluster


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as connected,
    ):
        yield connected


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return _synthetic()


@pytest.fixture(scope="module")
def fitter(client: Client, data: pd.DataFrame) -> DaskFitter:
    frame = numbered(dd.from_pandas(data[[*NAMES, "y"]], npartitions=PARTITIONS)).persist()
    y = data["y"].to_numpy()
    return DaskFitter.over(client, frame, y, SCHEMA, PARAMS, positive_share=float(y.mean()))


@pytest.fixture(scope="module")
def fitted(fitter: DaskFitter) -> dict[tuple[ModelKind, Strategy], Pipeline]:
    """Every kind with every strategy, fitted on TRAIN once for the tests below."""
    return {
        (kind, strategy): fitter.fit(_candidate(kind, strategy), TRAIN)
        for kind in KINDS
        for strategy in STRATEGIES
    }


def _assert_same_rows(selected: pd.DataFrame, expected: pd.DataFrame) -> None:
    """The features and target of ``expected``, whatever string type Dask gave ``shop``."""
    pd.testing.assert_frame_equal(
        selected[[*NAMES, "y"]].astype({"shop": object}),
        expected[[*NAMES, "y"]].astype({"shop": object}),
    )


def _pieces(fitter: DaskFitter, rows: NDArray[np.int64]) -> list[pd.DataFrame]:
    selected = fitter.rows(rows)
    return [part.compute() for part in selected.to_delayed()]


@pytest.mark.slow
def test_the_fitter_knows_where_each_partition_starts(fitter: DaskFitter) -> None:
    assert fitter.starts.tolist() == [0, 1_500, 3_000, 4_500]
    assert fitter.rows(None) is fitter.frame


@pytest.mark.slow
def test_a_fold_in_the_first_partition_comes_back_in_a_piece_a_worker(
    fitter: DaskFitter, data: pd.DataFrame
) -> None:
    rows = np.arange(1_001, dtype=np.int64)  # all in partition 0 (rows 0-1,499)
    pieces = _pieces(fitter, rows)
    sizes = [len(piece) for piece in pieces]
    assert len(sizes) >= 2  # two workers
    assert min(sizes) > 0
    assert max(sizes) - min(sizes) <= 1
    together = pd.concat(pieces)
    assert together[ROW_COLUMN].tolist() == rows.tolist()
    _assert_same_rows(together, data.iloc[rows])


@pytest.mark.slow
def test_scattered_rows_over_partitions_come_back_whole_and_in_order(
    fitter: DaskFitter, data: pd.DataFrame
) -> None:
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(ROWS, size=2_000, replace=False)).astype(np.int64)
    pieces = _pieces(fitter, rows)
    assert len(pieces) == PARTITIONS  # at least a piece for each partition holding rows
    sizes = [len(piece) for piece in pieces]
    assert max(sizes) - min(sizes) <= 1
    together = pd.concat(pieces)
    assert together[ROW_COLUMN].tolist() == rows.tolist()
    _assert_same_rows(together, data.iloc[rows])


@pytest.mark.slow
def test_a_frame_and_labels_of_different_lengths_are_refused(
    fitter: DaskFitter, client: Client
) -> None:
    with pytest.raises(ValueError, match="the frame has 6000 rows, the labels 5999"):
        DaskFitter.over(client, fitter.frame, fitter.y[:-1], SCHEMA, PARAMS, positive_share=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_fit_returns_the_local_engines_pipeline(
    fitted: dict[tuple[ModelKind, Strategy], Pipeline], kind: ModelKind, strategy: Strategy
) -> None:
    model = fitted[kind, strategy]
    assert type(model) is Pipeline
    assert [name for name, _ in model.steps] == ["preprocess", "model"]
    assert isinstance(model.named_steps["preprocess"], ColumnTransformer)
    # The plain estimator the local engine ships, not its Dask twin (which needs a client).
    estimator: Any = model.named_steps["model"]
    assert type(estimator) is SHIPPED[kind]
    assert estimator.get_params()["n_jobs"] == 1  # served a row at a time
    assert estimator.n_features_in_ == 5  # a, b and three shops


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_scores_equal_the_returned_pipelines_own_in_row_order(
    fitter: DaskFitter,
    data: pd.DataFrame,
    fitted: dict[tuple[ModelKind, Strategy], Pipeline],
    kind: ModelKind,
) -> None:
    model = fitted[kind, "none"]
    rows = np.arange(1, ROWS, 3, dtype=np.int64)  # every partition, a third of its rows
    np.testing.assert_allclose(
        fitter.score(model, rows), _local_proba(model, data, rows), rtol=0, atol=1e-9
    )
    everything = score_frame(fitter.frame, model, NAMES)
    np.testing.assert_allclose(
        everything, _local_proba(model, data, np.arange(ROWS)), rtol=0, atol=1e-9
    )
    assert everything.dtype == np.float64


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", list(KINDS))
def test_the_dask_model_is_as_good_as_the_local_one(
    data: pd.DataFrame,
    fitted: dict[tuple[ModelKind, Strategy], Pipeline],
    fitter: DaskFitter,
    kind: ModelKind,
    strategy: Strategy,
) -> None:
    candidate = _candidate(kind, strategy)
    local = build_pipeline(candidate, PARAMS, SCHEMA, positive_share=fitter.positive_share)
    local.fit(data.iloc[TRAIN][NAMES], data["y"].to_numpy()[TRAIN])
    y_held = data["y"].to_numpy()[HELD]
    on_dask = fitter.score(fitted[kind, strategy], HELD)
    on_one = _local_proba(local, data, HELD)
    dask_ap = average_precision_score(y_held, on_dask)
    local_ap = average_precision_score(y_held, on_one)
    # Both models score the same 1,500 rows (~100 positives), so the test set's own
    # sampling error (~0.045 for an AP of ~0.7) is shared and cancels: what is left is the
    # fits' difference, from the distributed histograms and, for undersampling, another
    # draw of the ~14% of negatives kept (under 0.03 across these six here). 0.05 allows
    # for that, while a fit on the wrong rows, labels or weights falls to the base rate
    # (AP ~0.07) or away from the local AP.
    assert dask_ap == pytest.approx(local_ap, abs=0.05)
    assert dask_ap > 0.6
    # The weights and the thinning move the scores as they do locally (both raise the
    # mean score well above the positive share; 0.005 apart at most here).
    assert on_dask.mean() == pytest.approx(on_one.mean(), abs=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_class_weights_and_undersampling_raise_the_scores(
    fitter: DaskFitter, fitted: dict[tuple[ModelKind, Strategy], Pipeline], kind: ModelKind
) -> None:
    """The strategies take effect: without them the mean score is the positive share."""
    mean = {s: fitter.score(fitted[kind, s], HELD).mean() for s in STRATEGIES}
    positive_share = fitter.y[HELD].mean()
    assert mean["none"] == pytest.approx(positive_share, abs=0.03)
    # About twice as high here (0.13-0.16 against 0.065).
    assert mean["class_weight"] > 1.5 * mean["none"]
    assert mean["undersample"] > 1.5 * mean["none"]


def _pinned(client: Client, data: pd.DataFrame) -> tuple[DaskFitter, list[str]]:
    """A fitter over the data whose partitions sit on the workers in turn (0 and 2 on the
    first, 1 and 3 on the second): the scheduler runs a piece where its rows are."""
    workers = sorted(client.scheduler_info()["workers"])
    rows = data[[*NAMES, "y"]].assign(**{ROW_COLUMN: np.arange(ROWS, dtype=np.int64)})
    size = ROWS // PARTITIONS
    parts = [
        client.scatter(rows.iloc[i * size : (i + 1) * size], workers=[workers[i % 2]])
        for i in range(PARTITIONS)
    ]
    frame = client.persist(dd.from_delayed(parts, meta=rows.iloc[:0], verify_meta=False))
    y = data["y"].to_numpy()
    fitter = DaskFitter.over(client, frame, y, SCHEMA, PARAMS, positive_share=float(y.mean()))
    return fitter, workers


@pytest.mark.slow
def test_lightgbm_class_weights_hold_on_a_worker_without_positives(
    client: Client, data: pd.DataFrame
) -> None:
    pinned, workers = _pinned(client, data)
    y = pinned.y
    first = np.arange(1_500)  # partition 0, on the first worker
    negatives = first[y[first] == 0]
    # Partition 0's negatives, then as many rows of partition 1 (on the second worker): the
    # two pieces are those halves, so the first worker holds no positive row.
    rows = np.concatenate([negatives, np.arange(1_500, 1_500 + len(negatives))])
    selected = pinned.rows(rows.astype(np.int64)).persist()
    wait(selected)
    placed = {key[1]: where for key, where in client.who_has(selected).items()}
    assert placed == {0: (workers[0],), 1: (workers[1],)}
    pieces = [part.compute() for part in selected.to_delayed()]
    assert pieces[0]["y"].sum() == 0
    assert pieces[1]["y"].sum() > 20
    candidate = _candidate("lightgbm", "class_weight")
    model = pinned.fit(candidate, rows.astype(np.int64))
    local = build_pipeline(candidate, PARAMS, SCHEMA, positive_share=pinned.positive_share)
    local.fit(data.iloc[rows][NAMES], y[rows])
    on_dask, on_one = pinned.score(model, HELD), _local_proba(local, data, HELD)
    assert np.isfinite(on_dask).all()
    assert average_precision_score(y[HELD], on_dask) > 0.6
    # The fit's own balanced weights, not each worker's: the two mean scores are 0.0005
    # apart here, while weights balanced per worker (the first worker's negatives then
    # weigh twice as much) bring the Dask model's down by 0.035, and no weights by 0.09.
    assert on_dask.mean() == pytest.approx(on_one.mean(), abs=0.015)


# ---------------------------------------------------------------- cross-validation


@dataclass(frozen=True)
class RecordingFitter(DaskFitter):
    """A DaskFitter that notes the rows each fit and each score reads."""

    fits: list[NDArray[np.int64] | None] = field(default_factory=list)
    scored: list[NDArray[np.int64] | None] = field(default_factory=list)

    def fit(self, candidate: Candidate, rows: NDArray[np.int64] | None = None) -> Pipeline:
        self.fits.append(rows)
        return super().fit(candidate, rows)

    def score(self, model: Pipeline, rows: NDArray[np.int64] | None = None) -> NDArray[np.float64]:
        self.scored.append(rows)
        return super().score(model, rows)


def _recording(fitter: DaskFitter) -> RecordingFitter:
    return RecordingFitter(
        fitter.client,
        fitter.frame,
        fitter.y,
        fitter.schema,
        fitter.params,
        fitter.positive_share,
        fitter.starts,
    )


@pytest.mark.slow
def test_cross_validation_fits_every_candidate_on_every_fold(fitter: DaskFitter) -> None:
    recording = _recording(fitter)
    folds = [
        (np.arange(0, 3_000, dtype=np.int64), np.arange(3_000, 4_500, dtype=np.int64)),
        (np.arange(0, 4_500, dtype=np.int64), np.arange(4_500, 6_000, dtype=np.int64)),
    ]
    found = [_candidate("xgboost", "none"), _candidate("lightgbm", "class_weight")]
    calls: list[tuple[int, int, FoldResult, Candidate]] = []

    def on_fit(done: int, total: int, result: FoldResult, candidate: Candidate) -> None:
        calls.append((done, total, result, candidate))

    results = cross_validate_on_dask(found, recording, folds, threshold=0.5, on_fit=on_fit)

    assert [r.candidate for r in results] == found
    assert [(done, total) for done, total, _, _ in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [c for _, _, _, c in calls] == [found[0], found[0], found[1], found[1]]
    assert [result for _, _, result, _ in calls] == [f for r in results for f in r.folds]
    assert len(recording.fits) == 4
    for index, result in enumerate(results):
        assert [f.fold for f in result.folds] == [0, 1]
        assert {f.candidate for f in result.folds} == {index}
        for fold, (_, validation_rows) in zip(result.folds, folds, strict=True):
            assert np.array_equal(fold.validation_rows, validation_rows)
            assert len(fold.proba) == len(validation_rows)
            y_val = fitter.y[validation_rows]
            assert fold.metrics["average_precision"] == pytest.approx(
                average_precision_score(y_val, fold.proba)
            )
            assert fold.metrics["average_precision"] > 0.5  # the scores are the rows' own
            assert 0 < fold.metrics["train_average_precision"] <= 1
            assert fold.fit_seconds > 0
    # Each fit read its training rows alone, each fold's scores its validation rows.
    for number, rows in enumerate(recording.fits):
        assert rows is not None
        assert np.array_equal(rows, folds[number % 2][0])
    # After each fit, its validation rows, then its training rows (the training AP).
    assert len(recording.scored) == 8
    for number, rows in enumerate(recording.scored):
        train_rows, validation_rows = folds[(number // 2) % 2]
        assert rows is not None
        assert np.array_equal(rows, train_rows if number % 2 else validation_rows)


@pytest.mark.slow
def test_held_out_scores_score_every_row_once_from_a_fit_without_it(
    fitter: DaskFitter, data: pd.DataFrame
) -> None:
    recording = _recording(fitter)
    folds = held_out_folds(fitter.y, data["time"], seed=PARAMS.seed)
    assert len(folds) == 3  # one a day
    scored = held_out_on_dask(_candidate("lightgbm", "none"), recording, folds)
    assert scored.shape == (ROWS,)
    assert not np.isnan(scored).any()
    assert average_precision_score(fitter.y, scored) > 0.5
    held = [rows for rows in recording.scored if rows is not None]
    assert len(held) == len(recording.scored) == 3
    assert sorted(np.concatenate(held).tolist()) == list(range(ROWS))  # each row once
    for fitted_on, (train_rows, held_out), scored_rows in zip(
        recording.fits, folds, held, strict=True
    ):
        assert fitted_on is not None
        assert np.array_equal(fitted_on, train_rows)
        assert np.array_equal(scored_rows, held_out)
        assert not np.intersect1d(fitted_on, held_out).size  # fitted without its fold


# ---------------------------------------------------------------- a worker killed


# The tasks that train, by the name xgboost.dask (its map_worker_partitions' ``fn``) and
# lightgbm.dask give them. Other tasks of a fit can run for a second on a busy machine:
# a name is what tells the training. Were these names to change, no worker would be
# killed and the test would time out, not pass.
TRAINING_TASKS = {"fn", "train_part"}  # as dask.utils.key_split names them


def _kill_a_training_worker(client: Client, pids: dict[str, int], stop: threading.Event) -> None:
    """SIGKILL the first worker seen training for half a second (the fit is under way)."""
    since: dict[tuple[str, str], float] = {}
    while not stop.is_set():
        now = time.monotonic()
        running = {
            (worker, str(key))
            for worker, keys in client.processing().items()
            for key in keys
            if key_split(key) in TRAINING_TASKS
        }
        since = {task: since.get(task, now) for task in running}
        for worker, _ in sorted(task for task, started in since.items() if now - started > 0.5):
            os.kill(pids[worker], signal.SIGKILL)
            return
        time.sleep(0.05)


def _fit_on_own_cluster(kind: ModelKind, data: pd.DataFrame, allowed_failures: int | None) -> None:
    """A fit that would run for minutes, on a LocalCluster of two workers, with one worker
    killed under the training. ``allowed_failures`` 0: the scheduler gives up on the
    task at that death (KilledWorker); None: Dask's default, the pipeline's setting."""
    long = TrainParams(
        models={
            KINDS[kind]: ModelSpec(
                kind=kind, params={"n_estimators": 100_000, "learning_rate": 0.001}
            )
        }
    )
    retries = {} if allowed_failures is None else {ALLOWED_FAILURES: allowed_failures}
    stop = threading.Event()
    with (
        dask.config.set(retries),
        dask_client(DaskParams(workers=2, memory_limit_gb=2.0), LOG) as own,
    ):
        frame = numbered(dd.from_pandas(data[[*NAMES, "y"]], npartitions=PARTITIONS)).persist()
        y = data["y"].to_numpy()
        fitter = DaskFitter.over(own, frame, y, SCHEMA, long, positive_share=float(y.mean()))
        pids: dict[str, int] = own.run(os.getpid)
        killer = threading.Thread(target=_kill_a_training_worker, args=(own, pids, stop))
        killer.start()
        try:
            fitter.fit(_candidate(kind, "none"))
        finally:
            stop.set()
            killer.join()


ALLOWED_FAILURES = "distributed.scheduler.allowed-failures"
# 0: the scheduler gives up on the dead worker's training task (KilledWorker). Dask's
# default (3, the pipeline's setting): it reschedules that task, so what reaches the
# client is the surviving worker's error, its peer's socket closed under the collective
# (XGBoostError "Ring allgather failed", LightGBMError "Socket recv error, Connection reset
# by peer"): the fitter tells it apart from a fit's own error by the workers it lost.
KILLED = [
    pytest.param(kind, failures, id=f"{kind}-{name}")
    for kind in KINDS
    for failures, name in [(0, "no-retries"), (None, "default-retries")]
]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("kind", "allowed_failures"), KILLED)
def test_a_worker_killed_mid_fit_is_a_cluster_error(
    monkeypatch: pytest.MonkeyPatch,
    data: pd.DataFrame,
    kind: ModelKind,
    allowed_failures: int | None,
) -> None:
    monkeypatch.delenv(SCHEDULER_VARIABLE, raising=False)
    started = time.monotonic()
    with pytest.raises(ClusterError) as caught:  # a fit that returns: "DID NOT RAISE"
        _fit_on_own_cluster(kind, data, allowed_failures)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the Dask cluster lost work: ")
    assert "engine.dask.memory_limit_gb = 2.0" in message
    assert caught.value.__cause__ is None  # the stage prints this line, not a traceback
    assert time.monotonic() - started < 90  # not the fit's minutes: it ended at the death

"""Boosted models trained on Dask partitions: ``xgboost.dask`` and ``lightgbm.dask``.

The stage process holds one small column per row (labels, fold roles, scores); the feature
rows stay on the workers. A fit selects its rows partition by partition (row numbers are
positions in the time-ordered training set, so the folds are the local engine's), thins the
negatives per partition when undersampling, preprocesses each partition with a
preprocessor fitted on a seeded sample, and trains the Dask estimator on the result.

What comes back is the pipeline the local engine ships: the fitted preprocessor, then a
plain ``XGBClassifier`` or ``LGBMClassifier`` holding the Dask-trained booster. Serving,
the image and the monitor see no difference. Scoring runs that pipeline per partition.

Strategies with no distributed form are left out: SMOTE needs each positive row's nearest
neighbours, which lie in other partitions; scikit-learn's estimators (the forest, the MLP,
the linear models, the tree, the baseline) fit in one process.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import dask.dataframe as dd
import lightgbm
import numpy as np
import pandas as pd
import xgboost.dask
from distributed import Client, Future, futures_of
from lightgbm import LGBMClassifier
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.metrics import average_precision_score
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from fraud_detection.errors import CandidateError
from fraud_detection.evaluation import scores
from fraud_detection.modeling import Candidate, classifier, preprocessor
from fraud_detection.params import TrainParams
from fraud_detection.schema import FeatureSchema
from fraud_detection.validation import CandidateResult, Fold, FoldResult, OnFit

ROW_COLUMN = "_row"  # a row's position in the training set, time-ordered
TARGET, WEIGHT = "_target", "_weight"  # the columns a fit's rows carry beside the features
DASK_KINDS = frozenset({"xgboost", "lightgbm"})
# The preprocessor (median imputer, scaler, one-hot encoder) is fitted on at most this many
# rows drawn from the fit's rows: its statistics settle long before that, and the trees
# after it split on order, which a per-column affine scaling does not change.
PREPROCESS_SAMPLE_ROWS = 200_000
_LIGHTGBM_LOG = logging.getLogger("lightgbm")
# lightgbm.dask warns on every fit that Dask, not n_jobs, sets each worker's threads (the
# sklearn settings always hold n_jobs): that says nothing about this fit.
_LIGHTGBM_LOG.addFilter(lambda record: "will be ignored" not in record.getMessage())


class WorkerLostError(RuntimeError):
    """A worker left the cluster during a fit (killed, or past its memory limit)."""


# How long a failed fit waits for the scheduler to notice a dead worker.
_LOST_WORKER_WAIT_SECONDS = 3.0


def split_candidates(found: list[Candidate]) -> tuple[list[Candidate], dict[str, str]]:
    """The candidates Dask can train, and each left-out family with the reason."""
    kept: list[Candidate] = []
    left_out: dict[str, str] = {}
    for candidate in found:
        if candidate.kind not in DASK_KINDS:
            left_out[candidate.family] = (
                f"{candidate.kind} fits in one process (no Dask form; xgboost.dask and "
                "lightgbm.dask train across workers)"
            )
        elif candidate.strategy == "smote":
            left_out[candidate.family] = (
                "SMOTE needs each positive row's nearest neighbours, which lie in other partitions"
            )
        else:
            kept.append(candidate)
    if not kept:
        raise CandidateError(
            "engine.kind dask trains only xgboost or lightgbm models with the strategies "
            "none, class_weight or undersample; train.models has none of them (add one, or "
            "set engine.kind: local)"
        )
    return kept, left_out


def numbered(frame: dd.DataFrame) -> dd.DataFrame:
    """``frame`` with ROW_COLUMN: 0, 1, 2, ... in partition order (the file's order)."""
    ones = frame.map_partitions(
        lambda part: pd.Series(np.ones(len(part), dtype=np.int64), index=part.index),
        meta=pd.Series(dtype=np.int64),
    )
    result: dd.DataFrame = frame.assign(**{ROW_COLUMN: ones.cumsum() - 1})
    return result


def _gather_rows(rows: NDArray[np.int64], *parts: pd.DataFrame) -> pd.DataFrame:
    """The rows with these numbers from the partitions that hold them."""
    frame = pd.concat(parts) if len(parts) > 1 else parts[0]
    kept: pd.DataFrame = frame[np.isin(frame[ROW_COLUMN].to_numpy(), rows, assume_unique=True)]
    return kept


def _uniform(rows: NDArray[np.int64], seed: int) -> NDArray[np.float64]:
    """A uniform number per row from its number alone (SplitMix64): the same rows are kept
    however the data are partitioned, on any cluster."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _thin(part: pd.DataFrame, target: str, keep: float, seed: int) -> pd.DataFrame:
    """Every positive row, and each negative one with probability ``keep``."""
    positive = part[target].to_numpy() == 1
    chosen = positive | (_uniform(part[ROW_COLUMN].to_numpy(), seed) < keep)
    kept: pd.DataFrame = part[chosen]
    return kept


def negative_share_kept(y: NDArray[np.int_], ratio: float) -> float:
    """The share of negatives undersampling keeps: positives / (ratio x negatives), so the
    kept rows have about ``ratio`` positives per negative (the local sampler's target)."""
    positives = int(y.sum())
    negatives = len(y) - positives
    return min(1.0, positives / (ratio * negatives)) if negatives else 1.0


def _fit_rows(
    part: pd.DataFrame,
    fitted: ColumnTransformer,
    schema: FeatureSchema,
    out: list[str],
    weights: tuple[float, float] | None,
) -> pd.DataFrame:
    """A partition as a fit reads it: the preprocessed features, the target, a weight."""
    if len(part):
        values = np.asarray(fitted.transform(part[schema.names]), dtype=np.float64)
    else:  # scikit-learn refuses empty input
        values = np.empty((0, len(out)))
    ready = pd.DataFrame(values, columns=out, index=part.index)
    target = part[schema.target].to_numpy(dtype=np.float64)
    ready[TARGET] = target
    negative, positive = weights or (1.0, 1.0)
    ready[WEIGHT] = np.where(target == 1, positive, negative)
    return ready


def _scored(part: pd.DataFrame, model: Pipeline, names: list[str]) -> pd.DataFrame:
    proba = model.predict_proba(part[names])[:, 1] if len(part) else np.empty(0)
    return pd.DataFrame(
        {ROW_COLUMN: part[ROW_COLUMN].to_numpy(), "proba": proba.astype(np.float64)},
        index=part.index,
    )


@dataclass(frozen=True)
class DaskFitter:
    """Fits candidates on rows of one numbered Dask frame (features, target, ROW_COLUMN)."""

    client: Client
    frame: dd.DataFrame
    y: NDArray[np.int_]  # the target of every row, in row order (held by the stage)
    schema: FeatureSchema
    params: TrainParams
    positive_share: float
    starts: NDArray[np.int64]  # each partition's first row number
    # The latest selection's pieces: a future the client drops is released on the cluster,
    # and a frame made from futures does not hold them. Each selection is used (fitted or
    # scored) before the next one is made.
    _held: list[Future[pd.DataFrame]] = field(default_factory=list, repr=False)

    @classmethod
    def over(
        cls,
        client: Client,
        frame: dd.DataFrame,
        y: NDArray[np.int_],
        schema: FeatureSchema,
        params: TrainParams,
        *,
        positive_share: float,
    ) -> DaskFitter:
        """A fitter over a numbered frame whose rows are ``y``'s."""
        lengths = np.asarray(client.compute(frame.map_partitions(len)).result(), dtype=np.int64)
        if int(lengths.sum()) != len(y):
            raise ValueError(f"the frame has {lengths.sum()} rows, the labels {len(y)}")
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return cls(client, frame, y, schema, params, positive_share, starts)

    def rows(self, rows: NDArray[np.int64] | None) -> dd.DataFrame:
        """The frame's rows with these (sorted) numbers, all rows for None. A subset comes
        in pieces of equal length, at least one a worker and each made on its own worker,
        so every worker takes an equal part in a fit: a time-ordered fold's rows sit in
        the first partitions alone, and a task runs where its input lies."""
        if rows is None:
            return self.frame
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) > 1 and not (np.diff(rows) > 0).all():
            raise ValueError("row numbers must be sorted and unique (as the folds' are)")
        workers = sorted(self._workers())
        # The persisted partitions, by key: the pieces' tasks read them where they lie.
        held = _partition_futures(self.frame)
        holding = np.unique(np.searchsorted(self.starts, rows, side="right") - 1)
        pieces = []
        for number, piece in enumerate(np.array_split(rows, max(len(workers), len(holding)))):
            sources = np.unique(np.searchsorted(self.starts, piece, side="right") - 1)
            pieces.append(
                self.client.submit(
                    _gather_rows,
                    piece,
                    *(held[int(i)] for i in sources),
                    workers=[workers[number % len(workers)]],
                    allow_other_workers=True,  # should that worker die, another takes over
                    pure=False,
                )
            )
        self._held[:] = pieces
        selected: dd.DataFrame = dd.from_delayed(pieces, meta=self.frame._meta, verify_meta=False)
        return selected

    def fit(self, candidate: Candidate, rows: NDArray[np.int64] | None = None) -> Pipeline:
        """The fitted pipeline for ``candidate`` on ``rows``: preprocessor, then a local
        XGBClassifier or LGBMClassifier holding the booster trained across the workers."""
        labels = self.y if rows is None else self.y[rows]
        part = self.rows(rows)
        if candidate.strategy == "undersample":
            keep = negative_share_kept(labels, self.params.undersample.sampling_strategy)
            part = part.map_partitions(
                _thin, self.schema.target, keep, self.params.seed, meta=part._meta
            )
        fitted = self._preprocessor(part, len(labels))
        out = list(fitted.get_feature_names_out())
        meta = pd.DataFrame({name: pd.Series(dtype=np.float64) for name in [*out, TARGET, WEIGHT]})
        weights = self._class_weights(candidate, labels)
        ready = part.map_partitions(_fit_rows, fitted, self.schema, out, weights, meta=meta)
        # Held in memory for the fit; arrays, not frames, as the local fit gets from the
        # preprocessor (a model fitted on named columns warns when served arrays).
        ready = self.client.persist(ready)
        local = classifier(
            candidate,
            self.params.models[candidate.model],
            seed=self.params.seed,
            positive_share=self.positive_share,
        )
        estimator = self._on_dask(local)
        sample_weight = None if weights is None else ready[WEIGHT].to_dask_array(lengths=True)
        workers = self._workers()
        try:
            with warnings.catch_warnings():
                # LightGBM warns that Dask, not n_jobs, sets each worker's threads.
                warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
                estimator.fit(
                    ready[out].to_dask_array(lengths=True),
                    ready[TARGET].to_dask_array(lengths=True).astype(np.int64),
                    sample_weight=sample_weight,
                )
        except Exception as exc:
            self._raise_if_a_worker_left(workers, exc, candidate)
            raise
        return Pipeline([("preprocess", fitted), ("model", _to_local(estimator, local))])

    def _workers(self) -> set[str]:
        return set(self.client.scheduler_info().get("workers", {}))

    def _raise_if_a_worker_left(
        self, before: set[str], exc: Exception, candidate: Candidate
    ) -> None:
        """A worker that dies mid-fit breaks the boosting library's collective: the
        surviving workers fail with a socket or allgather error (Dask retries the dead
        worker's task, so no KilledWorker reaches the client). Tell that apart from a
        fit's own error by the workers the scheduler still has."""
        deadline = time.monotonic() + _LOST_WORKER_WAIT_SECONDS
        while not (left := before - self._workers()) and time.monotonic() < deadline:
            time.sleep(0.1)  # the scheduler learns of a death within a heartbeat or two
        if left:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WorkerLostError(
                f"{len(left)} worker(s) left the cluster during the {candidate.family} fit, "
                f"which then failed ({type(exc).__name__}: {first[:200]})"
            ) from None

    def _class_weights(
        self, candidate: Candidate, labels: NDArray[np.int_]
    ) -> tuple[float, float] | None:
        """LightGBM's balanced class weights as row weights of all the fit's rows: its Dask
        fit would balance each worker's rows on their own (and a weight per class fails on
        a worker without that class). XGBoost's class weight is its scale_pos_weight."""
        if candidate.kind != "lightgbm" or candidate.strategy != "class_weight":
            return None
        positives = int(labels.sum())
        return len(labels) / (2 * (len(labels) - positives)), len(labels) / (2 * positives)

    def _preprocessor(self, part: dd.DataFrame, n_rows: int) -> ColumnTransformer:
        share = min(1.0, PREPROCESS_SAMPLE_ROWS / max(n_rows, 1))
        sample = part[self.schema.names]
        if share < 1.0:
            sample = sample.sample(frac=share, random_state=self.params.seed)
        return preprocessor(self.schema).fit(self.client.compute(sample).result())

    def _on_dask(self, local: Any) -> Any:
        """The Dask twin of ``local``, with the same settings."""
        settings = local.get_params()
        settings.pop("n_jobs", None)  # a Dask fit uses each worker's threads
        if isinstance(local, XGBClassifier):
            estimator = xgboost.dask.DaskXGBClassifier(**settings)
            estimator.client = self.client
            return estimator
        settings["class_weight"] = None  # given as row weights (_class_weights)
        # LightGBM prints its Dask set-up ("Finding random open ports") unless given a logger.
        lightgbm.register_logger(_LIGHTGBM_LOG)
        return lightgbm.DaskLGBMClassifier(client=self.client, **settings)

    def score(self, model: Pipeline, rows: NDArray[np.int64] | None = None) -> NDArray[np.float64]:
        """The model's positive-class probability for ``rows``, in row order."""
        return score_frame(self.rows(rows), model, self.schema.names)


def _partition_futures(frame: dd.DataFrame) -> list[Future[pd.DataFrame]]:
    """A persisted frame's partitions as futures, in partition order."""
    # A persisted partition's key is (the collection's name, the partition's number).
    numbered_futures = [
        (f.key[1], f) for f in futures_of(frame) if isinstance(f.key, tuple) and len(f.key) == 2
    ]
    if len(numbered_futures) != frame.npartitions:
        raise ValueError("the frame must be persisted (DaskFitter.over's frame)")
    return [f for _, f in sorted(numbered_futures, key=lambda pair: int(pair[0]))]


def score_frame(frame: dd.DataFrame, model: Pipeline, names: list[str]) -> NDArray[np.float64]:
    """``model``'s positive-class probability for every row of a numbered frame, computed
    per partition and returned in row order."""
    meta = pd.DataFrame({ROW_COLUMN: pd.Series(dtype=np.int64), "proba": pd.Series(dtype=float)})
    scored = frame.map_partitions(_scored, model, names, meta=meta).compute()
    ordered = scored.sort_values(ROW_COLUMN, kind="stable")
    return np.asarray(ordered["proba"].to_numpy(), dtype=np.float64)


def _to_local(estimator: Any, local: Any) -> Any:
    """The fitted local estimator: the same class and settings as ``local``."""
    if isinstance(estimator, lightgbm.DaskLGBMClassifier):
        fitted: LGBMClassifier = estimator.to_local()
        # The shipped model scores a few rows at a time: one thread, as the local refit.
        return fitted.set_params(n_jobs=local.get_params()["n_jobs"])
    shipped: XGBClassifier = clone(local)
    shipped.load_model(bytearray(estimator.get_booster().save_raw("ubj")))
    return shipped


def cross_validate_on_dask(
    candidates: list[Candidate],
    fitter: DaskFitter,
    folds: list[Fold],
    *,
    threshold: float,
    on_fit: OnFit | None = None,
) -> list[CandidateResult]:
    """Every candidate on every fold, one fit at a time across the whole cluster; the
    same results the local cross-validation returns."""
    results = [CandidateResult(candidate) for candidate in candidates]
    total = len(candidates) * len(folds)
    done = 0
    for index, candidate in enumerate(candidates):
        for number, (train_rows, validation_rows) in enumerate(folds):
            started = time.perf_counter()
            model = fitter.fit(candidate, train_rows)
            seconds = time.perf_counter() - started
            proba = fitter.score(model, validation_rows)
            metrics = scores(fitter.y[validation_rows], proba, threshold)
            train_proba = fitter.score(model, train_rows)
            metrics["train_average_precision"] = float(
                average_precision_score(fitter.y[train_rows], train_proba)
            )
            result = FoldResult(index, number, metrics, seconds, validation_rows, proba)
            results[index].folds.append(result)
            done += 1
            if on_fit is not None:
                on_fit(done, total, result, candidate)
    return results


def held_out_on_dask(
    candidate: Candidate, fitter: DaskFitter, folds: list[Fold]
) -> NDArray[np.float64]:
    """Each row's score from ``candidate`` fitted without its fold (the drift reference's
    held-out scores, reference.held_out_scores's folds)."""
    scored = np.full(len(fitter.y), np.nan)
    for train_rows, held_out in folds:
        scored[held_out] = fitter.score(fitter.fit(candidate, train_rows), held_out)
    return scored

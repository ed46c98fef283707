"""Candidate models: one fitted pipeline per (model, imbalance strategy, grid point).

A candidate is an imbalanced-learn ``Pipeline``: preprocessing built from the feature
schema, then an optional sampler, then the classifier. imbalanced-learn applies samplers
only in ``fit``, so resampling happens inside training folds and never touches the rows
a model is scored on. The model that ships drops the sampler (it does nothing at
prediction time) and is a plain scikit-learn ``Pipeline``.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline as ImbPipeline
from imblearn.under_sampling import RandomUnderSampler
from lightgbm import LGBMClassifier
from pydantic import BaseModel, ConfigDict
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier
from xgboost import XGBClassifier

from fraud_detection.errors import CandidateError
from fraud_detection.params import (
    CalibrationMethod,
    CalibrationParams,
    ModelKind,
    ModelSpec,
    SmoteParams,
    Strategy,
    TrainParams,
    UndersampleParams,
)
from fraud_detection.schema import FeatureSchema

# Estimators that take class_weight; XGBoost gets scale_pos_weight instead. scikit-learn's
# MLP has no class weights: resample instead.
_CLASS_WEIGHT_KINDS = {"logistic_regression", "decision_tree", "random_forest", "lightgbm"}


@dataclass(frozen=True)
class Candidate:
    """One point of the comparison: a model family, a strategy and its settings."""

    model: str  # the key under train.models in params.yaml
    kind: ModelKind
    strategy: Strategy
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """Model and strategy: one leaderboard row (and one MLflow child run)."""
        return f"{self.model}/{self.strategy}"

    @property
    def label(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.settings.items()))
        return f"{self.family}" + (f" [{shown}]" if shown else "")


def candidates(params: TrainParams) -> list[Candidate]:
    """Every (model, strategy, grid point) combination that params.yaml asks for."""
    found: list[Candidate] = []
    for name, spec in params.models.items():
        for strategy in spec.strategies:
            if strategy == "class_weight" and spec.kind not in _CLASS_WEIGHT_KINDS | {"xgboost"}:
                raise CandidateError(
                    f"train.models.{name}.strategies: '{spec.kind}' has no class weights; "
                    "remove 'class_weight' from its strategies"
                )
            keys = sorted(spec.grid)
            for values in itertools.product(*(spec.grid[k] for k in keys)):
                settings = dict(zip(keys, values, strict=True))
                found.append(Candidate(name, spec.kind, strategy, settings))
    return found


def preprocessor(schema: FeatureSchema) -> ColumnTransformer:
    """Impute and scale numeric columns; impute and one-hot encode categorical ones."""
    parts: list[tuple[str, Any, list[str]]] = []
    if schema.numeric:
        numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        parts.append(("numeric", numeric, schema.numeric))
    if schema.categorical:
        categorical = make_pipeline(
            SimpleImputer(strategy="most_frequent"),
            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
        )
        parts.append(("categorical", categorical, schema.categorical))
    return ColumnTransformer(parts, verbose_feature_names_out=False)


def classifier(
    candidate: Candidate, spec: ModelSpec, *, seed: int, positive_share: float
) -> ClassifierMixin:
    """The estimator for a candidate, with its class weighting if the strategy asks for it."""
    weighted = candidate.strategy == "class_weight"
    fixed = dict(spec.params)
    estimator: BaseEstimator
    if candidate.kind == "dummy":
        estimator = DummyClassifier(strategy="prior")
    elif candidate.kind == "logistic_regression":
        estimator = LogisticRegression(max_iter=2000, random_state=seed)
    elif candidate.kind == "decision_tree":
        estimator = DecisionTreeClassifier(random_state=seed)
    elif candidate.kind == "random_forest":
        # One thread per fit: folds and candidates already run in parallel.
        estimator = RandomForestClassifier(random_state=seed, n_jobs=1)
    elif candidate.kind == "xgboost":
        estimator = XGBClassifier(
            random_state=seed, n_jobs=1, tree_method="hist", eval_metric="aucpr"
        )
    elif candidate.kind == "lightgbm":
        # verbose=-1: LightGBM otherwise prints a line per fit and warns about every split
        # it cannot make on a small fold.
        estimator = LGBMClassifier(random_state=seed, n_jobs=1, verbose=-1)
    else:
        estimator = MLPClassifier(random_state=seed)
    if weighted and candidate.kind == "xgboost":
        # Weight positives by the negative/positive ratio, XGBoost's class-weight knob.
        fixed.setdefault("scale_pos_weight", (1 - positive_share) / positive_share)
    elif weighted:
        fixed.setdefault("class_weight", "balanced")
    _check_parameter_names(estimator, {**fixed, **candidate.settings}, candidate.model)
    estimator.set_params(**fixed, **candidate.settings)
    return estimator


def _check_parameter_names(estimator: BaseEstimator, given: dict[str, Any], model: str) -> None:
    """Reject unknown estimator parameters up front (XGBoost would silently accept them)."""
    known = set(estimator.get_params())
    for name in sorted(set(given) - known):
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise CandidateError(
            f"train.models.{model}: '{name}' is not a parameter of "
            f"{type(estimator).__name__}{hint} (check its params and grid keys)"
        )


@dataclass(frozen=True)
class ResamplingTarget:
    """A sampler's ``sampling_strategy``, worked out on each fold's own labels.

    Oversampling grows the minority to ``ratio`` x the majority; undersampling shrinks the
    majority to the minority / ``ratio``. A fold that is already more balanced than that
    is left as it is (a fixed float ratio would make imbalanced-learn raise instead).
    """

    ratio: float
    oversample: bool

    def __call__(self, y: Any) -> dict[int, int]:
        labels = np.asarray(y)
        positives = int(labels.sum())
        minority_label = 1 if 2 * positives <= len(labels) else 0
        minority = min(positives, len(labels) - positives)
        majority = len(labels) - minority
        if self.oversample:
            return {minority_label: max(minority, math.ceil(self.ratio * majority))}
        return {1 - minority_label: min(majority, math.floor(minority / self.ratio))}


def sampler(strategy: Strategy, params: TrainParams) -> Any:
    if strategy == "undersample":
        return RandomUnderSampler(
            sampling_strategy=ResamplingTarget(params.undersample.sampling_strategy, False),
            random_state=params.seed,
        )
    if strategy == "smote":
        return SMOTE(
            sampling_strategy=ResamplingTarget(params.smote.sampling_strategy, True),
            k_neighbors=params.smote.k_neighbors,
            random_state=params.seed,
        )
    return None


def build_pipeline(
    candidate: Candidate,
    params: TrainParams,
    schema: FeatureSchema,
    *,
    positive_share: float,
) -> ImbPipeline:
    spec = params.models[candidate.model]
    steps: list[tuple[str, Any]] = [("preprocess", preprocessor(schema))]
    resampler = sampler(candidate.strategy, params)
    if resampler is not None:
        steps.append(("resample", resampler))
    steps.append(
        ("model", classifier(candidate, spec, seed=params.seed, positive_share=positive_share))
    )
    return ImbPipeline(steps)


def inference_pipeline(fitted: ImbPipeline) -> Pipeline:
    """The fitted steps without the sampler: a plain scikit-learn Pipeline to ship."""
    return Pipeline([(name, step) for name, step in fitted.steps if name != "resample"])


def refit_for_serving(pipeline: ImbPipeline, X: Any, y: Any) -> Pipeline:
    """Fit on every core, then ship a single-threaded :func:`inference_pipeline`.

    Candidates train with one thread each because cross-validation runs them side by
    side; a lone refit can use every core. Serving scores a few rows at a time, where
    starting threads costs more than it saves, so the shipped model uses one.
    """
    # Only estimators whose fit really uses threads: LogisticRegression also takes n_jobs,
    # but it is deprecated there (FutureWarning in scikit-learn 1.9, an error in 1.10).
    threaded = isinstance(
        pipeline.named_steps["model"], RandomForestClassifier | XGBClassifier | LGBMClassifier
    )
    if threaded:
        pipeline.set_params(model__n_jobs=-1)
    pipeline.fit(X, y)
    if threaded:
        pipeline.set_params(model__n_jobs=1)
    return inference_pipeline(pipeline)


class Selection(BaseModel):
    """What the train stage hands to evaluate: enough to rebuild the winner exactly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    kind: ModelKind
    strategy: Strategy
    settings: dict[str, Any]
    label: str
    model_spec: ModelSpec
    seed: int
    undersample: UndersampleParams
    smote: SmoteParams
    calibration: CalibrationParams
    # What ships: train.calibration.method, or none where it did not lower the winner's
    # cross-fitted out-of-fold Brier score.
    calibration_method: CalibrationMethod
    positive_share: float
    cv_average_precision: float
    decision: str  # why this candidate won (the selection rule's sentence)
    tied: list[str]  # the model/strategy rows tied with the best CV AP
    # The MLflow experiment the train stage logged to: a setting, not tracking state. The
    # run itself is looked up by this selection's fingerprint (tracking.find_pipeline_run).
    experiment_name: str

    @classmethod
    def of(
        cls,
        candidate: Candidate,
        params: TrainParams,
        *,
        positive_share: float,
        cv_average_precision: float,
        decision: str,
        tied: list[str],
        calibration_method: CalibrationMethod,
    ) -> Selection:
        return cls(
            model=candidate.model,
            kind=candidate.kind,
            strategy=candidate.strategy,
            settings=candidate.settings,
            label=candidate.label,
            model_spec=params.models[candidate.model],
            seed=params.seed,
            undersample=params.undersample,
            smote=params.smote,
            calibration=params.calibration,
            calibration_method=calibration_method,
            positive_share=positive_share,
            cv_average_precision=cv_average_precision,
            decision=decision,
            tied=tied,
            experiment_name=params.experiment_name,
        )

    @property
    def fingerprint(self) -> str:
        """A digest of everything the selection says: the train stage tags its MLflow run
        with it, so later stages find that run without storing its id in an output."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.model, self.kind, self.strategy, dict(self.settings))

    def recipe(self) -> TrainParams:
        """The train settings that rebuild the winner (its model alone)."""
        return TrainParams(
            models={self.model: self.model_spec},
            seed=self.seed,
            undersample=self.undersample,
            smote=self.smote,
        )

    def unfitted_pipeline(self, schema: FeatureSchema) -> ImbPipeline:
        return build_pipeline(
            self.candidate, self.recipe(), schema, positive_share=self.positive_share
        )

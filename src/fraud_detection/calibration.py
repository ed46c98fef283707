"""Probability calibration: a map from a model's scores to probabilities that mean what
they say, fitted on the winner's out-of-fold scores.

Class weights, undersampling and SMOTE all train a model on a world with more positives
than the real one, so its scores run high; calibration learns, from predictions on rows
the model did not train on, which observed positive rate each score stands for. The map
is monotone, so the ranking (and average precision) barely moves while Brier score and
log loss do.

The shipped model is one scikit-learn pipeline whose last step,
:class:`CalibratedClassifier`, holds the fitted classifier and the fitted map. The
calibrators keep only numbers and apply them with numpy, so the service's compiled
scorer can call the very same function after its own copy of the classifier.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from fraud_detection.errors import DataValidationError

Scores = NDArray[np.float64]

# Scores are clipped this far inside (0, 1) before taking log-odds: trees and forests
# give exact zeros, whose log-odds are infinite.
_EDGE = 1e-7


class SigmoidCalibrator:
    """Platt scaling on the log-odds: ``p' = expit(slope * logit(p) + intercept)``.

    Fitting on the log-odds rather than on ``p`` itself makes the map exact for the
    distortion resampling causes: training on k times the true positive share shifts
    every log-odds by log(k), which ``intercept`` undoes.
    """

    def __init__(self, slope: float = 1.0, intercept: float = 0.0) -> None:
        self.slope = slope
        self.intercept = intercept

    def fit(self, scores: ArrayLike, y: ArrayLike) -> SigmoidCalibrator:
        # No penalty: two parameters on thousands of rows need no shrinkage.
        fitted = LogisticRegression(C=np.inf).fit(_log_odds(scores)[:, None], np.asarray(y))
        self.slope = float(fitted.coef_[0, 0])
        self.intercept = float(fitted.intercept_[0])
        return self

    def predict(self, scores: ArrayLike) -> Scores:
        return np.asarray(expit(self.slope * _log_odds(scores) + self.intercept))

    def __repr__(self) -> str:
        return f"SigmoidCalibrator(slope={self.slope:.4f}, intercept={self.intercept:.4f})"


class IsotonicCalibrator:
    """A monotone step function of the score (scikit-learn's isotonic regression),
    applied as linear interpolation between its knots and flat beyond them."""

    def __init__(self) -> None:
        self.knots = np.array([0.0, 1.0])
        self.values = np.array([0.0, 1.0])

    def fit(self, scores: ArrayLike, y: ArrayLike) -> IsotonicCalibrator:
        fitted = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        fitted.fit(np.asarray(scores, dtype=np.float64), np.asarray(y, dtype=np.float64))
        self.knots = np.asarray(fitted.X_thresholds_, dtype=np.float64)
        self.values = np.asarray(fitted.y_thresholds_, dtype=np.float64)
        return self

    def predict(self, scores: ArrayLike) -> Scores:
        # np.interp is IsotonicRegression.predict with out_of_bounds="clip", without its
        # input checks (tens of microseconds a call on the request path).
        return np.asarray(np.interp(np.asarray(scores, dtype=np.float64), self.knots, self.values))

    def __repr__(self) -> str:
        return f"IsotonicCalibrator({len(self.knots)} knots)"


class IdentityCalibrator:
    """``calibration.method: none``: the scores as they are."""

    def fit(self, scores: ArrayLike, y: ArrayLike) -> IdentityCalibrator:
        return self

    def predict(self, scores: ArrayLike) -> Scores:
        return np.asarray(scores, dtype=np.float64)

    def __repr__(self) -> str:
        return "IdentityCalibrator()"


Calibrator = SigmoidCalibrator | IsotonicCalibrator | IdentityCalibrator
_METHODS: dict[str, type[Calibrator]] = {
    "sigmoid": SigmoidCalibrator,
    "isotonic": IsotonicCalibrator,
    "none": IdentityCalibrator,
}


def _log_odds(scores: ArrayLike) -> Scores:
    return np.asarray(logit(np.clip(np.asarray(scores, dtype=np.float64), _EDGE, 1 - _EDGE)))


def fit_calibrator(method: str, scores: ArrayLike, y: ArrayLike) -> Calibrator:
    """A calibrator of ``method`` fitted on (score, label) pairs."""
    if method not in _METHODS:
        raise DataValidationError(
            f"train.calibration.method '{method}' is not one of {', '.join(_METHODS)}"
        )
    return _METHODS[method]().fit(scores, y)


def check_folds(y: ArrayLike, fold: ArrayLike, min_positives: int) -> None:
    """Every out-of-fold fold holds at least ``min_positives`` positive rows."""
    labels, folds = np.asarray(y), np.asarray(fold)
    for number in np.unique(folds):
        positives = int(labels[folds == number].sum())
        if positives < min_positives:
            raise DataValidationError(
                f"CV fold {number} has {positives} positive row(s), fewer than "
                f"train.calibration.min_positives={min_positives} needed to check a "
                "calibration fitted on the other folds. Lower train.cv.n_splits, use more "
                "data, or set train.calibration.method: none"
            )


def cross_fitted(method: str, scores: ArrayLike, y: ArrayLike, fold: ArrayLike) -> Scores:
    """Out-of-fold scores calibrated fold by fold, each fold by a calibrator fitted on
    the other folds: calibrated scores the calibrator itself has not seen, to judge
    calibration without flattering it."""
    p, labels, folds = (np.asarray(a) for a in (scores, y, fold))
    out = np.empty(len(p), dtype=np.float64)
    for number in np.unique(folds):
        held = folds == number
        out[held] = fit_calibrator(method, p[~held], labels[~held]).predict(p[held])
    return out


def cross_fitted_if_helpful(
    method: str, scores: ArrayLike, y: ArrayLike, fold: ArrayLike
) -> tuple[str, Scores]:
    """``method`` and its cross-fitted scores if they have a lower Brier score than the
    raw ones, else ``"none"`` and the raw scores: a calibrator that does not help on rows
    it has not seen does not ship. (A log-odds sigmoid can hurt a random forest, whose
    many exact zeros sit far from its other scores on the log-odds scale.)"""
    labels = np.asarray(y, dtype=np.float64)
    raw = np.asarray(scores, dtype=np.float64)
    if method == "none":
        return method, raw
    crossed = cross_fitted(method, raw, labels, fold)
    if np.mean((crossed - labels) ** 2) < np.mean((raw - labels) ** 2):
        return method, crossed
    return "none", raw


def helpful_method(method: str, scores: ArrayLike, y: ArrayLike, fold: ArrayLike) -> str:
    """The calibration :func:`cross_fitted_if_helpful` keeps."""
    return cross_fitted_if_helpful(method, scores, y, fold)[0]


class CalibratedClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A fitted classifier whose positive-class score goes through a fitted calibrator.

    Both parts arrive fitted: the calibrator learned on out-of-fold scores, which a fit
    on the rows given here could not reproduce (in-sample scores are overconfident), so
    ``fit`` only records the classes.
    """

    def __init__(self, estimator: Any, calibrator: Any) -> None:
        self.estimator = estimator
        self.calibrator = calibrator

    def fit(self, X: Any, y: Any = None) -> CalibratedClassifier:
        self.classes_ = np.asarray(self.estimator.classes_)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "classes_")

    def __sklearn_clone__(self) -> CalibratedClassifier:
        # As scikit-learn's FrozenEstimator does: a clone would drop the fitted parts,
        # which nothing here can refit.
        return self

    @property
    def positive_index(self) -> int:
        return [int(label) for label in self.estimator.classes_].index(1)

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        raw = self.estimator.predict_proba(X)[:, self.positive_index]
        calibrated = self.calibrator.predict(raw)
        columns = [1.0 - calibrated, calibrated]
        if self.positive_index == 0:
            columns.reverse()
        return np.column_stack(columns)

    def predict(self, X: Any) -> NDArray[Any]:
        proba = self.predict_proba(X)
        return np.asarray(self.classes_[np.argmax(proba, axis=1)])


def with_calibration(pipeline: Pipeline, calibrator: Calibrator) -> Pipeline:
    """``pipeline`` with its last step wrapped in the calibrator (unchanged for none)."""
    if isinstance(calibrator, IdentityCalibrator):
        return pipeline
    *steps, (name, estimator) = pipeline.steps
    wrapped = CalibratedClassifier(estimator, calibrator).fit(None)
    return Pipeline([*steps, (name, wrapped)])


def calibrator_of(pipeline: Any) -> Calibrator:
    """The calibrator a shipped pipeline applies (identity for an uncalibrated one), for
    scores of the same recipe computed elsewhere, such as the drift reference's."""
    step = pipeline[-1]
    if isinstance(step, CalibratedClassifier):
        calibrator: Calibrator = step.calibrator
        return calibrator
    return IdentityCalibrator()


def without_calibration(pipeline: Pipeline) -> Pipeline:
    """A shipped pipeline's classifier before its calibrator (itself if uncalibrated):
    the raw scores that the reports set beside the calibrated ones."""
    *steps, (name, step) = pipeline.steps
    if not isinstance(step, CalibratedClassifier):
        return pipeline
    return Pipeline([*steps, (name, step.estimator)])

"""Fast scoring for the request path: the fitted pipeline's arithmetic without its overhead.

scikit-learn validates the input, checks fitted state and dispatches through joblib on
every call. For one row through the random-forest pipeline that costs about 12 ms here,
while the trees themselves take 0.4 ms, and 0.1 ms in one treelite call
(docs/benchmarks.md). :func:`compile_scorer` reads the fitted parameters (imputer
statistics, scaler mean and scale, one-hot categories, the coefficients, the XGBoost and
LightGBM boosters, the MLP's weights) and applies them with numpy, in the same order and
precision as scikit-learn; forests are scored by treelite's GTIL, a C++ interpreter of
the same trees. It is checked against the pipeline's own ``predict_proba`` on probe rows
before it is used; any step it does not know, or any difference above :data:`TOLERANCE`,
and the scorer falls back to ``predict_proba``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from fraud_detection.schema import FeatureSchema

# Largest difference from predict_proba accepted for the compiled path.
TOLERANCE = 1e-9
PROBE_ROWS = 256
# Forests: up to this many rows per call go through treelite, more through the trees.
GTIL_MAX_ROWS = 32

Rows = Sequence[Sequence[Any]]
Matrix = np.ndarray[Any, np.dtype[Any]]


class Unsupported(Exception):  # noqa: N818  (control flow, not an error the user sees)
    """A pipeline step the compiled path does not reproduce; the pipeline is used instead."""


@dataclass(frozen=True)
class Scorer:
    """Scores rows given as sequences of feature values in schema order: P(positive class)."""

    method: str  # "compiled" or "pipeline"
    detail: str  # what was compiled, or why the pipeline is used
    score: Callable[[Rows], Matrix]

    def __call__(self, rows: Rows) -> Matrix:
        return self.score(rows)


def pipeline_scorer(pipeline: Any, schema: FeatureSchema, detail: str) -> Scorer:
    """Scores through ``pipeline.predict_proba`` on a DataFrame (the reference path)."""
    names = schema.names
    numeric = schema.numeric
    positive = _positive_index(pipeline)

    def score(rows: Rows) -> Matrix:
        frame = pd.DataFrame(list(rows), columns=names)
        frame[numeric] = frame[numeric].astype("float64")
        return np.asarray(pipeline.predict_proba(frame)[:, positive], dtype=np.float64)

    return Scorer("pipeline", detail, score)


def compile_scorer(pipeline: Any, schema: FeatureSchema, example: pd.DataFrame | None) -> Scorer:
    """The compiled scorer if it reproduces ``predict_proba`` on probe rows, else the pipeline."""
    try:
        encode = _compile_preprocessing(pipeline[:-1], schema)
        estimator = pipeline[-1]
        predict, label = _compile_estimator(estimator)
    except (Unsupported, TypeError, IndexError, AttributeError) as error:
        return pipeline_scorer(pipeline, schema, f"not compiled: {error}")

    def score(rows: Rows) -> Matrix:
        return predict(encode(rows))

    compiled = Scorer("compiled", label, score)
    reference = pipeline_scorer(pipeline, schema, "reference")
    probes = probe_rows(schema, example, PROBE_ROWS)
    gap = float(np.max(np.abs(compiled(probes) - reference(probes))))
    single_gap = max(abs(float(compiled([row])[0] - reference([row])[0])) for row in probes[:8])
    worst = max(gap, single_gap)
    if not worst <= TOLERANCE:
        return pipeline_scorer(
            pipeline, schema, f"not compiled: differs from predict_proba by {worst:.2e}"
        )
    return compiled


def probe_rows(schema: FeatureSchema, example: pd.DataFrame | None, count: int) -> list[list[Any]]:
    """Seeded rows around the example values, within the schema's bounds (plus unseen
    categories), for checking the compiled path against the pipeline."""
    rng = np.random.default_rng(0)
    columns: list[list[Any]] = []
    for feature in schema.features:
        seen = _seen_values(feature.name, schema, example)
        if feature.kind == "numeric":
            base = rng.choice(np.asarray(seen, dtype=np.float64), size=count)
            values = base * rng.lognormal(0.0, 1.0, size=count) + rng.normal(0.0, 1.0, size=count)
            low = -np.inf if feature.minimum is None else feature.minimum
            high = np.inf if feature.maximum is None else feature.maximum
            columns.append(np.clip(values, low, high).tolist())
        else:
            levels = [*(feature.categories or [str(value) for value in seen]), "__unseen__"]
            columns.append([levels[i] for i in rng.integers(0, len(levels), size=count)])
    return [list(row) for row in zip(*columns, strict=True)]


def _seen_values(name: str, schema: FeatureSchema, example: pd.DataFrame | None) -> list[Any]:
    values: list[Any] = []
    if example is not None and name in example:
        values = [value for value in example[name].tolist() if value is not None]
    if not values and name in schema.example:
        values = [schema.example[name]]
    return values or [0.0]


def _positive_index(estimator: Any) -> int:
    classes = [int(label) for label in estimator.classes_]
    if sorted(classes) != [0, 1]:
        raise Unsupported(f"classes {classes} are not 0/1")
    return classes.index(1)


# --- preprocessing ---------------------------------------------------------------------

Block = Callable[[Rows], Matrix]


def _compile_preprocessing(steps: Any, schema: FeatureSchema) -> Block:
    transformers = list(steps)
    if len(transformers) != 1 or type(transformers[0]).__name__ != "ColumnTransformer":
        raise Unsupported("preprocessing is not a single ColumnTransformer")
    column_transformer = transformers[0]
    position = {name: index for index, name in enumerate(schema.names)}
    # Rows of a schema with categorical features hold strings: numeric blocks must pick
    # their columns before converting to float.
    all_numeric = not schema.categorical
    blocks = [
        _compile_block(transformer, [position[str(column)] for column in columns], all_numeric)
        for _, transformer, columns in column_transformer.transformers_
        if not (isinstance(transformer, str) and transformer == "drop")
    ]
    if len(blocks) == 1:
        return blocks[0]
    return lambda rows: np.hstack([block(rows) for block in blocks])


def _compile_block(transformer: Any, columns: list[int], all_numeric: bool) -> Block:
    if isinstance(transformer, str):
        if transformer != "passthrough":
            raise Unsupported(f"column transformer {transformer!r}")
        return _numeric_columns(columns, all_numeric)
    steps = [step for _, step in getattr(transformer, "steps", [("", transformer)])]
    if steps and type(steps[-1]).__name__ == "OneHotEncoder":
        return _categorical_block(steps, columns)
    block = _numeric_columns(columns, all_numeric)
    for step in steps:
        block = _numeric_step(step, block)
    return block


def _numeric_columns(columns: list[int], all_numeric: bool) -> Block:
    take = np.asarray(columns)

    def block(rows: Rows) -> Matrix:
        # float() of None is an error, so missing values arrive as NaN from the caller.
        return np.asarray(rows, dtype=np.float64)[:, take]

    def mixed_block(rows: Rows) -> Matrix:
        return np.asarray([[row[i] for i in columns] for row in rows], dtype=np.float64)

    return block if all_numeric else mixed_block


def _numeric_step(step: Any, previous: Block) -> Block:
    kind = type(step).__name__
    if kind == "SimpleImputer":
        fill = np.asarray(step.statistics_, dtype=np.float64)
        _check_imputer(step, fill)

        def impute(rows: Rows) -> Matrix:
            values = previous(rows)
            return np.where(np.isnan(values), fill, values)

        return impute
    if kind == "StandardScaler":
        mean = step.mean_ if step.with_mean else None
        scale = step.scale_ if step.with_std else None

        def standardize(rows: Rows) -> Matrix:
            values = previous(rows)
            if mean is not None:
                values = values - mean
            if scale is not None:
                values = values / scale
            return values

        return standardize
    raise Unsupported(f"numeric step {kind}")


def _check_imputer(step: Any, fill: Matrix) -> None:
    missing = step.missing_values
    if step.add_indicator or not (isinstance(missing, float) and np.isnan(missing)):
        raise Unsupported("imputer with an indicator or a non-NaN missing marker")
    if np.isnan(fill).any():
        raise Unsupported("imputer with an all-missing column")


def _categorical_block(steps: list[Any], columns: list[int]) -> Block:
    *imputers, encoder = steps
    fills: list[Any] = [None] * len(columns)
    for imputer in imputers:
        if type(imputer).__name__ != "SimpleImputer" or imputer.add_indicator:
            raise Unsupported(f"categorical step {type(imputer).__name__}")
        fills = list(imputer.statistics_)
    if (
        encoder.handle_unknown != "ignore"
        or encoder.drop_idx_ is not None
        or getattr(encoder, "_infrequent_enabled", False)
    ):
        raise Unsupported("one-hot encoder with drop, infrequent levels or unknown=error")
    lookups = [{str(level): i for i, level in enumerate(levels)} for levels in encoder.categories_]
    offsets = np.cumsum([0, *(len(levels) for levels in encoder.categories_)])

    def encode(rows: Rows) -> Matrix:
        out = np.zeros((len(rows), int(offsets[-1])), dtype=np.float64)
        for slot, (column, lookup, fill) in enumerate(zip(columns, lookups, fills, strict=True)):
            for row_index, row in enumerate(rows):
                value = row[column]
                level = lookup.get(str(fill if _is_missing(value) else value))
                if level is not None:
                    out[row_index, offsets[slot] + level] = 1.0
        return out

    return encode


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


# --- estimators ------------------------------------------------------------------------

Predict = Callable[[Matrix], Matrix]


def _compile_estimator(estimator: Any) -> tuple[Predict, str]:
    kind = type(estimator).__name__
    if kind == "CalibratedClassifier":
        return _calibrated(estimator)
    positive = _positive_index(estimator)
    if kind in {"RandomForestClassifier", "ExtraTreesClassifier"}:
        return _forest(estimator, positive), f"{kind} ({_tree_count(estimator)} trees, treelite)"
    if kind == "DummyClassifier" and estimator.strategy == "prior":
        prior = float(estimator.class_prior_[positive])
        return (lambda X: np.full(X.shape[0], prior)), kind
    if kind not in _COMPILERS:
        raise Unsupported(f"estimator {kind}")
    compiler, how = _COMPILERS[kind]
    return compiler(estimator, positive), f"{kind} ({how})" if how else kind


def _calibrated(estimator: Any) -> tuple[Predict, str]:
    """The classifier compiled, then the calibrator's own numpy map (the same function
    the pipeline's predict_proba calls, so calibration adds no difference)."""
    predict, label = _compile_estimator(estimator.estimator)
    calibrate = estimator.calibrator.predict
    return (lambda X: calibrate(predict(X))), f"{label} + {estimator.calibrator!r}"


def _tree_count(estimator: Any) -> int:
    return len(getattr(estimator, "estimators_", [estimator]))


def _forest(estimator: Any, positive: int) -> Predict:
    """Small requests: all trees in one C++ call (treelite's GTIL, 0.06 ms for a row of
    the default forest) instead of one Python call per tree (0.4 ms). Large batches:
    scikit-learn's own tree traversal, which is three times faster per row than GTIL's
    interpreter once the per-call cost is spread (docs/benchmarks.md)."""
    # Imported here: only forests need it.
    import treelite  # noqa: PLC0415

    if estimator.n_outputs_ != 1:
        raise Unsupported("multi-output forest")
    model = treelite.sklearn.import_model(estimator)
    gtil_predict = _gtil_predictor()
    per_tree = _trees(estimator, positive)

    def predict(X: Matrix) -> Matrix:
        if X.shape[0] > GTIL_MAX_ROWS:
            return per_tree(X)
        # float32 first: scikit-learn's trees compare float32 values.
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        return np.asarray(gtil_predict(model, X32)[:, 0, positive])

    return predict


def _gtil_predictor() -> Callable[[Any, Matrix], Matrix]:
    """GTIL prediction on one thread (threads cost more than one row's work; uvicorn
    workers are the parallelism), with its configuration parsed once instead of per call
    (a third of the time for one row). Falls back to the public call if treelite's
    internals change."""
    import treelite.gtil  # noqa: PLC0415

    module = treelite.gtil.gtil
    if hasattr(module, "_predict_impl") and hasattr(module, "GTILConfig"):
        config = module.GTILConfig(nthread=1, predict_type="default")
        return lambda model, X: module._predict_impl(model, X, config=config)
    return lambda model, X: treelite.gtil.predict(model, X, nthread=1)


def _trees(estimator: Any, positive: int) -> Predict:
    """Sum of each tree's leaf probability, looked up from the leaf each row falls in."""
    if estimator.n_outputs_ != 1:
        raise Unsupported("multi-output trees")
    trees = [tree.tree_ for tree in getattr(estimator, "estimators_", [estimator])]
    n_classes = int(estimator.n_classes_)
    # Per node: the class shares predict_proba would normalise to, for the positive class.
    leaf_values = []
    for tree in trees:
        counts = tree.value[:, 0, :n_classes]
        normalizer = counts.sum(axis=1)
        normalizer[normalizer == 0.0] = 1.0
        leaf_values.append(counts[:, positive] / normalizer)

    def predict(X: Matrix) -> Matrix:
        # Trees compare float32 values, as scikit-learn's own predict does.
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        total = np.zeros(X32.shape[0])
        for tree, values in zip(trees, leaf_values, strict=True):
            total += values[tree.apply(X32)]
        return np.asarray(total / len(trees))

    return predict


def _logistic(estimator: Any, positive: int) -> Predict:
    if estimator.coef_.shape[0] != 1:
        raise Unsupported("multinomial logistic regression")
    coef = estimator.coef_.T
    intercept = estimator.intercept_
    sign = 1.0 if positive == 1 else -1.0

    def predict(X: Matrix) -> Matrix:
        return np.asarray(expit(sign * (X @ coef + intercept).ravel()))

    return predict


def _xgboost(estimator: Any, positive: int) -> Predict:
    if estimator.get_params().get("objective") not in (None, "binary:logistic"):
        raise Unsupported(f"XGBoost objective {estimator.objective}")
    booster = estimator.get_booster()
    best = getattr(estimator, "best_iteration", None)
    rounds = (0, best + 1) if best is not None else (0, 0)

    def predict(X: Matrix) -> Matrix:
        p = np.asarray(booster.inplace_predict(X, iteration_range=rounds, validate_features=False))
        return p if positive == 1 else 1.0 - p

    return predict


def _lightgbm(estimator: Any, positive: int) -> Predict:
    """The booster directly: the classifier's wrapper re-validates the frame on each call."""
    if estimator.n_classes_ != 2 or estimator.objective_ != "binary":
        raise Unsupported(f"LightGBM objective {estimator.objective_}")
    booster = estimator.booster_

    def predict(X: Matrix) -> Matrix:
        p = np.asarray(booster.predict(X, num_threads=1))
        return p if positive == 1 else 1.0 - p

    return predict


# The MLP's hidden activations, as scikit-learn defines them (its output unit is logistic).
_ACTIVATIONS: dict[str, Callable[[Matrix], Matrix]] = {
    "identity": lambda z: z,
    "logistic": expit,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
}


def _mlp(estimator: Any, positive: int) -> Predict:
    """The forward pass with the fitted weights: scikit-learn's own arithmetic, in order."""
    if estimator.n_outputs_ != 1 or estimator.out_activation_ != "logistic":
        raise Unsupported(f"MLP with output {estimator.out_activation_}")
    hidden = _ACTIVATIONS.get(estimator.activation)
    if hidden is None:
        raise Unsupported(f"MLP activation {estimator.activation}")
    layers = list(zip(estimator.coefs_, estimator.intercepts_, strict=True))

    def predict(X: Matrix) -> Matrix:
        activation = X
        for weights, bias in layers[:-1]:
            activation = hidden(activation @ weights + bias)
        weights, bias = layers[-1]
        p = expit(activation @ weights + bias).ravel()
        return np.asarray(p if positive == 1 else 1.0 - p)

    return predict


# Estimator class name -> (its compiler, how it is scored, for the scorer's detail).
_COMPILERS: dict[str, tuple[Callable[[Any, int], Predict], str]] = {
    "DecisionTreeClassifier": (_trees, ""),
    "LogisticRegression": (_logistic, ""),
    "XGBClassifier": (_xgboost, "booster inplace_predict"),
    "LGBMClassifier": (_lightgbm, "booster predict"),
    "MLPClassifier": (_mlp, "numpy forward pass"),
}

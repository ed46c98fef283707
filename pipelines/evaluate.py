"""Stage `evaluate`: refit the winner, pick its threshold, test it once, register it.

The threshold comes from the winner's out-of-fold predictions; the test period is used
here and only here, after every modelling choice has been made.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.pipeline import Pipeline

from fraud_detection import model_card, plots
from fraud_detection.calibration import fit_calibrator, with_calibration
from fraud_detection.evaluation import (
    ThresholdChoice,
    calibration_report,
    choose_threshold,
    holdout_report,
    importance_table,
)
from fraud_detection.io import tracking
from fraud_detection.io.files import (
    atomic_path,
    load_params,
    read_json,
    read_parquet,
    write_json,
    write_text,
)
from fraud_detection.io.provenance import files_fingerprint
from fraud_detection.modeling import Selection, refit_for_serving
from fraud_detection.params import DaskParams, EvaluateParams
from fraud_detection.registry import FINGERPRINT_KEY, model_fingerprint, scores_fingerprint
from fraud_detection.schema import FeatureSchema, check_frame
from fraud_detection.workspace import (
    CURVES_DIR,
    IMPORTANCE,
    METRICS,
    MODEL_CARD,
    MODEL_DIR,
    OUT_OF_FOLD,
    PARAMS,
    PLOTS_DIR,
    SCHEMA,
    SELECTION,
    SPLIT_SUMMARY,
    TEST_SET,
    TRAIN_SET,
)
from pipelines._common import run


@dataclass(frozen=True)
class Evaluation:
    model: Pipeline
    threshold: ThresholdChoice
    metrics: dict[str, float]
    figures: dict[str, Figure]
    importance: pd.DataFrame
    test_y: np.ndarray
    proba: np.ndarray  # calibrated: what the service answers
    raw_proba: np.ndarray  # the classifier's own scores, before calibration
    calibrator: str
    # Precision and recall per spending quartile (the model card's fairness figures).
    segments: pd.DataFrame | None


@dataclass(frozen=True)
class Refit:
    """The winner refitted on the whole training set and its raw test-period scores."""

    model: Pipeline
    raw_proba: np.ndarray
    example: pd.DataFrame  # a few training rows: the MLflow signature's input example


def refit_local(
    selection: Selection, schema: FeatureSchema, test: pd.DataFrame, log: logging.Logger
) -> Refit:
    train = read_parquet(TRAIN_SET, made_by="split")
    started = time.perf_counter()
    model = refit_for_serving(
        selection.unfitted_pipeline(schema), train[schema.names], train[schema.target]
    )
    log.info(
        "refit %s on %s rows in %.1f s",
        selection.label,
        f"{len(train):,}",
        time.perf_counter() - started,
    )
    raw_proba = model.predict_proba(test[schema.names])[:, 1]
    return Refit(model, raw_proba, train[schema.names].head(5))


def refit_on_dask(
    selection: Selection,
    schema: FeatureSchema,
    dask: DaskParams,
    *,
    test_rows: int,
    log: logging.Logger,
) -> Refit:
    """The refit across the Dask workers, the test period scored per partition."""
    # Imported here: the local engine does not load Dask.
    from fraud_detection.cluster.training import score_frame  # noqa: PLC0415
    from fraud_detection.io.dask_cluster import dask_client  # noqa: PLC0415
    from pipelines._dask import rows_on_dask, training_fitter  # noqa: PLC0415

    y = read_parquet(TRAIN_SET, made_by="split", columns=[schema.target])[schema.target]
    with dask_client(dask, log) as client:
        fitter = training_fitter(
            client,
            y.to_numpy(dtype=np.int64),
            schema,
            selection.recipe(),
            dask,
            positive_share=selection.positive_share,
            log=log,
        )
        started = time.perf_counter()
        model = fitter.fit(selection.candidate)
        log.info(
            "refit %s on %s rows across the workers in %.1f s",
            selection.label,
            f"{len(y):,}",
            time.perf_counter() - started,
        )
        test = rows_on_dask(client, TEST_SET, schema, dask, rows=test_rows, log=log)
        raw_proba = score_frame(test, model, schema.names)
        example = fitter.frame[schema.names].head(5)
    return Refit(model, raw_proba, example)


def evaluate(
    selection: Selection,
    schema: FeatureSchema,
    *,
    refit: Refit,
    test: pd.DataFrame,
    out_of_fold: pd.DataFrame,
    params: EvaluateParams,
    log: logging.Logger,
) -> Evaluation:
    raw_model, raw_proba = refit.model, refit.raw_proba
    # The map from scores to probabilities, learned on the winner's out-of-fold scores:
    # predictions on rows its fold models did not train on, as the test rows will be.
    method = selection.calibration_method
    calibrator = fit_calibrator(method, out_of_fold["proba"], out_of_fold["y"])
    model = with_calibration(raw_model, calibrator)
    log.info("calibration: %r on %s out-of-fold scores", calibrator, f"{len(out_of_fold):,}")
    if method != selection.calibration.method:
        log.warning(
            "train.calibration.method %s would not lower the winner's out-of-fold Brier "
            "score: its raw scores ship",
            selection.calibration.method,
        )

    oof_proba = calibrator.predict(out_of_fold["proba"])
    choice = choose_threshold(out_of_fold["y"], oof_proba, params.threshold)
    log.info(
        "threshold %.4f (%s on calibrated out-of-fold predictions, F1 %.3f)",
        choice.value,
        choice.rule,
        choice.f1,
    )

    # The shipped model's own predict_proba is this map of the same raw scores.
    proba = calibrator.predict(raw_proba)
    test_y = test[schema.target].to_numpy()
    metrics, matrix = holdout_report(test, schema, proba, choice.value, params)
    metrics |= calibration_report(test_y, raw_proba, selection.positive_share)
    started = time.perf_counter()
    importance = importance_table(model, test, schema, params, selection.seed)
    log.info("permutation importance in %.1f s", time.perf_counter() - started)
    label = selection.label
    figures = {
        "precision_recall.png": plots.precision_recall_figure(
            test_y, proba, choice.value, f"Test PR curve: {label}"
        ),
        "roc.png": plots.roc_figure(test_y, proba, f"Test ROC curve: {label}"),
        "confusion_matrix.png": plots.confusion_figure(matrix, choice.value, schema.class_names),
        "calibration.png": plots.calibration_figure(
            test_y,
            {"before calibration": raw_proba, f"after ({method})": proba},
            f"Test reliability: {label}",
        ),
        "feature_importance.png": plots.importance_figure(importance),
    }
    segments = model_card.spending_segments(test, schema, proba, choice.value)
    return Evaluation(
        model,
        choice,
        metrics,
        figures,
        importance,
        test_y,
        proba,
        raw_proba,
        repr(calibrator),
        segments,
    )


def write_reports(result: Evaluation) -> None:
    write_json(result.metrics, METRICS)
    for name, figure in result.figures.items():
        with atomic_path(PLOTS_DIR / name) as path:
            figure.savefig(path, dpi=110)
    curves = {
        "precision_recall.csv": plots.precision_recall_table(result.test_y, result.proba),
        "roc.csv": plots.roc_table(result.test_y, result.proba),
        "calibration.csv": plots.reliability_table(result.test_y, result.proba).round(6),
        "calibration_before.csv": plots.reliability_table(result.test_y, result.raw_proba).round(6),
    }
    for name, table in curves.items():
        write_text(table.to_csv(index=False), CURVES_DIR / name)
    write_text(result.importance.to_csv(index=False), IMPORTANCE)


def model_metadata(result: Evaluation, selection: Selection, identity: Identity) -> dict[str, Any]:
    """Travels inside the model folder: what the server needs besides the pipeline."""
    return {
        "threshold": result.threshold.value,
        "threshold_rule": result.threshold.rule,
        "candidate": selection.label,
        "cv_average_precision": selection.cv_average_precision,
        "calibration": result.calibrator,
        "test_metrics": {k: round(float(v), 6) for k, v in result.metrics.items()},
        # Who the model is, without a registry version (which only one store knows): the
        # service stamps it on each logged prediction, the drift reference names it.
        FINGERPRINT_KEY: identity.fingerprint,
        "registered_model_name": identity.name,
    }


@dataclass(frozen=True)
class Identity:
    name: str  # evaluate.registered_model_name
    fingerprint: str  # registry.model_fingerprint of the inputs and the test scores


def identity(result: Evaluation, selection: Selection, params: EvaluateParams) -> Identity:
    """The same data, params and code make the same fingerprint: a rerun finds its own
    registry version instead of registering a twin."""
    parts = {
        "selection": selection.fingerprint,
        "data": files_fingerprint(TRAIN_SET, TEST_SET, OUT_OF_FOLD),
        "evaluate": json.dumps(params.model_dump(mode="json"), sort_keys=True),
        "test_scores": scores_fingerprint(result.proba),
    }
    return Identity(params.registered_model_name, model_fingerprint(parts))


def card_facts(
    result: Evaluation,
    selection: Selection,
    schema: FeatureSchema,
    identity: Identity,
    promotion: tracking.Promotion | None,
) -> model_card.CardFacts:
    """The card's facts; without ``promotion`` (the pipeline's own copy, a DVC output)
    it names the model by fingerprint, with it (the copy logged to MLflow) by version."""
    return model_card.CardFacts(
        name=identity.name,
        version=promotion.version if promotion else None,
        alias=promotion.alias if promotion else None,
        fingerprint=identity.fingerprint,
        candidate=selection.label,
        cv_average_precision=selection.cv_average_precision,
        threshold=result.threshold.value,
        threshold_rule=result.threshold.rule,
        decision=selection.decision,
        calibration=result.calibrator,
        metrics=result.metrics,
        split=read_json(SPLIT_SUMMARY, made_by="split"),
        schema=schema,
        segments=result.segments,
    )


def record_in_mlflow(
    result: Evaluation,
    selection: Selection,
    schema: FeatureSchema,
    example: pd.DataFrame,
    params: EvaluateParams,
    *,
    identity: Identity,
    pipeline_run: tuple[str, str],
) -> tracking.Promotion:
    """A child run of the pipeline's parent run: metrics, plots, the model; then the
    registry. Run ids and versions stay in MLflow: no stage output records them."""
    experiment_id, parent_run_id = pipeline_run
    test_metrics = {f"test_{k}": float(v) for k, v in result.metrics.items()}
    run_id = tracking.start_run(
        experiment_id,
        f"evaluate {selection.candidate.family}",
        parent_run_id=parent_run_id,
        tags={FINGERPRINT_KEY: identity.fingerprint},
    )
    tracking.log_batch(
        run_id,
        params=tracking.flatten("evaluate", params.model_dump(mode="json"))
        | {"candidate": selection.label},
        metrics=test_metrics,
    )
    for name, figure in result.figures.items():
        tracking.log_figure(run_id, figure, f"plots/{name}")
    tracking.log_artifact(run_id, IMPORTANCE)
    metadata = model_metadata(result, selection, identity)
    promotion = tracking.register_and_promote(
        # Called only when the registry does not hold this model yet.
        lambda: tracking.log_model(run_id, result.model, schema, example, metadata),
        identity.name,
        fingerprint=identity.fingerprint,
        test_average_precision=result.metrics["average_precision"],
        data_fingerprint=files_fingerprint(TRAIN_SET, TEST_SET),
        test_brier=result.metrics["brier"],
    )
    card = model_card.render(card_facts(result, selection, schema, identity, promotion))
    tracking.log_text(run_id, card, MODEL_CARD.name)
    tags = {"registered_version": promotion.version, "alias": str(promotion.alias)}
    tracking.log_batch(run_id, tags=tags)
    tracking.log_batch(parent_run_id, metrics=test_metrics, tags=tags)
    tracking.end_run(run_id)
    return promotion


def main(log: logging.Logger) -> str:
    all_params = load_params(PARAMS)
    params = all_params.evaluate
    selection = Selection.model_validate(read_json(SELECTION, made_by="train"))
    schema = FeatureSchema.model_validate(read_json(SCHEMA, made_by="features"))
    test = read_parquet(TEST_SET, made_by="split")
    check_frame(test, schema, with_target=True)
    out_of_fold = read_parquet(OUT_OF_FOLD, made_by="train")
    # Before the work: a store without the train stage's run fails fast.
    pipeline_run = tracking.find_pipeline_run(selection.experiment_name, selection.fingerprint)

    if all_params.engine.kind == "dask":
        refit = refit_on_dask(
            selection, schema, all_params.engine.dask, test_rows=len(test), log=log
        )
    else:
        refit = refit_local(selection, schema, test, log)
    result = evaluate(
        selection,
        schema,
        refit=refit,
        test=test,
        out_of_fold=out_of_fold,
        params=params,
        log=log,
    )
    write_reports(result)
    example = refit.example
    named = identity(result, selection, params)
    with atomic_path(MODEL_DIR) as folder:
        tracking.save_model(
            result.model, folder, schema, example, model_metadata(result, selection, named)
        )
    write_text(model_card.render(card_facts(result, selection, schema, named, None)), MODEL_CARD)
    promotion = record_in_mlflow(
        result, selection, schema, example, params, identity=named, pipeline_run=pipeline_run
    )
    log.info("registry: %s", promotion.message)
    m = result.metrics
    return (
        f"{selection.label}: test AP {m['average_precision']:.3f}, ROC AUC {m['roc_auc']:.3f}, "
        f"F1 {m['f1']:.3f} at threshold {result.threshold.value:.3f}; "
        f"{promotion.name} v{promotion.version} is '{promotion.alias or 'without an alias'}' "
        f"(fingerprint {named.fingerprint})"
    )


if __name__ == "__main__":
    run("evaluate", main)

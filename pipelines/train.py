"""Stage `train`: cross-validate every model x imbalance strategy x grid point.

Writes the leaderboard, the winner's selection and its out-of-fold predictions, and logs
one MLflow parent run with a child run per model/strategy.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fraud_detection import plots
from fraud_detection.calibration import check_folds
from fraud_detection.errors import DataValidationError, SchemaMismatchError
from fraud_detection.io import tracking
from fraud_detection.io.files import (
    load_params,
    read_json,
    read_parquet,
    write_json,
    write_parquet,
    write_text,
)
from fraud_detection.io.provenance import files_fingerprint, git_commit, params_fingerprint
from fraud_detection.modeling import Candidate, Selection, build_pipeline, candidates
from fraud_detection.params import Params, TrainParams
from fraud_detection.schema import FeatureSchema, check_frame, target_problems
from fraud_detection.selection import Decision, choose
from fraud_detection.validation import (
    CandidateResult,
    Fold,
    FoldResult,
    OnFit,
    all_folds,
    all_grid_points,
    best_result,
    by_family,
    cross_validate,
    leaderboard,
    leaderboard_markdown,
    make_folds,
    scheme_for,
)
from fraud_detection.workspace import (
    CV_FOLDS,
    CV_RESULTS,
    CV_SUMMARY,
    LEADERBOARD_CSV,
    LEADERBOARD_MD,
    OUT_OF_FOLD,
    PARAMS,
    SCHEMA,
    SELECTION,
    TEST_SET,
    TRAIN_SET,
)
from pipelines._common import run


def load_training_set(schema: FeatureSchema) -> pd.DataFrame:
    train = read_parquet(TRAIN_SET, made_by="split")
    check_frame(train, schema, with_target=True)
    if schema.time_column is not None:
        # Time-ordered folds assume rows in time order.
        train = train.sort_values(schema.time_column, kind="stable").reset_index(drop=True)
    return train


def load_labels(schema: FeatureSchema) -> NDArray[np.int64]:
    """The training set's target alone, in the file's order (the Dask engine's rows)."""
    time = [schema.time_column] if schema.time_column else []
    labels = read_parquet(TRAIN_SET, made_by="split", columns=[schema.target, *time])
    problems = target_problems(labels[schema.target], schema)
    if problems:
        raise SchemaMismatchError("; ".join(problems))
    if time and not labels[time[0]].is_monotonic_increasing:
        # The local engine sorts; the Dask engine's row numbers are the file's order.
        raise DataValidationError(
            f"{TRAIN_SET} is not in time order ({time[0]}); rerun the split stage "
            "(`dvc repro split`), which writes it in time order"
        )
    return labels[schema.target].to_numpy(dtype=np.int64)


def cross_validate_on_dask(
    to_try: list[Candidate],
    y: NDArray[np.int64],
    folds: list[Fold],
    *,
    all_params: Params,
    schema: FeatureSchema,
    log: logging.Logger,
) -> list[CandidateResult]:
    """The candidates' folds fitted across the Dask cluster's workers."""
    # Imported here: the local engine does not load Dask.
    from fraud_detection.cluster import training  # noqa: PLC0415
    from fraud_detection.io.dask_cluster import dask_client  # noqa: PLC0415
    from pipelines._dask import training_fitter  # noqa: PLC0415

    params, dask = all_params.train, all_params.engine.dask
    with dask_client(dask, log) as client:
        fitter = training_fitter(
            client, y, schema, params, dask, positive_share=float(y.mean()), log=log
        )
        return training.cross_validate_on_dask(
            to_try, fitter, folds, threshold=params.cv_threshold, on_fit=report_fit(log)
        )


def report_fit(log: logging.Logger) -> OnFit:
    def on_fit(done: int, total: int, result: FoldResult, candidate: Candidate) -> None:
        log.info(
            "fit %*d/%d  %-40s fold %d  AP %.3f  (%.1f s)",
            len(str(total)),
            done,
            total,
            candidate.label[:40],
            result.fold,
            result.metrics["average_precision"],
            result.fit_seconds,
        )

    return on_fit


def log_family_runs(
    results: list[CandidateResult],
    *,
    experiment_id: str,
    parent_id: str,
    params: TrainParams,
    y: np.ndarray,
    decision: Decision,
) -> None:
    """One child run per model/strategy: its best grid point's folds, plus the whole grid."""
    for family, members in by_family(results).items():
        best = best_result(members)
        candidate = best.candidate
        spec = params.models[candidate.model]
        run_id = tracking.start_run(experiment_id, family, parent_run_id=parent_id)
        tracking.log_batch(
            run_id,
            params={
                "model": candidate.model,
                "kind": candidate.kind,
                "strategy": candidate.strategy,
                **tracking.flatten("fixed", spec.params),
                **tracking.flatten("best", candidate.settings),
                **tracking.flatten("grid", spec.grid),
            },
            metrics=best.summary() | decision.calibrated[family],
        )
        for fold in best.folds:
            tracking.log_batch(
                run_id, metrics={f"fold_{k}": v for k, v in fold.metrics.items()}, step=fold.fold
            )
        tracking.log_table(run_id, all_grid_points(members), "grid.csv")
        oof = best.out_of_fold(len(y))
        figure = plots.precision_recall_figure(
            y[oof["row"]], oof["proba"], params.cv_threshold, f"{family}: out-of-fold PR curve"
        )
        tracking.log_figure(run_id, figure, "out_of_fold_pr_curve.png")
        tracking.end_run(run_id)


def start_parent_run(all_params: Params, experiment_id: str) -> str:
    """The pipeline run's MLflow parent, tagged with where the run came from."""
    commit, dirty = git_commit()
    return tracking.start_run(
        experiment_id,
        "pipeline",
        tags={
            "git_commit": commit,
            "git_dirty": str(dirty),
            "params_fingerprint": params_fingerprint(all_params),
            "data_fingerprint": files_fingerprint(TRAIN_SET, TEST_SET),
        },
    )


def check_calibration_folds(y: np.ndarray, folds: list[Fold], params: TrainParams) -> None:
    """Fail before any fit when a validation fold has too few positives to calibrate."""
    if params.calibration.method == "none":
        return
    rows = np.concatenate([validation for _, validation in folds])
    numbers = np.concatenate([np.full(len(v), i) for i, (_, v) in enumerate(folds)])
    check_folds(y[rows], numbers, params.calibration.min_positives)


def write_outputs(
    results: list[CandidateResult],
    decision: Decision,
    y: np.ndarray,
    selection: Selection,
    *,
    scheme: str,
    left_out: dict[str, str],
) -> str:
    """Every output file; returns the leaderboard as Markdown."""
    best = decision.winner
    oof = best.out_of_fold(len(y))
    oof["y"] = y[oof["row"]]
    board = leaderboard(
        results,
        calibrated=decision.calibrated,
        methods=decision.methods,
        tied=decision.tied,
        winner=best.candidate.family,
    )
    markdown = leaderboard_markdown(board, decision.reason, left_out)
    write_parquet(oof, OUT_OF_FOLD)
    write_text(board.to_csv(index=False), LEADERBOARD_CSV)
    write_text(markdown, LEADERBOARD_MD)
    write_text(all_grid_points(results).to_csv(index=False), CV_RESULTS)
    write_text(all_folds(results).to_csv(index=False), CV_FOLDS)
    summary = {k: round(v, 6) for k, v in best.summary().items()}
    n_folds = len(best.folds)
    calibrated = {k: round(v, 6) for k, v in decision.calibrated[best.candidate.family].items()}
    write_json(
        {"winner": best.candidate.label, "folds": n_folds, "scheme": scheme}
        | {"decision": decision.reason, "tied": decision.tied, "left_out": sorted(left_out)}
        | summary
        | calibrated,
        CV_SUMMARY,
    )
    write_json(selection, SELECTION)
    return markdown


def main(log: logging.Logger) -> str:
    all_params = load_params(PARAMS)
    params = all_params.train
    schema = FeatureSchema.model_validate(read_json(SCHEMA, made_by="features"))
    on_dask = all_params.engine.kind == "dask"
    to_try = candidates(params)
    left_out: dict[str, str] = {}
    if on_dask:
        from fraud_detection.cluster.training import split_candidates  # noqa: PLC0415

        to_try, left_out = split_candidates(to_try)
        for family, reason in left_out.items():
            log.info("left out on Dask: %s: %s", family, reason)
    train = None if on_dask else load_training_set(schema)
    y = load_labels(schema) if train is None else train[schema.target].to_numpy(dtype=np.int64)
    positive_share = float(y.mean())
    uses_smote = any(c.strategy == "smote" for c in to_try)
    has_time = schema.time_column is not None
    folds = make_folds(
        y,
        params.cv,
        has_time=has_time,
        seed=params.seed,
        min_train_positives=params.smote.k_neighbors + 1 if uses_smote else 1,
    )
    scheme = scheme_for(params.cv, has_time)
    check_calibration_folds(y, folds, params)

    experiment_id = tracking.connect(params.experiment_name)
    parent_id = start_parent_run(all_params, experiment_id)
    log.info("MLflow parent run %s in experiment '%s'", parent_id, params.experiment_name)
    log.info(
        "%d candidates x %d %s folds = %d fits on %s rows (%.2f%% %s)",
        len(to_try),
        len(folds),
        scheme,
        len(to_try) * len(folds),
        f"{len(y):,}",
        100 * positive_share,
        schema.class_names.positive,
    )
    try:
        if train is None:
            results = cross_validate_on_dask(
                to_try, y, folds, all_params=all_params, schema=schema, log=log
            )
        else:
            results = cross_validate(
                to_try,
                lambda c: build_pipeline(c, params, schema, positive_share=positive_share),
                train[schema.names],
                y,
                folds,
                threshold=params.cv_threshold,
                n_jobs=params.n_jobs,
                on_fit=report_fit(log),
            )
        decision = choose(results, y, params.selection, params.calibration)
        best = decision.winner
        log_family_runs(
            results,
            experiment_id=experiment_id,
            parent_id=parent_id,
            params=params,
            y=y,
            decision=decision,
        )
        log.info("selection: %s", decision.reason)
        selection = Selection.of(
            best.candidate,
            params,
            positive_share=positive_share,
            cv_average_precision=best.mean_average_precision,
            decision=decision.reason,
            tied=decision.tied,
            calibration_method=decision.methods[best.candidate.family],  # type: ignore[arg-type]
        )
        markdown = write_outputs(results, decision, y, selection, scheme=scheme, left_out=left_out)
        summary = best.summary() | decision.calibrated[best.candidate.family]
        tracking.log_batch(
            parent_id,
            params=tracking.flatten("train", params.model_dump(mode="json")),
            metrics={f"cv_{k}": v for k, v in summary.items()},
            tags={
                "winner": best.candidate.label,
                "cv_scheme": scheme,
                "engine": all_params.engine.kind,
                "decision": decision.reason,
                tracking.SELECTION_TAG: selection.fingerprint,
            },
        )
        for path in (LEADERBOARD_CSV, LEADERBOARD_MD, CV_RESULTS):
            tracking.log_artifact(parent_id, path, "leaderboard")
    except BaseException:
        tracking.end_run(parent_id, "FAILED")
        raise
    tracking.end_run(parent_id)
    log.info("leaderboard:\n%s", markdown.split("\n\n", 2)[-1])
    ap = best.mean_average_precision
    return f"winner {best.candidate.label}: CV AP {ap:.3f} over {len(folds)} folds"


if __name__ == "__main__":
    run("train", main)

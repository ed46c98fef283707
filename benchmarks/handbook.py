"""The handbook table over several simulator seeds: how far our figures move from draw to draw.

    python benchmarks/handbook.py             # seeds 1-10 at full size (about 5 minutes)
    python benchmarks/handbook.py --seeds 3   # a quicker look

DATASET.md publishes one run of each baseline model on its protocol: train on the 7 days
from 2018-07-25, skip 7, test on the next 7 with known-compromised cards removed. Our
simulator follows the same generating process, but a table from one seed cannot say
whether a gap to the published figure is a difference or noise: one test week holds
about 400 frauds. This script draws the world again with each seed (183 days, 5,000
customers, 10,000 terminals), builds the features and the split exactly as the pipeline
does (in process, the same `src/` functions), fits each handbook model and the default
pipeline champion's recipe on the training week, and scores the test week. It reports
each figure's mean, standard deviation and range over the seeds, and whether the
published figure falls inside that range.

The champion's recipe is read from `models/selection.json` (the default pipeline's CV
choice; run `make train` first). It is refitted per seed, not re-chosen: the per-seed CV
would take ten times as long and answers another question.

Results: benchmarks/results/handbook.json and handbook.md (quoted in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.pipeline import (  # noqa: E402
    FULL_SIZE,
    HANDBOOK,
    RESULTS,
    handbook_models,
    machine,
    row,
    save_results,
    score_test_period,
)
from fraud_detection.data.simulator import simulate  # noqa: E402
from fraud_detection.features import feature_schema, transaction_features  # noqa: E402
from fraud_detection.modeling import Selection  # noqa: E402
from fraud_detection.params import Params, parse_params  # noqa: E402
from fraud_detection.schema import FeatureSchema, with_example  # noqa: E402
from fraud_detection.split import split_dataset  # noqa: E402
from tests.pipelines.project import merged, repo_params  # noqa: E402

METRICS = {"roc_auc": "AUC ROC", "average_precision": "AP", "cp100": "CP@100"}
CHAMPION = "Pipeline champion's recipe"


def seeded_params(seed: int) -> Params:
    overrides = merged(FULL_SIZE, {"data": {"simulator": {"seed": seed}}})
    return parse_params(merged(repo_params(), overrides))


def train_and_test(params: Params) -> tuple[pd.DataFrame, pd.DataFrame, FeatureSchema]:
    """The pipeline's data, features and split stages, in process."""
    features = transaction_features(simulate(params.data.simulator), params.features)
    schema = with_example(feature_schema(params.features), features)
    split = split_dataset(features, schema, params.split)
    return split.train, split.test, schema


def score_seed(seed: int, selection: Selection) -> dict[str, dict[str, float]]:
    params = seeded_params(seed)
    train, test, schema = train_and_test(params)
    X, y = train[schema.names], train[schema.target]
    models = handbook_models(seed) | {CHAMPION: selection.unfitted_pipeline(schema)}
    table: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        model.fit(X, y)
        proba = model.predict_proba(test[schema.names])[:, 1]
        table[name] = score_test_period(test, schema, proba)
    random_scores = np.random.default_rng(seed).uniform(size=len(test))
    table["Random scores"] = score_test_period(test, schema, random_scores)
    table["_test_frauds"] = {"count": float(test[schema.target].sum())}
    return table


def spread(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {
        "mean": float(array.mean()),
        "sd": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "min": float(array.min()),
        "max": float(array.max()),
    }


def summarize(per_seed: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Per model and metric: mean, sd, range over the seeds, and where the published
    figure falls. The published table is one draw of the process, so the fair test is
    whether it is a plausible draw of ours: inside mean ± 2 sd (about 95% of draws if
    the figures are roughly normal). The observed range is reported beside it."""
    names = [name for name in next(iter(per_seed.values())) if not name.startswith("_")]
    summary: dict[str, Any] = {}
    for name in names:
        summary[name] = {}
        for metric in METRICS:
            stats: dict[str, Any] = spread([scores[name][metric] for scores in per_seed.values()])
            published = HANDBOOK.get(name)
            if published is not None:
                value = published[list(METRICS).index(metric)]
                stats["handbook"] = value
                stats["handbook_in_range"] = stats["min"] <= value <= stats["max"]
                stats["handbook_within_2sd"] = abs(value - stats["mean"]) <= 2 * stats["sd"]
            summary[name][metric] = stats
    frauds = [scores["_test_frauds"]["count"] for scores in per_seed.values()]
    summary["_test_frauds"] = spread(frauds)
    return summary


def paired(per_seed: dict[str, dict[str, dict[str, float]]], a: str, b: str) -> dict[str, float]:
    """AP of ``a`` minus AP of ``b`` on the same seeds: same data, so the noise of the
    draw cancels and a small real difference can show."""
    diffs = [s[a]["average_precision"] - s[b]["average_precision"] for s in per_seed.values()]
    return spread(diffs) | {"a_wins": float(sum(d > 0 for d in diffs)), "seeds": len(diffs)}


def cell(stats: dict[str, Any]) -> str:
    return f"{stats['mean']:.3f} ± {stats['sd']:.3f} ({stats['min']:.3f} to {stats['max']:.3f})"


def published(stats: dict[str, Any]) -> str:
    if "handbook" not in stats:
        return ""
    inside = "within 2 sd" if stats["handbook_within_2sd"] else "**beyond 2 sd**"
    if stats["handbook_in_range"]:
        ranged = "in our range"
    else:
        ranged = "below our range" if stats["handbook"] < stats["min"] else "above our range"
    return f"{stats['handbook']:.3f} ({inside}; {ranged})"


def markdown(results: dict[str, Any]) -> str:
    per_seed = results["per_seed"]
    summary = summarize(per_seed)
    seeds = results["seeds"]
    frauds = summary["_test_frauds"]
    lines = [
        f"# The handbook table over {len(seeds)} seeds ({results['when']}, {results['machine']})",
        "",
        f"Seeds {seeds[0]} to {seeds[-1]}, full size, the handbook's protocol. Each cell: mean "
        "± standard deviation (lowest to highest) over the seeds. The test week holds "
        f"{frauds['min']:.0f} to {frauds['max']:.0f} frauds. Champion's recipe: "
        f"`{results['champion']}` (chosen by the default pipeline's CV, refitted per seed). "
        f"{results['seconds']:.0f} s in all.",
        "",
        row("model", *(f"ours: {label}" for label in METRICS.values()), "handbook AP"),
        row("---", "---:", "---:", "---:", "---"),
    ]
    for name, metrics in summary.items():
        if name.startswith("_"):
            continue
        lines.append(
            row(name, *(cell(metrics[m]) for m in METRICS), published(metrics["average_precision"]))
        )
    checked = [
        (f"{name} {METRICS[metric]}", stats)
        for name, metrics in summary.items()
        if not name.startswith("_")
        for metric, stats in metrics.items()
        if "handbook" in stats
    ]
    beyond = [label for label, stats in checked if not stats["handbook_within_2sd"]]
    outside = [label for label, stats in checked if not stats["handbook_in_range"]]
    versus = paired(per_seed, CHAMPION, "Random forest")
    lines += [
        "",
        f"Published figures within mean ± 2 sd of ours: {len(checked) - len(beyond)} of "
        f"{len(checked)}" + (f" (beyond: {', '.join(beyond)})" if beyond else "") + ".",
        f"Inside our observed range: {len(checked) - len(outside)} of {len(checked)}"
        + (f" (outside: {', '.join(outside)})" if outside else "")
        + ".",
        "",
        f"Champion's recipe minus random forest (100 trees, defaults), AP paired by seed: "
        f"{versus['mean']:+.3f} ± {versus['sd']:.3f} ({versus['min']:+.3f} to "
        f"{versus['max']:+.3f}); the recipe wins on {versus['a_wins']:.0f} of "
        f"{versus['seeds']:.0f} seeds.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=10, help="how many seeds, from 1 (10)")
    parser.add_argument(
        "--render", action="store_true", help="rewrite handbook.md from handbook.json, no runs"
    )
    args = parser.parse_args()
    if args.render:
        write(json.loads((RESULTS / "handbook.json").read_text()))
        return
    if args.seeds < 2:
        parser.error("--seeds needs at least 2 to measure a spread")
    selection_file = REPO / "models" / "selection.json"
    if not selection_file.is_file():
        sys.exit(f"handbook: {selection_file} not found; run `make train` first")
    selection = Selection.model_validate_json(selection_file.read_text())
    seeds = list(range(1, args.seeds + 1))
    started = time.perf_counter()
    per_seed: dict[str, dict[str, dict[str, float]]] = {}
    for seed in seeds:
        began = time.perf_counter()
        per_seed[str(seed)] = score_seed(seed, selection)
        ap = per_seed[str(seed)][CHAMPION]["average_precision"]
        print(f"seed {seed}: champion AP {ap:.3f} ({time.perf_counter() - began:.0f} s)")
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "seeds": seeds,
        "champion": selection.candidate.label,
        "seconds": time.perf_counter() - started,
        "per_seed": per_seed,
    }
    write(results)


def write(results: dict[str, Any]) -> None:
    results["summary"] = summarize(results["per_seed"])
    save_results("handbook", results, markdown(results))


if __name__ == "__main__":
    main()

"""Export a registry model to a plain folder the service (and the Docker image) can load.

    python -m pipelines.export_model [--uri models:/fraud-detector@champion] [--out build/model]

The folder is written beside the target and renamed into place, so a failed export
never leaves a half-written model where the image build would pick it up.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from fraud_detection.inference import compile_scorer
from fraud_detection.io import tracking
from fraud_detection.io.files import load_params
from fraud_detection.io.model_package import load_model_package
from fraud_detection.registry import champion_uri
from fraud_detection.workspace import EXPORTED_MODEL, PARAMS
from pipelines._common import run


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="registry URI (default: the params' model @champion)")
    parser.add_argument("--out", type=Path, default=EXPORTED_MODEL, help="folder to write")
    return parser.parse_args()


def main(log: logging.Logger) -> str:
    arguments = _arguments()
    uri = arguments.uri or _champion_uri()
    out: Path = arguments.out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        info = tracking.fetch_registered_model(uri, staging, tracking.tracking_uri("."))
        # Load it as the service will: a model that would not serve is not exported.
        package = load_model_package(staging)
        scorer = compile_scorer(package.pipeline, package.schema, package.example)
        log.info(
            "%s v%s loads; scoring: %s (%s)", info.name, info.version, scorer.method, scorer.detail
        )
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return f"{uri} (v{info.version}, run {info.run_id}) -> {out}"


def _champion_uri() -> str:
    return champion_uri(load_params(PARAMS).evaluate.registered_model_name)


if __name__ == "__main__":
    run("export", main)

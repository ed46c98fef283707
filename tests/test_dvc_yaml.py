"""dvc.yaml cannot drift from the code: each stage's code deps are the files its command
runs (scripts/dvc_deps.py derives them), and its outputs are the paths
fraud_detection.workspace defines. tests/pipelines/test_pipeline_end_to_end.py checks
the deps from the other side, with DVC itself."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from fraud_detection import workspace
from scripts import dvc_deps

REPO = Path(__file__).resolve().parents[1]
PIPELINE: dict[str, Any] = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
STAGES: dict[str, dict[str, Any]] = PIPELINE["stages"]


def _relative(paths: frozenset[Path]) -> set[str]:
    return {path.relative_to(REPO).as_posix() for path in paths}


def test_every_stage_lists_exactly_the_code_it_runs() -> None:
    assert dvc_deps.problems(PIPELINE) == [], "run `make dvc-deps`"


def test_the_closure_follows_lazy_imports_and_what_the_code_runs() -> None:
    evaluate = _relative(dvc_deps.closure("pipelines.evaluate"))
    # refit_for_serving, the model folder's reader, and the packages on the way.
    assert {
        "src/fraud_detection/modeling.py",
        "src/fraud_detection/io/model_package.py",
        "src/fraud_detection/__init__.py",
        "pipelines/__init__.py",
    } <= evaluate
    assert "src/fraud_detection/walkthrough.py" not in evaluate
    baseline = _relative(dvc_deps.closure("monitoring.baseline"))
    # It starts `python -m serving`, which has uvicorn import "serving.app:create_app".
    assert {"serving/__main__.py", "serving/app.py", "serving/routers/predict.py"} <= baseline


def test_missing_and_needless_deps_are_named() -> None:
    evaluate = dict(STAGES["evaluate"])
    evaluate["deps"] = [
        dep for dep in evaluate["deps"] if dep != "src/fraud_detection/modeling.py"
    ] + ["src/fraud_detection/walkthrough.py"]
    assert dvc_deps.problems({"stages": {"evaluate": evaluate}}) == [
        "stage 'evaluate' runs code its deps miss: src/fraud_detection/modeling.py",
        "stage 'evaluate' lists deps it does not run: src/fraud_detection/walkthrough.py",
    ]


def test_write_derives_the_deps_and_keeps_the_rest(tmp_path: Path) -> None:
    project = tmp_path / "project"
    for folder in dvc_deps.CODE_ROOTS:
        shutil.copytree(REPO / folder, project / folder)
    shutil.copy2(REPO / "dvc.yaml", project)
    text = (project / "dvc.yaml").read_text()
    broken = text.replace("      - src/fraud_detection/modeling.py\n", "", 1)
    (project / "dvc.yaml").write_text(broken)
    assert dvc_deps.main(["--dvc-yaml", str(project / "dvc.yaml")]) == 1
    assert dvc_deps.main(["--write", "--dvc-yaml", str(project / "dvc.yaml")]) == 0
    assert (project / "dvc.yaml").read_text() == text  # comments and layout kept


# ----------------------------------------------------------------------- outputs


def _outputs(stage: dict[str, Any]) -> set[str]:
    found = set()
    for key in ("outs", "metrics", "plots"):
        for entry in stage.get(key, []):
            found |= set(entry) if isinstance(entry, dict) else {entry}
    return found


# Paths of the workspace that no stage writes: the params, and what the service, the
# monitor and `make export-model` write outside the pipeline.
NOT_STAGE_OUTPUTS = {"PARAMS", "PREDICTION_LOG", "LABELS", "MONITOR_REPORTS", "EXPORTED_MODEL"}


def test_the_outputs_are_the_workspace_paths() -> None:
    defined = {
        value.as_posix()
        for name, value in vars(workspace).items()
        if re.fullmatch(r"[A-Z_]+", name)
        and isinstance(value, Path)
        and name not in NOT_STAGE_OUTPUTS
    }
    outputs = {out for stage in STAGES.values() for out in _outputs(stage)}
    assert sorted(outputs - defined) == [], "outputs in dvc.yaml that the code does not define"
    assert sorted(defined - outputs) == [], "workspace paths that dvc.yaml does not list"

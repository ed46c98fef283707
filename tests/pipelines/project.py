"""A throw-away copy of the project (git + DVC + MLflow store): used by the end-to-end
tests and the pipeline benchmark."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MAKE_VARIABLES = {
    "MAKELEVEL",
    "MAKEFLAGS",
    "MFLAGS",
    "MAKEOVERRIDES",
    "MAKE_TERMOUT",
    "MAKE_TERMERR",
}
VENV_BIN = Path(sys.executable).parent

# Small enough for seconds per stage, big enough for every fold to hold frauds.
TINY_OVERRIDES: dict[str, Any] = {
    "data": {"simulator": {"n_customers": 600, "n_terminals": 1200}},
    "train": {
        "experiment_name": "tiny",
        "cv": {"n_splits": 3},
        "smote": {"sampling_strategy": 0.2, "k_neighbors": 3},
        "models": {
            "dummy": {"kind": "dummy", "strategies": ["none"]},
            "logreg": {
                "kind": "logistic_regression",
                "grid": {"C": [0.1, 1.0]},
                "strategies": ["none", "class_weight"],
            },
            "tree": {
                "kind": "decision_tree",
                "params": {"max_depth": 4},
                "strategies": ["smote"],
            },
            "forest": {
                "kind": "random_forest",
                "params": {"n_estimators": 20, "max_depth": 6},
                "strategies": ["undersample"],
            },
            "boost": {
                "kind": "xgboost",
                "params": {"n_estimators": 30, "max_depth": 3},
                "strategies": ["class_weight"],
            },
            "gbm": {
                "kind": "lightgbm",
                "params": {"n_estimators": 30, "num_leaves": 7},
                "strategies": ["smote"],
            },
            "net": {
                "kind": "mlp",
                "params": {"hidden_layer_sizes": [8], "max_iter": 300},
                "strategies": ["undersample"],
            },
        },
    },
    "evaluate": {"registered_model_name": "tiny-detector", "permutation_repeats": 2},
}


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied recursively (dicts merge, other values replace)."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict) and key != "models":
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def repo_params() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())
    return loaded


class Project:
    """A copy of the pipeline in ``root``: run commands there as a user would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Commands run as from a user's shell: no MLflow settings of the caller, and none of
        # the variables an outer `make test` exports (make would act as a sub-make).
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MLFLOW_") and k not in MAKE_VARIABLES
        }
        self.env |= {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "GIT_AUTHOR_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.com",
        }
        # Every command's output, in order: the secrets test greps what the commands printed.
        self.printed: list[tuple[str, str]] = []

    def run(
        self,
        *command: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: int = 600,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            command,
            cwd=self.root,
            env=self.env | (env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.printed.append((" ".join(command), result.stdout + result.stderr))
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
            )
        return result

    def write_params(self, params: dict[str, Any]) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"


def make_project(root: Path, params: dict[str, Any]) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(REPO / name, root / name)
    for folder in ("pipelines", "src", "serving", "monitoring"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data" / "external").mkdir(parents=True)
    shutil.copy2(REPO / "data/external/README.md", root / "data/external/README.md")
    project = Project(root)
    project.write_params(params)
    project.run("git", "init", "-q", "-b", "main")
    project.run("dvc", "init", "-q")
    # The project's own DVC settings, default remote included.
    shutil.copy2(REPO / ".dvc/config", root / ".dvc/config")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "tiny project")
    return project

"""dvc.yaml's code deps, derived from the imports: `make dvc-deps` writes them.

    python scripts/dvc_deps.py            # check: exit 1 naming each stage whose deps differ
    python scripts/dvc_deps.py --write    # rewrite the code deps of every stage in dvc.yaml

A stage's code is what its `python -m <module>` loads: the import closure of the module
within the project (modulefinder reads every import statement, those inside functions
too), the packages `-m` imports first, and the closure of each project module the stage's
code names as something to run: `[sys.executable, "-m", "serving"]` (a process it
starts) or `"serving.app:create_app"` (an app uvicorn imports by name). DVC reruns a
stage when a dep changes, so a file missing from the deps is a change `dvc repro`
ignores (the shipped model no longer matches its code), and a file listed but not run
makes the stage rerun for nothing. A folder is listed instead of its files when the
stage runs every Python file in it.

Deps that are not code (data files, model folders, data/external) are kept as written.
--write edits dvc.yaml in place with ruamel's round trip: comments and order survive.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import re
import shlex
import sys
from collections.abc import Iterable
from functools import cache
from modulefinder import ModuleFinder
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
CODE_ROOTS = ("src", "pipelines", "serving", "monitoring", "stack")
APP_SPEC = re.compile(r"^(?P<module>[a-z_][\w.]*):[A-Za-z_]\w*$")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file `python -m module` runs, if the module is the project's."""
    for base in (root, root / "src"):
        folder = base.joinpath(*module.split("."))
        for candidate in (folder / "__main__.py", folder.with_suffix(".py")):
            if candidate.is_file():
                return candidate.resolve()
    return None


def _named_modules(path: Path) -> set[str]:
    """Modules a file names as something to run: "-m", "x.y" or "x.y:attribute"."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.List | ast.Tuple):
            values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            found |= {
                module
                for flag, module in itertools.pairwise(values)
                if flag == "-m" and isinstance(module, str)
            }
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and (match := APP_SPEC.match(node.value))
        ):
            found.add(match["module"])
    return found


@cache
def closure(module: str, root: Path = ROOT) -> frozenset[Path]:
    """Every project file that running ``module`` loads, and those of what it runs."""
    entry = module_file(module, root)
    if entry is None:
        raise ValueError(f"{module} is not a module of the project in {root}")
    finder = ModuleFinder(path=[str(root / "src"), str(root)])
    finder.run_script(str(entry))
    # modulefinder's Module objects carry the file they were read from as __file__.
    loaded = [getattr(found, "__file__", None) for found in finder.modules.values()]
    files = {
        Path(name).resolve()
        for name in loaded
        if name and Path(name).resolve().is_relative_to(root)
    }
    # `python -m a.b` imports the packages a and a.b before it runs the module.
    parts = module.split(".")
    for base in (root, root / "src"):
        for depth in range(1, len(parts) + 1):
            init = base.joinpath(*parts[:depth], "__init__.py")
            if init.is_file():
                files.add(init.resolve())
    for path in sorted(files):
        for named in sorted(_named_modules(path)):
            if named != module and module_file(named, root) is not None:
                files |= closure(named, root)
    return frozenset(files)


def entry_module(stage: dict[str, Any]) -> str:
    words = shlex.split(stage["cmd"])
    if words[:2] != ["python", "-m"] or len(words) < 3:
        raise ValueError(f"`{stage['cmd']}`: a stage's command must be `python -m <module>`")
    return words[2]


def compressed(files: Iterable[Path], root: Path = ROOT) -> list[str]:
    """The files as deps: a folder whose Python files are all among them stands for them."""
    wanted = set(files)
    deps: list[Path] = []
    for path in sorted(wanted):
        folder = path.parent
        # The highest folder (a code root at most; src/ is never one) whose every .py
        # file is wanted.
        best = None
        while folder not in (root, root / "src"):
            if set(folder.rglob("*.py")) <= wanted:
                best = folder
            folder = folder.parent
        deps.append(best or path)
    unique = sorted({dep.relative_to(root).as_posix() for dep in deps})
    return [dep for dep in unique if not any(dep.startswith(f"{o}/") for o in unique)]


def is_code(dep: str, root: Path = ROOT) -> bool:
    path = root / dep
    inside = dep.split("/", 1)[0] in CODE_ROOTS
    return inside and (path.suffix == ".py" or (path.is_dir() and any(path.rglob("*.py"))))


def derived_deps(stage: dict[str, Any], root: Path = ROOT) -> list[str]:
    """The stage's deps with its code deps derived (the others kept, after them)."""
    code = compressed(closure(entry_module(stage), root), root)
    others = [dep for dep in stage.get("deps", []) if not is_code(str(dep), root)]
    return code + others


def problems(pipeline: dict[str, Any], root: Path = ROOT) -> list[str]:
    found = []
    for name, stage in pipeline["stages"].items():
        written = [str(dep) for dep in stage.get("deps", [])]
        derived = derived_deps(stage, root)
        missing = [dep for dep in derived if dep not in written]
        extra = [dep for dep in written if dep not in derived]
        if missing:
            found.append(f"stage '{name}' runs code its deps miss: {', '.join(missing)}")
        if extra:
            found.append(f"stage '{name}' lists deps it does not run: {', '.join(extra)}")
    return found


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml")
    cli.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml")
    args = cli.parse_args(argv)
    root = args.dvc_yaml.resolve().parent
    yaml = YAML()  # round trip: comments, order and layout are kept
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # long lines (desc) stay as written
    pipeline = yaml.load(args.dvc_yaml)
    if args.write:
        for stage in pipeline["stages"].values():
            stage["deps"] = derived_deps(stage, root)
        yaml.dump(pipeline, args.dvc_yaml)
        print(f"{args.dvc_yaml}: code deps derived from the imports")
        return 0
    found = problems(pipeline, root)
    for problem in found:
        print(problem)
    if found:
        print("fix: make dvc-deps (python scripts/dvc_deps.py --write)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""Two clones of a tiny project that share one stack: what the teammate test runs and
the teammate benchmark times (benchmarks/stack.py)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from monitoring.baseline import free_port, wait_ready
from tests.pipelines.project import REPO, TINY_OVERRIDES, Project, make_project, merged, repo_params
from tests.stack.helpers import run_stack

# What `make` needs in a clone beside the pipeline's own files.
MAKE_FILES = ("Makefile", "pyproject.toml", "uv.lock", "README.md")
LINKED = (".venv", ".tools")  # the repository's environments, shared (no second install)
READY_SECONDS = 120


def stack(command: str, settings: dict[str, str], *args: str) -> str:
    """``python -m stack <command> <args>`` with ``settings``; its output (it must succeed)."""
    result = run_stack(settings, command, *args, timeout=300)
    assert result.returncode == 0, f"stack {command}: {result.stdout}\n{result.stderr}"
    return result.stdout


def client_env(settings: dict[str, str]) -> dict[str, str]:
    """What `eval "$(python -m stack env)"` exports."""
    exports: dict[str, str] = {}
    for line in stack("env", settings).splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        exports[name] = shlex.split(value)[0] if value else ""
    return exports


def _share_environments(project: Project) -> None:
    for name in LINKED:
        (project.root / name).symlink_to(REPO / name)
    # make re-syncs .venv when the lock is newer than .venv/.installed, and a sync from a
    # clone would install the clone's package into the shared environment: a git clone
    # dates its files now, so date the lock files back.
    for name in ("uv.lock", "pyproject.toml"):
        if (project.root / name).exists():
            os.utime(project.root / name, (0, 0))
    # .gitignore's `/.venv/` matches folders, not links: keep the links out of commits.
    exclude = project.root / ".git/info/exclude"
    exclude.write_text(exclude.read_text() + "".join(f"/{name}\n" for name in LINKED))


def first_clone(root: Path, env: dict[str, str]) -> Project:
    """Teammate A: the tiny project with the Makefile, committed, pointed at the stack."""
    project = make_project(root, merged(repo_params(), TINY_OVERRIDES))
    for name in MAKE_FILES:
        shutil.copy2(REPO / name, root / name)  # copy2: older than .venv/.installed
    (root / "scripts").mkdir(exist_ok=True)
    shutil.copy2(REPO / "scripts/preflight.py", root / "scripts/preflight.py")
    _share_environments(project)
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "make files")
    project.env |= env
    return project


def second_clone(first: Project, root: Path, env: dict[str, str]) -> Project:
    """Teammate B: `git clone` of A's repository, nothing else."""
    subprocess.run(["git", "clone", "-q", str(first.root), str(root)], check=True)
    project = Project(root)
    _share_environments(project)
    project.env |= env
    return project


@contextmanager
def serving(project: Project, *, ready: bool = True) -> Iterator[str]:
    """`make serve` on a free port until the block ends (then SIGTERM: the log drains);
    the block starts once /ready answers 200 (``ready=False``: once /health does)."""
    port = free_port()
    output = project.root / "serve.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["make", "serve", f"PORT={port}"],
            cwd=project.root,
            env=project.env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(
            process, url, output, path="/ready" if ready else "/health", timeout=READY_SECONDS
        )
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())

"""The preflight names each missing system piece, with its package on three platforms.

Each piece is hidden for real: commands by a PATH without them, a library or a stdlib
module by a private mount namespace in which an empty file or folder covers it (root
only: CI and containers run as root; elsewhere those two tests are skipped)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scripts import preflight

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts/preflight.py"
# What a command needs to find besides the one hidden (bash runs make's recipes).
TOOLS = ("git", "make", "curl", "sqlite3", "bash", "sh", "env")


def _path_without(tmp_path: Path, hidden: str) -> str:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for tool in TOOLS:
        found = shutil.which(tool)
        if tool != hidden and found:
            (folder / tool).symlink_to(found)
    return str(folder)


def _preflight(
    env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        env=os.environ | (env or {}),
        timeout=60,
        check=False,
    )


def _can_hide_files() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def _covered(target: str) -> tuple[str, ...]:
    """A prefix that runs the command with ``target`` covered by an empty file (or folder),
    in a mount namespace of its own: nothing changes outside it."""
    empty = "/dev/null" if Path(target).is_file() else "$(mktemp -d)"
    script = f'mount --bind {empty} "{target}" && exec "$@"'
    return ("unshare", "--mount", "bash", "-c", script, "covered")


needs_root = pytest.mark.skipif(
    not _can_hide_files(), reason="hiding a file needs root and unshare (CI has both)"
)


def test_silent_and_zero_when_nothing_is_missing() -> None:
    done = _preflight()
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize(
    ("hidden", "debian", "fedora", "macos"),
    [
        ("git", "apt-get install git", "dnf install git", "xcode-select --install"),
        ("make", "apt-get install make", "dnf install make", "xcode-select --install"),
        ("curl", "apt-get install curl", "dnf install curl", "preinstalled"),
        ("sqlite3", "apt-get install sqlite3", "dnf install sqlite", "preinstalled"),
    ],
)
def test_a_missing_command_gets_one_line_with_its_package(
    tmp_path: Path, hidden: str, debian: str, fedora: str, macos: str
) -> None:
    done = _preflight({"PATH": _path_without(tmp_path, hidden)})
    assert done.returncode == 1, done.stdout
    gaps = [line for line in done.stdout.splitlines() if "missing:" in line]
    assert len(gaps) == 1, done.stdout
    assert f"missing: {hidden} (" in gaps[0]
    for where, fix in (("Debian/Ubuntu", debian), ("Fedora", fedora), ("macOS", macos)):
        # sudo in front, unless root runs it
        assert re.search(rf"{where}: (sudo )?{re.escape(fix)}\b", gaps[0]), gaps[0]
    assert "Traceback" not in done.stdout + done.stderr


def _loaded_path(library: str) -> str:
    """Where the dynamic loader finds ``library`` (read from a process that loaded it)."""
    probe = f"import ctypes; ctypes.CDLL({library!r}); print(open('/proc/self/maps').read())"
    maps = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    stem = library.partition(".so")[0]
    paths = {line.split()[-1] for line in maps.splitlines() if stem in line}
    assert paths, f"{library} is not loaded"
    return sorted(paths)[0]


@needs_root
def test_a_missing_openmp_runtime_is_named_with_its_package() -> None:
    done = _preflight(prefix=_covered(_loaded_path("libgomp.so.1")))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "missing: the OpenMP runtime libgomp.so.1 (LightGBM" in done.stdout
    assert re.search(r"Debian/Ubuntu: (sudo )?apt-get install libgomp1", done.stdout)
    assert re.search(r"Fedora: (sudo )?dnf install libgomp\b", done.stdout)
    assert "macOS: brew install libomp" in done.stdout


@needs_root
def test_a_missing_ensurepip_points_at_python3_venv() -> None:
    import ensurepip  # noqa: PLC0415

    folder = str(Path(ensurepip.__file__).parent)
    done = _preflight(prefix=_covered(folder))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "missing: venv and ensurepip" in done.stdout
    assert re.search(r"Debian/Ubuntu: (sudo )?apt-get install python3-venv", done.stdout)


def test_an_old_python_is_told_which_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "PYTHON_MIN", (3, 99))
    gaps = preflight.missing()
    assert [gap.found for gap in gaps] == [preflight.python_ok]
    line = gaps[0].line()
    assert "make PYTHON=python3.12" in line
    for where in ("Debian/Ubuntu:", "Fedora:", "macOS:"):
        assert where in line


def test_several_gaps_get_one_command_for_this_machine(tmp_path: Path) -> None:
    path = _path_without(tmp_path, "curl")
    (Path(path) / "git").unlink()
    done = _preflight({"PATH": path})
    assert done.returncode == 1
    if preflight.this_platform() == "debian":
        fix = r"on this machine \(Debian/Ubuntu\): (sudo )?apt-get install git curl"
        assert re.search(fix, done.stdout), done.stdout


def test_make_install_stops_before_creating_anything(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "Makefile", project)
    shutil.copy2(SCRIPT, project / "scripts")
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy2(REPO / name, project)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    env["PATH"] = _path_without(tmp_path, "curl") + os.pathsep + str(Path(sys.executable).parent)
    done = subprocess.run(
        ["make", "install", f"PYTHON={sys.executable}"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "missing: curl (" in done.stdout
    assert not (project / ".venv").exists()
    assert not (project / ".tools").exists()


def test_the_python_range_is_pyproject_s() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    low = ".".join(map(str, preflight.PYTHON_MIN))
    high = ".".join(map(str, preflight.PYTHON_BELOW))
    assert pyproject["project"]["requires-python"] == f">={low},<{high}"


def test_packages_for_a_dockerfile() -> None:
    assert preflight.packages_for("debian") == [
        "python3-venv",
        "git",
        "make",
        "curl",
        "sqlite3",
        "libgomp1",
    ]
    assert preflight.packages_for("macos") == ["libomp"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--packages", "fedora"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["git", "make", "curl", "sqlite", "libgomp"]

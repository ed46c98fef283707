"""What `make install` needs from the machine, checked before anything is installed.

    python3 scripts/preflight.py                  # silent when all is there; else one line per gap
    python3 scripts/preflight.py --report         # every check, found or not
    python3 scripts/preflight.py --packages debian   # the system packages, for a Dockerfile

The wheels in uv.lock bring almost everything; what they cannot bring is listed here
once (:data:`NEEDS`), with the package that provides it on Debian/Ubuntu, Fedora and macOS.
The README's prerequisites and the fresh-machine check (tests/fresh_machine) read this
table, so the three cannot disagree. Exit 0: nothing missing; 1: something is (every
gap named on its own line, then one command that installs them all on this machine).

Standard library only, and syntax old interpreters can parse: it runs with the system
python3 before the project's environment exists, and an old python3 must be told it is
too old, not fail with a SyntaxError.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib.util
import os
import platform
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# pyproject.toml's requires-python (a test checks that the two agree).
PYTHON_MIN = (3, 11)
PYTHON_BELOW = (3, 14)
PLATFORMS = ("debian", "fedora", "macos")
PLATFORM_NAMES = {"debian": "Debian/Ubuntu", "fedora": "Fedora", "macos": "macOS"}
INSTALLERS = {"debian": "apt-get install", "fedora": "dnf install", "macos": "brew install"}


@dataclass(frozen=True)
class Need:
    """One thing from the system: how to find it, why the project needs it, where it is."""

    name: str
    why: str
    # Package per platform; None: the platform has it already (``preinstalled`` says how).
    packages: dict[str, str | None]
    found: Callable[[], bool]
    preinstalled: dict[str, str] = field(default_factory=dict)
    # Only on these systems (platform.system()); empty: everywhere.
    systems: tuple[str, ...] = ()

    def applies(self) -> bool:
        return not self.systems or platform.system() in self.systems

    def fix(self, where: str) -> str:
        package = self.packages.get(where)
        if package is None:
            return self.preinstalled.get(where, "included")
        return f"{sudo()}{INSTALLERS[where]} {package}"

    def line(self) -> str:
        fixes = " | ".join(f"{PLATFORM_NAMES[where]}: {self.fix(where)}" for where in PLATFORMS)
        return f"missing: {self.name} ({self.why}). {fixes}"


def sudo() -> str:
    """Root needs no sudo (containers, CI); everyone else does."""
    if platform.system() == "Darwin":
        return ""  # Homebrew refuses to run under sudo
    return "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "


def python_ok() -> bool:
    return PYTHON_MIN <= sys.version_info[:2] < PYTHON_BELOW


def venv_ok() -> bool:
    # Debian and Ubuntu ship ensurepip (which `python3 -m venv` runs) in python3-venv.
    # A spec without an origin is a namespace package: a stray folder, not the module.
    specs = [importlib.util.find_spec(name) for name in ("venv", "ensurepip")]
    return all(spec is not None and spec.origin is not None for spec in specs)


def command(name: str) -> Callable[[], bool]:
    return lambda: shutil.which(name) is not None


def loads(*names: str) -> bool:
    """The dynamic loader can open one of ``names``, as LightGBM's library will."""
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def openmp_linux() -> bool:
    return loads("libgomp.so.1")


def openmp_macos() -> bool:
    # LightGBM's macOS wheel links libomp from Homebrew (arm64 and Intel prefixes).
    found = ctypes.util.find_library("omp")
    candidates = [found] if found else []
    candidates += [
        "/opt/homebrew/opt/libomp/lib/libomp.dylib",
        "/usr/local/opt/libomp/lib/libomp.dylib",
    ]
    return loads(*candidates)


VERSION = f"{PYTHON_MIN[0]}.{PYTHON_MIN[1]}"
NEEDS: tuple[Need, ...] = (
    Need(
        f"Python {VERSION} to {PYTHON_BELOW[0]}.{PYTHON_BELOW[1] - 1} as {sys.executable}",
        f"this is Python {platform.python_version()}; pass another with make PYTHON=python3.12",
        {"debian": f"python{VERSION} python{VERSION}-venv", "fedora": f"python{VERSION}"},
        python_ok,
        preinstalled={"macos": "brew install python@3.12"},
    ),
    Need(
        "venv and ensurepip",
        "make install creates .venv with them",
        {"debian": "python3-venv", "fedora": None, "macos": None},
        venv_ok,
        preinstalled={"fedora": "part of python3", "macos": "part of python3"},
    ),
    Need(
        "git",
        "DVC and the tests work in a git repository",
        {"debian": "git", "fedora": "git", "macos": None},
        command("git"),
        preinstalled={"macos": "xcode-select --install"},
    ),
    Need(
        "make",
        "every command here is a make target",
        {"debian": "make", "fedora": "make", "macos": None},
        command("make"),
        preinstalled={"macos": "xcode-select --install"},
    ),
    Need(
        "curl",
        "the tests run the docs' curl commands against the service",
        {"debian": "curl", "fedora": "curl", "macos": None},
        command("curl"),
        preinstalled={"macos": "preinstalled"},
    ),
    Need(
        "sqlite3",
        "the docs read the prediction log with it, and the tests run the docs",
        {"debian": "sqlite3", "fedora": "sqlite", "macos": None},
        command("sqlite3"),
        preinstalled={"macos": "preinstalled"},
    ),
    Need(
        "the OpenMP runtime libgomp.so.1",
        "LightGBM's wheel loads it; without it `make train` fails in the train stage",
        {"debian": "libgomp1", "fedora": "libgomp", "macos": "libomp"},
        openmp_linux,
        systems=("Linux",),
    ),
    Need(
        "the OpenMP runtime libomp",
        "LightGBM's wheel loads it; without it `make train` fails in the train stage",
        {"debian": "libgomp1", "fedora": "libgomp", "macos": "libomp"},
        openmp_macos,
        systems=("Darwin",),
    ),
)


def this_platform() -> str | None:
    """debian, fedora or macos, when this machine is one of them (or like one)."""
    if platform.system() == "Darwin":
        return "macos"
    try:
        with Path("/etc/os-release").open(encoding="utf-8") as release:
            pairs = [line.rstrip("\n").partition("=") for line in release]
    except OSError:
        return None
    fields = {key: value for key, _, value in pairs}
    family = " ".join(fields.get(key, "").strip('"') for key in ("ID", "ID_LIKE")).split()
    if {"debian", "ubuntu"} & set(family):
        return "debian"
    if {"fedora", "rhel", "centos"} & set(family):
        return "fedora"
    return None


def missing(needs: Sequence[Need] = NEEDS) -> list[Need]:
    return [need for need in needs if need.applies() and not need.found()]


def install_all(gaps: Sequence[Need], where: str) -> str | None:
    """One command for every gap on ``where``; None when one of them has no package."""
    packages = [gap.packages.get(where) for gap in gaps]
    if not packages or any(package is None for package in packages):
        return None
    # Both OpenMP rows name the same package; keep the order, drop repeats.
    unique = list(dict.fromkeys(p for package in packages if package for p in package.split()))
    return f"{sudo()}{INSTALLERS[where]} {' '.join(unique)}"


def packages_for(where: str) -> list[str]:
    """Every package the project needs on ``where`` (for a Dockerfile or a CI image)."""
    names = [
        need.packages[where]
        for need in NEEDS
        if need.packages.get(where) and need.found is not python_ok
    ]
    return list(dict.fromkeys(p for name in names if name for p in name.split()))


def markdown_table() -> str:
    """The README's prerequisites table (tests/test_docs.py checks the README holds it)."""
    head = ["| what | why | " + " | ".join(PLATFORM_NAMES[p] for p in PLATFORMS) + " |"]
    head.append("| --- | --- |" + " --- |" * len(PLATFORMS))
    rows = {
        "python": [
            f"Python {VERSION} to {PYTHON_BELOW[0]}.{PYTHON_BELOW[1] - 1}",
            "the interpreter (`make PYTHON=python3.12 ...` picks another)",
            "`python3`",
            "`python3`",
            "`brew install python@3.12`",
        ]
    }
    for need in NEEDS[1:]:
        # OpenMP has a need per system and one row in the table.
        name = "the OpenMP runtime" if "OpenMP" in need.name else need.name
        cells = [_cell(need, where) for where in PLATFORMS]
        rows.setdefault(name, [name, need.why.split(";")[0], *cells])
    return "\n".join(head + [f"| {' | '.join(cells)} |" for cells in rows.values()])


def _cell(need: Need, where: str) -> str:
    package = need.packages.get(where)
    if package:
        return f"`{package}`"
    how = need.preinstalled.get(where, "included")
    return f"`{how}`" if " -" in how or how.startswith("brew ") else how


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--report", action="store_true", help="show every check, found or not")
    cli.add_argument(
        "--packages", choices=PLATFORMS, help="print the system packages the project needs"
    )
    cli.add_argument("--markdown", action="store_true", help="print the README's table")
    args = cli.parse_args(argv)
    if args.markdown:
        print(markdown_table())
        return 0
    if args.packages:
        print(" ".join(packages_for(args.packages)))
        return 0
    gaps = missing()
    if args.report:
        for need in NEEDS:
            if need.applies():
                print(f"{'missing' if need in gaps else 'ok':<8} {need.name}")
    if not gaps:
        return 0
    print(f"preflight: this machine lacks {len(gaps)} thing(s) the project needs:")
    for gap in gaps:
        print(f"  {gap.line()}")
    where = this_platform()
    fix = install_all(gaps, where) if where else None
    if fix:
        print(f"preflight: on this machine ({PLATFORM_NAMES[str(where)]}): {fix}")
    print("preflight: then run the make command again (README: Prerequisites)")
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""`make audit` fails, in one line with the fix, whenever it cannot check every package.

The real pip-audit runs each time, over the real lock, with its real network code:
unreachable services are closed ports on loopback, and PyPI's vulnerability API is a
stand-in on loopback (tests/scripts/pypi_standin.py) that answers 404 as it does on the
machines this project runs on, or answers for real (clean, or one vulnerability).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import audit
from tests.scripts.pypi_standin import PyPIStandin

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts/audit.py"
UV = REPO / ".tools/bin/uv"
# pip-audit as the lock's own packages would be audited without --strict.
PLAIN_PIP_AUDIT = (sys.executable, "-m", "pip_audit", "--locked", "--progress-spinner", "off")
# -o: the venv counts as installed (the tests run in it): the audit recipe is what is tested.
MAKE = ("make", "--no-print-directory", "-o", ".venv/.installed", "audit")
PASSED_BY_ACCIDENT = "No known vulnerabilities found"
# As the Makefile's audit recipe exports the lock.
EXPORT = (
    *("export", "--frozen", "--all-extras", "--group", "dev", "--no-emit-project"),
    *("--format", "pylock.toml", "--quiet"),
)
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """uv.lock exported as the Makefile does it, once for the module."""
    folder = tmp_path_factory.mktemp("lock")
    subprocess.run(
        [str(UV), *EXPORT, "-o", str(folder / audit.LOCK_FILE)],
        cwd=REPO,
        check=True,
    )
    return folder / audit.LOCK_FILE


@pytest.fixture
def lock_dir(exported: Path, tmp_path: Path) -> Path:
    """A folder of the test's own: the script writes its report and log beside the lock."""
    folder = tmp_path / "audit"
    folder.mkdir()
    shutil.copy(exported, folder / audit.LOCK_FILE)
    return folder


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused, and no
    other process can take it while the test runs."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the machine's proxy settings, nor the MAKEFLAGS
    of a `make test` that runs this."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in PROXY_VARIABLES and not k.startswith("MAKE")
    }
    return clean | (extra or {})


def _audit(
    lock_dir: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # A cache of the test's own: no answer from an earlier run can stand in for this one.
    cache = ("--cache-dir", str(lock_dir / "cache"))
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(lock_dir), *cache, *options],
        capture_output=True,
        text=True,
        env=_env(env),
        timeout=120,
        check=False,
    )


def _failure_line(done: subprocess.CompletedProcess[str], lock_dir: Path) -> str:
    """The script's output: the pip-audit command it ran, then its one verdict line."""
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout + done.stderr
    assert lines[0].startswith("audit: pip-audit --strict "), lines[0]
    assert PASSED_BY_ACCIDENT not in done.stdout + done.stderr
    assert lines[1].startswith("audit: FAILED, no result: "), lines[1]
    assert "Fix: " in lines[1]
    assert lines[1].endswith(f"Full output: {lock_dir / audit.LOG_FILE}")
    return lines[1]


def test_make_audit_fails_where_pypi_answers_404_though_plain_pip_audit_passes(
    exported: Path, tmp_path: Path
) -> None:
    """The trap of these machines, reproduced: PyPI's JSON API answers 404, pip-audit skips
    every package and passes. `make audit` (the Makefile's own recipe) fails instead."""
    cache = ("--cache-dir", str(tmp_path / "cache"))
    with PyPIStandin(tmp_path, answers=None) as pypi:
        plain = subprocess.run(
            [*PLAIN_PIP_AUDIT, *cache, str(exported.parent)],
            capture_output=True,
            text=True,
            env=_env(pypi.env()),
            timeout=120,
            check=False,
        )
        assert plain.returncode == 0, plain.stderr
        assert PASSED_BY_ACCIDENT in plain.stderr
        assert "Dependency not found on PyPI" in plain.stdout

        made = subprocess.run(
            [*MAKE, f"AUDIT_DIR={tmp_path / 'made'}", f"AUDIT_ARGS={' '.join(cache)}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=_env(pypi.env()),
            timeout=120,
            check=False,
        )
    assert made.returncode == 2, made.stdout + made.stderr  # make's code for a failed recipe
    assert PASSED_BY_ACCIDENT not in made.stdout + made.stderr
    assert "audit: pip-audit --strict --locked " in made.stdout
    verdict = made.stdout.splitlines()[-1]
    assert verdict.startswith("audit: FAILED, no result: PyPI's vulnerability API answered 404")
    assert "https://pypi.org/pypi/aiobotocore/" in verdict
    assert "is blocked from this machine" in verdict
    assert "AUDIT_ARGS='--vulnerability-service osv'" in verdict
    assert "Error 1" in made.stderr  # the script's own code, as make reports it


def test_an_unreachable_proxy_fails_in_one_line(lock_dir: Path, closed_port: int) -> None:
    proxy = f"http://127.0.0.1:{closed_port}"
    done = _audit(lock_dir, env={"HTTPS_PROXY": proxy})
    assert done.returncode == 1
    line = _failure_line(done, lock_dir)
    assert "pip-audit got no vulnerability data: the request to https://pypi.org/pypi/" in line
    assert f"through the proxy {proxy} failed (ProxyError: Connection refused)" in line
    assert "set HTTPS_PROXY to a proxy that reaches it" in line


def test_an_unreachable_osv_service_fails_in_one_line(lock_dir: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/v1/query"
    done = _audit(lock_dir, "--vulnerability-service", "osv", "--osv-url", url)
    assert done.returncode == 1
    line = _failure_line(done, lock_dir)
    assert f"the request to {url} failed (ConnectionError: Connection refused)" in line
    assert f"run `make audit` where {url} answers" in line
    assert "AUDIT_ARGS='--vulnerability-service pypi'" in line


def test_a_known_vulnerability_fails_with_its_list(lock_dir: Path, tmp_path: Path) -> None:
    version = next(
        v for name, v in audit.locked_packages(lock_dir / audit.LOCK_FILE) if name == "requests"
    )
    advisory = {
        "id": "PYSEC-2099-1",
        "aliases": ["CVE-2099-0001"],
        "summary": "A stand-in advisory",
        "fixed_in": ["99.0"],
    }
    with PyPIStandin(tmp_path, answers={"requests": [advisory]}) as pypi:
        done = _audit(lock_dir, env=pypi.env())
        ignored = _audit(lock_dir, "--ignore-vuln", "PYSEC-2099-1", env=pypi.env())
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == (
        f"  requests {version}: PYSEC-2099-1 (CVE-2099-0001), fixed in 99.0: A stand-in advisory"
    )
    assert lines[2].startswith("audit: FAILED: 1 known vulnerability in 1 of the ")
    assert "--ignore-vuln ID" in lines[2]
    assert ignored.returncode == 0, ignored.stdout


def test_a_clean_audit_passes_after_asking_for_every_locked_package(
    lock_dir: Path, tmp_path: Path
) -> None:
    locked = audit.locked_packages(lock_dir / audit.LOCK_FILE)
    with PyPIStandin(tmp_path, answers={}) as pypi:
        done = _audit(lock_dir, env=pypi.env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == (
        f"audit: OK: none of the {len(locked)} packages uv.lock pins has a known "
        "vulnerability (data: https://pypi.org/pypi/)"
    )
    # Every Python's share of the lock, not only this interpreter's (numpy has two pins).
    assert {(audit._canonical(n), v) for n, v in pypi.asked} == set(locked)
    assert len([name for name, _ in locked if name == "numpy"]) == 2


def test_a_report_that_leaves_a_package_out_is_a_failure() -> None:
    """Whatever pip-audit's exit code: a pass means every locked package was checked."""
    locked = {("fastapi", "1.0"): audit.PYPI_INDEX, ("numpy", "2.0"): audit.PYPI_INDEX}
    service = audit.Service("pypi")
    one = {"dependencies": [{"name": "fastapi", "version": "1.0", "vulns": []}]}
    code, lines = audit.verdict(0, "", one, locked, service)
    assert code == 1
    assert lines == [
        "audit: FAILED, no result: pip-audit checked 1 of the 2 locked packages (not: numpy 2.0)."
    ]
    skipped = {"dependencies": [*one["dependencies"], {"name": "numpy", "skip_reason": "why"}]}
    code, lines = audit.verdict(0, "", skipped, locked, service)
    assert code == 1
    assert "pip-audit skipped 1 package(s) (numpy)" in lines[0]
    code, lines = audit.verdict(0, "", None, locked, service)
    assert code == 1
    assert lines[0].startswith("audit: FAILED, no result: pip-audit exited 0")

"""Audit every package uv.lock pins for known vulnerabilities: what `make audit` runs.

    python scripts/audit.py LOCK_DIR [pip-audit options]

LOCK_DIR holds pylock.toml, uv.lock exported in the standard lock format (the Makefile
writes it with `uv export --format pylock.toml`). pip-audit reads it with --locked: every
package of the lock, for every Python and platform the lock covers (a requirements export
carries markers, and pip-audit would check only the running interpreter's share of it).
Other options go to pip-audit as they are, e.g. `--vulnerability-service osv`,
`--ignore-vuln ID`, `--cache-dir DIR`, `--timeout S`.

pip-audit runs with --strict, so a package it could not check fails the run: without it,
where PyPI's vulnerability API cannot be reached, pip-audit skips every package as "not
found on PyPI" and still ends with "No known vulnerabilities found" and exit 0. What this
script adds is what pip-audit's flags cannot: one line saying what failed and how to fix
it, instead of that misleading message or a traceback (pip-audit's whole output stays in
LOCK_DIR/pip-audit.log), and a check that the report covers every locked package.

Exit 0: every locked package was checked and none has a known vulnerability. 1: known
vulnerabilities (one line each, then a summary line), or no result (one line: what
failed and how to fix it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_FILE = "pylock.toml"
REPORT_FILE = "report.json"
LOG_FILE = "pip-audit.log"
# --strict: a package pip-audit cannot check is a failure, not a skip (see the docstring).
# --locked: the packages come from LOCK_DIR/pylock.toml. JSON: the report checked below.
PIP_AUDIT_FLAGS = ("--strict", "--locked", "--progress-spinner", "off", "--format", "json")
PYPI_INDEX = "https://pypi.org/simple"
OSV_URL = "https://api.osv.dev/v1/query"
# Where each of pip-audit's services reads its data, for the fix the failure line gives.
SERVICE_WHERE = {
    "pypi": "https://pypi.org/pypi/",
    "osv": OSV_URL,
    "esms": "https://advisories.ecosyste.ms/api/v1/advisories",
}

# What pip-audit prints when --strict stops it at a package it could not check.
SKIPPED = re.compile(r"^ERROR:pip_audit\._cli:(?P<name>[^:\s]+): (?P<reason>.+)$", re.MULTILINE)
NOT_ON_PYPI = re.compile(r"not found on PyPI and could not be audited: \S+ \((?P<version>[^)]+)\)")
# ... and the last line of its traceback when the service cannot be reached or fails.
REQUESTS_ERROR = re.compile(r"^requests\.exceptions\.(?P<kind>\w+): (?P<detail>.+)$", re.MULTILINE)
POOL = re.compile(r"(?P<scheme>HTTPS?)ConnectionPool\(host='(?P<host>[^']+)', port=(?P<port>\d+)")
URL_PATH = re.compile(r"with url: (?P<path>\S+)")
ERRNO = re.compile(r"\[Errno -?\d+\] (?P<reason>[^\"')]+)")
PIP_AUDIT_ERROR = re.compile(r"^ERROR:pip_audit\.\w+:(?P<message>.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Service:
    """The vulnerability service pip-audit is told to use, named in the failure lines."""

    name: str
    osv_url: str | None = None

    @property
    def where(self) -> str:
        return self.osv_url if self.name == "osv" and self.osv_url else SERVICE_WHERE[self.name]

    def fix(self) -> str:
        other = "pypi" if self.name == "osv" else "osv"
        return (
            f"Fix: run `make audit` where {self.where} answers, or set HTTPS_PROXY to a proxy "
            f"that reaches it, or try make audit AUDIT_ARGS='--vulnerability-service {other}' "
            f"({SERVICE_WHERE[other]})."
        )


def main(argv: Sequence[str] | None = None) -> int:
    args, passthrough = _arguments(argv)
    lock = args.lock_dir / LOCK_FILE
    if not lock.is_file():
        print(
            f"audit: FAILED: no {lock}: export the lock first (`make audit` does it: "
            "uv export --frozen --all-extras --group dev --no-emit-project --format pylock.toml)"
        )
        return 1
    service = Service(args.vulnerability_service, args.osv_url)
    report_path, log = args.lock_dir / REPORT_FILE, args.lock_dir / LOG_FILE
    report_path.unlink(missing_ok=True)  # a report from an earlier run must not count
    command = [*_pip_audit_command(service, report_path, passthrough), str(args.lock_dir)]
    print("audit: pip-audit " + " ".join(command[3:]), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    log.write_text(done.stdout + done.stderr)
    code, lines = verdict(
        done.returncode, done.stderr, _read_report(report_path), locked_packages(lock), service
    )
    if code and lines[-1].startswith("audit: FAILED, no result"):
        lines[-1] += f" Full output: {log}"
    print("\n".join(lines))
    return code


def _arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock_dir", type=Path, help=f"the folder holding {LOCK_FILE}")
    # Read here too: the failure lines name the service and its address.
    parser.add_argument(
        "-s", "--vulnerability-service", choices=sorted(SERVICE_WHERE), default="pypi"
    )
    parser.add_argument("--osv-url")
    return parser.parse_known_args(argv)


def _pip_audit_command(service: Service, report: Path, passthrough: list[str]) -> list[str]:
    # pip-audit of this interpreter's environment (the project's venv), not whichever is on PATH.
    command = [sys.executable, "-m", "pip_audit", *PIP_AUDIT_FLAGS, "--output", str(report)]
    command += ["--vulnerability-service", service.name]
    if service.osv_url:
        command += ["--osv-url", service.osv_url]
    return command + passthrough


def locked_packages(lock: Path) -> dict[tuple[str, str], str]:
    """(name, version) -> the index the lock takes it from, for every package in pylock.toml."""
    packages = tomllib.loads(lock.read_text()).get("packages", [])
    return {
        (_canonical(package["name"]), str(package.get("version"))): str(package.get("index", ""))
        for package in packages
    }


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return report if isinstance(report, dict) else None


def verdict(
    returncode: int,
    stderr: str,
    report: dict[str, Any] | None,
    locked: dict[tuple[str, str], str],
    service: Service,
) -> tuple[int, list[str]]:
    """The exit code and the lines to print, from pip-audit's exit code, stderr and report."""
    dependencies = list((report or {}).get("dependencies", []))
    vulnerable = [dep for dep in dependencies if dep.get("vulns")]
    if vulnerable:
        return 1, _vulnerability_lines(vulnerable, len(locked))
    if returncode != 0 or report is None:
        return 1, [f"audit: FAILED, no result: {_why(returncode, stderr, locked, service)}"]
    problem = _incomplete(dependencies, locked)
    if problem:
        return 1, [f"audit: FAILED, no result: {problem}."]
    return 0, [
        f"audit: OK: none of the {len(locked)} packages uv.lock pins has a known "
        f"vulnerability (data: {service.where})"
    ]


def _vulnerability_lines(vulnerable: list[dict[str, Any]], locked: int) -> list[str]:
    lines = []
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            aliases = f" ({', '.join(vuln['aliases'])})" if vuln.get("aliases") else ""
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            about = (vuln.get("description") or "").strip()
            about = f": {about[:120]}{'...' if len(about) > 120 else ''}" if about else ""
            lines.append(
                f"  {dep['name']} {dep['version']}: {vuln['id']}{aliases}, fixed in {fixed}{about}"
            )
    count = len(lines)
    lines.append(
        f"audit: FAILED: {count} known vulnerabilit{'y' if count == 1 else 'ies'} in "
        f"{len(vulnerable)} of the {locked} locked packages: upgrade them (.tools/bin/uv lock "
        "--upgrade-package NAME), or, once judged harmless here, pass "
        "AUDIT_ARGS='--ignore-vuln ID'"
    )
    return lines


def _why(returncode: int, stderr: str, locked: dict[tuple[str, str], str], service: Service) -> str:
    """What stopped pip-audit, and the fix, in one sentence or two."""
    skipped = SKIPPED.search(stderr)
    if skipped and (on_pypi := NOT_ON_PYPI.search(skipped["reason"])):
        return _not_on_pypi(skipped["name"], on_pypi["version"], locked, service)
    if skipped:
        return f"pip-audit could not check {skipped['name']}: {skipped['reason']}."
    failure = REQUESTS_ERROR.search(stderr)
    if failure:
        return f"pip-audit got no vulnerability data: {_request_failure(failure)}. {service.fix()}"
    error = PIP_AUDIT_ERROR.search(stderr)
    said = error["message"] if error else (stderr.strip().splitlines() or ["no output"])[-1]
    return f"pip-audit exited {returncode}: {said.strip()[:300]}. {service.fix()}"


def _not_on_pypi(
    name: str, version: str, locked: dict[tuple[str, str], str], service: Service
) -> str:
    said = f'PyPI\'s vulnerability API answered 404 ("not found") for {name} {version}'
    index = locked.get((_canonical(name), version), "")
    if index.rstrip("/") != PYPI_INDEX:
        source = index or "no index"
        return f"{said}, which uv.lock takes from {source}, not PyPI: PyPI's data cannot cover it."
    # uv and pip still install from here: they read PyPI's simple index, not the JSON API.
    return (
        f"{said}, a package uv.lock takes from PyPI: "
        f"https://pypi.org/pypi/{name}/{version}/json is blocked from this machine (uv installs "
        f"through another path, the simple index). {service.fix()}"
    )


def _request_failure(failure: re.Match[str]) -> str:
    """`the request to URL [through the proxy P] failed (kind: reason)`, from requests' line."""
    detail = failure["detail"]
    pool, path, errno = POOL.search(detail), URL_PATH.search(detail), ERRNO.search(detail)
    if pool:
        port = "" if pool["port"] in {"80", "443"} else f":{pool['port']}"
        url = f"{pool['scheme'].lower()}://{pool['host']}{port}{path['path'] if path else ''}"
    else:
        url = "the service"
    proxy = ""
    if failure["kind"] == "ProxyError":
        proxy = (
            f" through the proxy {os.environ.get('HTTPS_PROXY') or os.environ.get('https_proxy')}"
        )
    reason = errno["reason"].strip() if errno else detail[:200]
    return f"the request to {url}{proxy} failed ({failure['kind']}: {reason})"


def _incomplete(dependencies: list[dict[str, Any]], locked: dict[tuple[str, str], str]) -> str:
    """What the report leaves out, or "": --strict should make this impossible, but a pass
    must mean that every locked package was checked, whatever pip-audit's version does."""
    skipped = [dep["name"] for dep in dependencies if dep.get("skip_reason")]
    if skipped:
        return f"pip-audit skipped {len(skipped)} package(s) ({', '.join(skipped[:5])})"
    checked = {(_canonical(dep["name"]), str(dep.get("version"))) for dep in dependencies}
    missing = sorted(f"{name} {version}" for name, version in set(locked) - checked)
    if missing:
        return (
            f"pip-audit checked {len(locked) - len(missing)} of the {len(locked)} locked "
            f"packages (not: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})"
        )
    return ""


if __name__ == "__main__":
    sys.exit(main())

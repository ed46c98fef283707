"""A stranger's first hour, on a bare Debian machine: what `make test-fresh` runs.

    python tests/fresh_machine/check_fresh_machine.py [--container-sh PATH] [--skip-commands]
                                                      [--fast-tests]

1. **The bare machine** is container.sh's stand-in for python:3.11-slim (Debian bookworm
   with python3, python3-venv and pip, nothing else). The preflight runs there and must
   stop with exit 1, naming exactly the README's prerequisites that machine lacks (each
   on its own line, with its package).
2. **The documented machine** is the same plus the packages the README lists for
   Debian/Ubuntu (`scripts/preflight.py --packages debian`, the one table both come
   from) and a user who is not root (tests/fresh_machine/Containerfile).
3. As that user, in that container: `git clone` of this repository's HEAD (committed
   work only, as CI sees it), then the commands of the README's first shell block, as
   written (today `make train` and `make test`), each of which must exit 0. uv's cache
   starts empty: every package is downloaded, as on a new machine. With --fast-tests
   (what CI passes), the test command runs with PYTEST_ADDOPTS='-m "not slow"': CI has
   just run the whole suite, slow tests included, on the host from the same commit, and
   the slow ones (whole pipelines) would cost about 20 minutes more here to prove
   nothing the bare machine changes; what it can break (the install, the preflight, the
   system libraries, `make train` itself) is still run as written.

The network is the host's: its CA certificates (/etc/ssl/certs, where a TLS-inspecting
proxy's CA lives, as on these machines) and the variables that point at them
(SSL_CERT_FILE, PIP_CERT, ...) are passed into the container. That is the network's
setting, not the project's: a stranger behind such a proxy has the same.

Output streams to the terminal and to .bench/fresh-machine/. The figures (time per
command, the tests' summary line) go to benchmarks/results/fresh_machine.json
(fresh_machine_fast.json with --fast-tests). Any
failure ends the run with exit 1 and names the step. The container is always removed.
Not a pytest module: it needs a container engine, and it runs `make test` itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: the project's modules must be importable
from scripts import preflight  # noqa: E402
from tests.docs_commands import parse_page  # noqa: E402
from tests.image.check_image import (  # noqa: E402
    NOISE,
    Engine,
    StepError,
    _container_sh,
    failed,
)

HERE = Path(__file__).resolve().parent
IMAGE = "localhost/fraud-detection-fresh-machine:test"
USER_HOME = "/home/stranger"
PROJECT = f"{USER_HOME}/project"
LOGS = ROOT / ".bench/fresh-machine"
RESULTS = ROOT / "benchmarks/results/fresh_machine.json"
# --fast-tests' figures go apart: they are not the whole suite's.
RESULTS_FAST = ROOT / "benchmarks/results/fresh_machine_fast.json"
CA_FOLDER = Path("/etc/ssl/certs")
FAST_TESTS = '-m "not slow"'
PYTEST_SUMMARY = re.compile(r"^=+ (\d+ passed.*) in [\d.]+s(?: \([\d:]+\))? =+$", re.M)


def readme_commands() -> list[str]:
    """The README's first shell block: the commands a stranger is told to run."""
    first = parse_page(ROOT / "README.md")[0]
    return [command.text for command in first.commands]


def main() -> int:
    args = _arguments()
    engine = Engine(_container_sh(args.container_sh))
    figures: dict[str, Any] = {"commit": _git("rev-parse", "--short", "HEAD")}
    name = f"fresh-machine-{os.getpid()}-{secrets.token_hex(3)}"
    LOGS.mkdir(parents=True, exist_ok=True)
    step = "setup"
    try:
        step = "bare machine"
        base = engine("base", step=step).stdout.strip().splitlines()[-1]
        figures["missing_on_bare_machine"] = _check_bare_preflight(engine, base)
        step = "documented machine"
        packages = preflight.packages_for("debian")
        figures["packages"] = packages
        figures["image_build_s"] = _build(engine, base, packages)
        # The clone comes from a bundle of HEAD, a plain file standing in for the remote (a
        # mounted repository owned by root would be refused as "dubious ownership").
        bundle = LOGS / "repository.bundle"
        _git("bundle", "create", str(bundle), "HEAD")
        mounts = ["-v", f"{bundle}:/repository.bundle:ro", *_host_network_trust()]
        engine("run", "-d", "--name", name, *mounts, IMAGE, "sleep", "inf")
        try:
            step = "git clone"
            _exec(engine, name, "git clone -q /repository.bundle project", USER_HOME)
            if not args.skip_commands:
                figures["commands"] = {}
                env = {"PYTEST_ADDOPTS": FAST_TESTS} if args.fast_tests else {}
                figures |= {"pytest_addopts": FAST_TESTS} if args.fast_tests else {}
                for command in readme_commands():
                    step = command
                    seconds, output = _exec(engine, name, command, PROJECT, env)
                    figures["commands"][command] = round(seconds, 1)
                    if summary := PYTEST_SUMMARY.findall(output):
                        figures["tests"] = summary[-1]
        finally:
            engine.podman("rm", "-f", "-t", "0", name, check=False)
    except Exception as error:
        return failed("test-fresh", step, error)
    _report(figures, RESULTS_FAST if args.fast_tests else RESULTS)
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container-sh", type=Path, help="default: $CONTAINER_SH, else shared/")
    parser.add_argument(
        "--skip-commands", action="store_true", help="stop after the clone (checks the setup)"
    )
    parser.add_argument(
        "--fast-tests",
        action="store_true",
        help="the test command leaves out the slow tests (CI: the host has just run them)",
    )
    return parser.parse_args()


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def _host_network_trust() -> list[str]:
    """podman options: the host's CA folder, and the variables naming files in it."""
    if not CA_FOLDER.is_dir():
        return []
    options = ["-v", f"{CA_FOLDER}:{CA_FOLDER}:ro"]
    for variable, value in sorted(os.environ.items()):
        if value.startswith(f"{CA_FOLDER}") and re.search(r"CERT|CA_|CAINFO|SSL", variable):
            options += ["-e", f"{variable}={value}"]
    return options


def _check_bare_preflight(engine: Engine, base: str) -> list[str]:
    """The preflight on the bare machine names what it lacks of the README's list."""
    installed = engine(
        "run", "--rm", base, "dpkg-query", "-W", "-f", "${Package}\\n", step="bare machine"
    ).stdout.split()
    wanted = [p for p in preflight.packages_for("debian") if p not in installed]
    done = engine(
        "run",
        "--rm",
        "-v",
        f"{ROOT / 'scripts/preflight.py'}:/preflight.py:ro",
        base,
        "python3",
        "/preflight.py",
        check=False,
    )
    print(done.stdout, end="", flush=True)
    lines = [line for line in done.stdout.splitlines() if "missing:" in line]
    named = sorted(
        package
        for package in wanted
        if any(re.search(rf"apt-get install {re.escape(package)}\b", line) for line in lines)
    )
    if done.returncode != 1 or len(lines) != len(wanted) or named != sorted(wanted):
        raise StepError(
            "bare machine",
            f"the preflight exited {done.returncode} with {len(lines)} missing line(s); "
            f"the machine lacks {wanted}:\n{done.stdout}{done.stderr}",
        )
    print(f"bare machine: the preflight names the {len(wanted)} missing: {wanted}", flush=True)
    return wanted


def _build(engine: Engine, base: str, packages: list[str]) -> float:
    started = time.perf_counter()
    engine(
        "build",
        "-f",
        str(HERE / "Containerfile"),
        "--build-arg",
        f"PACKAGES={' '.join(packages)}",
        "-t",
        IMAGE,
        str(HERE),
        step="documented machine",
    )
    seconds = time.perf_counter() - started
    print(f"documented machine: {base} + {' '.join(packages)}, built in {seconds:.0f} s")
    return seconds


def _exec(
    engine: Engine, name: str, command: str, workdir: str, env: dict[str, str] | None = None
) -> tuple[float, str]:
    """Run ``command`` as the container's user in ``workdir`` with ``env`` added; stream
    and keep its output."""
    log = LOGS / f"{re.sub(r'[^a-z0-9]+', '-', command.lower()).strip('-')[:40]}.log"
    shown = "".join(f"{key}='{value}' " for key, value in (env or {}).items())
    print(f"\n$ {shown}{command}    (in {workdir}; log: {log.relative_to(ROOT)})", flush=True)
    options = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
    argv = ["bash", str(engine.script), "podman", "exec", *options, "-w", workdir, name]
    started = time.perf_counter()
    kept: list[str] = []
    with (
        log.open("w") as sink,
        subprocess.Popen(
            [*argv, "bash", "-lc", command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            if NOISE.search(line):
                continue
            sink.write(line)
            kept.append(line)
            print(line, end="", flush=True)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        tail = "".join(kept[-40:])
        raise StepError(command, f"exited {process.returncode} after {seconds:.0f} s:\n{tail}")
    print(f"$ {command}: exit 0 in {seconds:.0f} s", flush=True)
    return seconds, "".join(kept)


def _report(figures: dict[str, Any], results: Path) -> None:
    record = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        **figures,
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(record, indent=2) + "\n")
    timed = ", ".join(f"`{c}` {s:.0f} s" for c, s in figures.get("commands", {}).items())
    print(f"\ntest-fresh: OK at {figures['commit']}. {timed}; {figures.get('tests', '')}")


if __name__ == "__main__":
    sys.exit(main())

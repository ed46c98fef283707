"""How long `make install` takes on a new machine, and how big `.venv` is: git revisions
side by side, in alternating rounds of one run.

    python benchmarks/install.py --rev d3ab892 --rev HEAD [--rounds 2]

For each revision and round: a clone at that revision, then `make install` with an empty
uv cache and no pip cache (cold: every wheel is downloaded, as on a new machine), then
`make install` again with .venv removed and the cache kept (warm: the same install with
the downloads removed, the floor of the cold figure). Then the size of .venv and of the
CUDA builds in it (nvidia-* distributions, xgboost's library). Writes
benchmarks/results/install.{json,md}; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.pipeline import machine, row, save_results  # noqa: E402

# Sizes read inside the new .venv by its own interpreter.
SIZES = """
import importlib.metadata as md, json, pathlib
def size(dist):
    return sum(p.stat().st_size for p in (dist.locate_file(f) for f in dist.files or [])
               if p.is_file())
dists = {d.metadata["Name"]: size(d) for d in md.distributions()}
cuda = {n: s for n, s in dists.items() if n.lower().startswith("nvidia-") or "cu1" in n}
lib = next(pathlib.Path(md.distribution(md.packages_distributions()["xgboost"][0])
           .locate_file("xgboost/lib")).glob("libxgboost*"))
print(json.dumps({"cuda": cuda, "xgboost": md.packages_distributions()["xgboost"][0],
                  "libxgboost_mb": lib.stat().st_size / 1e6, "packages": len(dists)}))
"""


def _env(cache: Path) -> dict[str, str]:
    """A user's shell: no outer make, no active venv; a cache of this run's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "VIRTUAL_ENV"))}
    venv_bin = str(REPO / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    return env | {"UV_CACHE_DIR": str(cache), "PIP_NO_CACHE_DIR": "1"}


def _install(project: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        ["make", "install"], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"make install failed in {project}:\n{done.stdout[-2000:]}{done.stderr}")
    return time.perf_counter() - started


def _megabytes(path: Path) -> float:
    done = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0]) / 1e6


def measure(revision: str, scratch: Path) -> dict[str, Any]:
    project = scratch / "project"
    cache = scratch / "uv-cache"
    subprocess.run(["git", "clone", "-q", str(REPO), str(project)], check=True)
    subprocess.run(["git", "-C", str(project), "checkout", "-q", revision], check=True)
    env = _env(cache)
    cold = _install(project, env)
    venv = project / ".venv"
    sizes = json.loads(
        subprocess.run(
            [str(venv / "bin/python"), "-c", SIZES], capture_output=True, text=True, check=True
        ).stdout
    )
    venv_mb = _megabytes(venv)
    shutil.rmtree(venv)
    warm = _install(project, env)
    return {
        "cold_install_s": round(cold, 1),
        "warm_install_s": round(warm, 1),
        "venv_mb": round(venv_mb),
        "uv_cache_mb": round(_megabytes(cache)),
        "cuda_mb": round(sum(sizes["cuda"].values()) / 1e6),
        "cuda_packages": sorted(sizes["cuda"]),
        "xgboost_distribution": sizes["xgboost"],
        "libxgboost_mb": round(sizes["libxgboost_mb"]),
        "packages": sizes["packages"],
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        f"# `make install` on a new machine ({results['when']}, {results['machine']})",
        "",
        "Cold: empty uv cache, every wheel downloaded. Warm: .venv removed, cache kept (the",
        "same install without the downloads). One row per revision and round, in run order.",
        "",
        row(
            "revision",
            "round",
            "cold s",
            "warm s",
            ".venv MB",
            "CUDA MB",
            "xgboost from",
            "libxgboost MB",
        ),
        row("---", "---:", "---:", "---:", "---:", "---:", "---", "---:"),
    ]
    for run in results["runs"]:
        lines.append(
            row(
                f"`{run['revision']}`",
                run["round"],
                run["cold_install_s"],
                run["warm_install_s"],
                f"{run['venv_mb']:,}",
                f"{run['cuda_mb']:,}",
                f"`{run['xgboost_distribution']}`",
                run["libxgboost_mb"],
            )
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--rev", action="append", required=True, help="a revision (repeatable)")
    cli.add_argument("--rounds", type=int, default=2)
    args = cli.parse_args()
    runs = []
    for number in range(1, args.rounds + 1):
        for revision in args.rev:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", revision],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            with tempfile.TemporaryDirectory(prefix="bench-install-") as scratch:
                result = measure(commit, Path(scratch))
            runs.append({"revision": commit, "round": number, **result})
            print(json.dumps(runs[-1]), flush=True)
    results = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "runs": runs,
    }
    save_results("install", results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

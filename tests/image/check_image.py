"""Build the serving image and check it end to end: what `make test-image` runs.

    python tests/image/check_image.py [--container-sh PATH] [--tag TAG] [--no-build]

Builds the image from the repository (build/model must hold an exported model), runs it
detached on a free port, waits for /ready, checks /health, /ready, /predict, /predict/batch,
/model, /metrics and the image's HEALTHCHECK, checks that it runs as a non-root user and
holds no training, monitoring or CUDA packages, stops it with SIGTERM and checks that it exits
with 0 after closing the prediction log. It builds the SBOM (`make sbom`: the Dockerfile's
sbom stage, on the builder's cached layers) and checks that it lists exactly the packages
the running image has, at the versions uv.lock pins for the image's Python. Then it runs
the docs' Docker commands (the blocks marked `<!-- docs-check: docker -->`,
tests/docs_commands.py) with this engine and this image, and sends every container they
start the docs' curl commands (the blocks marked `server`). Containers are always
removed. Any failed step ends the run with exit code 1 and names the step. The figures
(build time, image size, time to ready, time to stop, the SBOM's package count) are
printed and written to benchmarks/results/image.json.

Not a pytest module (no test_ prefix): it needs a container engine, which `make test` does
not. The engine is reached through container.sh (podman with Docker's build/run syntax).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: tests.docs_commands must be importable
from tests.docs_commands import (  # noqa: E402
    SERVICE_PORT,
    Command,
    blocks,
    curl_problem,
    with_ports,
    write_curlrc,
)

CONTAINER_SH_CANDIDATES = (
    ROOT.parent / "shared/container/container.sh",
    Path("/work/shared/container/container.sh"),
)
MODEL_DIR = ROOT / "build/model"
SBOM_FILE = ROOT / "build/sbom.cdx.json"  # where `make sbom` writes it
UV = ROOT / ".tools/bin/uv"
# What the builder installs (Dockerfile), as requirements: the SBOM must match it exactly.
SERVE_EXPORT = ("export", "--frozen", "--no-dev", "--extra", "serve", "--no-emit-project")
# ... and name these at the versions uv.lock pins (the service's and the models' stacks).
SBOM_NAMED = ("fastapi", "scikit-learn", "xgboost-cpu", "lightgbm")
RESULTS = ROOT / "benchmarks/results/image.json"
BATCH_ROWS = 100
# Packages the serving image must not contain (training, monitoring, dev tools).
ABSENT = ("mlflow", "dvc", "evidently", "pytest", "imblearn", "matplotlib")
# ... and the ones it must: the model's stack, the boosters included (any champion may be
# one; LightGBM also needs the system's OpenMP library, which the slim base lacks), and
# the bundled Swagger UI and ReDoc that /docs and /redoc load without internet.
PRESENT = (
    "fraud_detection",
    "serving",
    "sklearn",
    "xgboost",
    "lightgbm",
    "treelite",
    "uvicorn",
    "fastapi_offline",
    # The prediction log on PostgreSQL (compose.yaml, the Kubernetes manifests), and the
    # JSON encoder of the log's rows and the answers.
    "psycopg",
    "orjson",
)
# Podman without systemd logs this on every run/stop of an image with a HEALTHCHECK;
# the check still works when run by hand (podman healthcheck run).
NOISE = re.compile(r"unable to get systemd connection|healthcheck.*systemd")
SHUTDOWN_LINE = re.compile(r"prediction log closed: (\d+) rows written")


class StepError(RuntimeError):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


class Engine:
    """podman through container.sh; output of failed commands is kept for the message."""

    def __init__(self, script: Path) -> None:
        self.script = script

    def __call__(
        self, *args: str, check: bool = True, step: str = "container engine"
    ) -> subprocess.CompletedProcess[str]:
        # `bash script`: CI's copy of shared/ may lack the execute bit.
        done = subprocess.run(
            ["bash", str(self.script), *args], capture_output=True, text=True, check=False
        )
        done.stderr = "".join(
            line for line in done.stderr.splitlines(keepends=True) if not NOISE.search(line)
        )
        if check and done.returncode != 0:
            output = (done.stderr or done.stdout).strip()[-2000:]
            raise StepError(step, f"`{' '.join(args[:3])} ...` exited {done.returncode}\n{output}")
        return done

    def podman(self, *args: str, check: bool = True, step: str = "podman") -> str:
        return self("podman", *args, check=check, step=step).stdout.strip()


def main() -> int:
    args = _arguments()
    engine = Engine(_container_sh(args.container_sh))
    figures: dict[str, Any] = {"image": args.tag}
    name = f"fraud-detector-check-{os.getpid()}-{secrets.token_hex(3)}"
    step = "setup"
    try:
        step = "model"
        _check_model_folder()
        step = "build"
        if not args.no_build:
            figures |= _build(engine, args.tag)
        step = "sbom"
        bom = _build_sbom(engine, args.tag)
        step = "inspect image"
        figures |= _inspect_image(engine, args.tag, args.base)
        step = "run"
        port = _free_port()
        with _container(engine, name) as started:
            engine("run", "-d", "--name", name, "-e", f"SERVING_PORT={port}", args.tag, step=step)
            base = f"http://127.0.0.1:{port}"
            step = "wait for /ready"
            figures["ready_s"] = _wait_ready(engine, name, base, started, args.ready_timeout)
            print(f"ready after {figures['ready_s']:.1f} s", flush=True)
            step = "endpoints"
            rows = _check_endpoints(base)
            step = "user"
            _check_user(engine, name)
            step = "packages"
            probe = _check_packages(engine, name)
            step = "sbom"
            figures["sbom_packages"] = _check_sbom(bom, probe)
            step = "healthcheck"
            _check_healthcheck(engine, name)
            step = "stop"
            figures |= _stop(engine, name, args.stop_timeout, expected_rows=rows)
        step = "api keys"
        figures["keyed_ready_s"] = _check_api_keys(engine, args.tag, args.ready_timeout)
        step = "docs"
        _run_docs_commands(engine, args.tag)
        step = "size"
        if figures["size_mb"] > args.max_size_mb:
            raise StepError(
                step, f"{figures['size_mb']:.0f} MB, more than --max-size-mb {args.max_size_mb}"
            )
    except Exception as error:
        return failed("test-image", step, error)
    _report(figures)
    return 0


def failed(check: str, step: str, error: Exception) -> int:
    """Exit code 1, after one line naming the step that failed (an unexpected error too)."""
    if isinstance(error, StepError):
        step, said = error.step, error.message
    else:
        said = repr(error)
    print(f"\n{check}: FAILED at step '{step}': {said}", file=sys.stderr)
    return 1


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container-sh", type=Path, help="default: $CONTAINER_SH, else shared/")
    parser.add_argument("--tag", default="localhost/fraud-detector:test", help="image to build")
    parser.add_argument("--no-build", action="store_true", help="check the existing --tag")
    parser.add_argument(
        "--base",
        default=os.environ.get("CONTAINER_BASE_IMAGE", "localhost/python-slim-standin:3.11"),
        help="base image, to report the size the project adds to it",
    )
    parser.add_argument("--max-size-mb", type=float, default=700)
    parser.add_argument("--ready-timeout", type=float, default=120)
    parser.add_argument("--stop-timeout", type=int, default=30)
    return parser.parse_args()


def _container_sh(given: Path | None) -> Path:
    candidates = [given] if given else []
    if not given and os.environ.get("CONTAINER_SH"):
        candidates.append(Path(os.environ["CONTAINER_SH"]))
    candidates += [] if given else list(CONTAINER_SH_CANDIDATES)
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(path) for path in candidates)
    print(f"test-image: FAILED at step 'setup': no container.sh (tried {tried})", file=sys.stderr)
    sys.exit(1)


def _check_model_folder() -> None:
    schema = MODEL_DIR / "extra_files/feature_schema.json"
    if not (MODEL_DIR / "MLmodel").is_file() or not schema.is_file():
        raise StepError("model", f"no exported model in {MODEL_DIR}: run `make export-model`")


def _example() -> dict[str, Any]:
    schema = json.loads((MODEL_DIR / "extra_files/feature_schema.json").read_text())
    example = schema.get("example")
    if not isinstance(example, dict) or not example:
        raise StepError("endpoints", "feature_schema.json has no example transaction")
    return example


def _build(engine: Engine, tag: str) -> dict[str, Any]:
    previous = engine.podman("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    print(f"building {tag} ...", flush=True)
    started = time.perf_counter()
    # Streamed: the build log is what one reads when this step fails. The steps taken from
    # the layer cache are counted, to tell a cold build's time from a warm one's.
    steps = cached = 0
    with subprocess.Popen(
        ["bash", str(engine.script), "build", "-t", tag, str(ROOT)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as build:
        assert build.stdout is not None
        for line in build.stdout:
            if not NOISE.search(line):
                print(line, end="", flush=True)
            steps += bool(re.match(r"\[\d+/\d+\] STEP \d+/\d+: ", line))
            cached += line.startswith("--> Using cache")
    seconds = time.perf_counter() - started
    if build.returncode != 0:
        raise StepError("build", f"the image build exited {build.returncode} (log above)")
    current = engine.podman("image", "inspect", "--format", "{{.Id}}", tag)
    if previous and previous != current:
        # The image this tag named before: its layers would otherwise pile up run after run.
        engine.podman("rmi", previous, check=False)
    print(f"built in {seconds:.1f} s ({cached} of {steps} steps from the cache)", flush=True)
    return {"build_s": seconds, "build_cached_steps": f"{cached}/{steps}"}


def _inspect_image(engine: Engine, tag: str, base: str) -> dict[str, Any]:
    info = json.loads(engine.podman("image", "inspect", tag, step="inspect image"))[0]
    config = info.get("Config") or {}
    user = str(config.get("User") or "")
    if user.split(":", maxsplit=1)[0] in {"", "0", "root"}:
        raise StepError("inspect image", f"the image runs as root (User={user!r})")
    # Docker keeps it in Config, podman beside it.
    healthcheck = (config.get("Healthcheck") or info.get("Healthcheck") or {}).get("Test")
    if not healthcheck:
        raise StepError("inspect image", "the image declares no HEALTHCHECK")
    command = (config.get("Entrypoint") or []) + (config.get("Cmd") or [])
    if not command or command[0] in {"/bin/sh", "sh", "/bin/bash"}:
        # Shell form: sh would be PID 1 and python would never see SIGTERM.
        raise StepError("inspect image", f"the command is not in exec form: {command}")
    figures: dict[str, Any] = {"user": user, "size_mb": info["Size"] / 1e6}
    base_size = engine.podman("image", "inspect", "--format", "{{.Size}}", base, check=False)
    if base_size.isdigit():
        figures["base_image"] = base
        figures["over_base_mb"] = (info["Size"] - int(base_size)) / 1e6
    return figures


def _free_port() -> int:
    # The container shares the host's network (container.sh): SERVING_PORT is its port.
    with socket.socket() as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _container(engine: Engine, name: str) -> Iterator[float]:
    """Yields the start time; the container is removed however the block ends."""
    started = time.perf_counter()
    try:
        yield started
    finally:
        # -v: with its anonymous volume (the image's VOLUME /app/logs), or they pile up.
        engine.podman("rm", "-f", "-v", "-t", "0", name, check=False)


def _request(
    url: str, body: Any = None, timeout: float = 30, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json"} if data else {}
    request = urllib.request.Request(url, data=data, headers=sent | (headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def _wait_ready(engine: Engine, name: str, base: str, started: float, timeout: float) -> float:
    last = "no answer yet"
    while time.perf_counter() - started < timeout:
        try:
            status, body = _request(f"{base}/ready", timeout=2)
            if status == 200:
                return time.perf_counter() - started
            last = f"/ready answered {status}: {body}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last = f"no answer ({error})"
        state = engine.podman("inspect", "--format", "{{.State.Status}}", name, check=False)
        if state and state not in {"running", "created", "configured", "initialized"}:
            raise StepError(
                "wait for /ready", f"the container is {state}; its log:\n{_logs(engine, name)}"
            )
        time.sleep(0.2)
    raise StepError(
        "wait for /ready", f"not ready after {timeout:.0f} s ({last}); log:\n{_logs(engine, name)}"
    )


def _logs(engine: Engine, name: str, tail: int = 40) -> str:
    done = engine("podman", "logs", "--tail", str(tail), name, check=False)
    return (done.stdout + done.stderr).strip()


def _expect(condition: bool, step: str, message: str) -> None:
    if not condition:
        raise StepError(step, message)


def _is_probability(value: Any) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and 0 <= value <= 1


def _check_endpoints(base: str) -> int:
    """Checks every endpoint; returns the number of predictions made (all get logged)."""
    status, body = _request(f"{base}/health")
    _expect(status == 200 and body == {"status": "ok"}, "GET /health", f"{status} {body}")

    status, body = _request(f"{base}/ready")
    _expect(status == 200 and body.get("status") == "ready", "GET /ready", f"{status} {body}")

    status, card = _request(f"{base}/model")
    _expect(status == 200, "GET /model", f"{status} {card}")
    _expect(bool(card.get("name")) and bool(card.get("version")), "GET /model", f"{card}")
    _expect(card.get("source") == "/app/model", "GET /model", f"source {card.get('source')}")
    model = {"name": card["name"], "version": card["version"]}

    example = _example()
    status, one = _request(f"{base}/predict", example)
    _expect(status == 200, "POST /predict", f"{status} {one}")
    _expect(_is_probability(one.get("probability")), "POST /predict", f"probability in {one}")
    _expect(one.get("model") == model, "POST /predict", f"model {one.get('model')} != {model}")
    _expect(
        one.get("is_fraud") == (one["probability"] >= one.get("threshold", math.nan)),
        "POST /predict",
        f"is_fraud disagrees with the threshold: {one}",
    )

    status, batch = _request(f"{base}/predict/batch", {"transactions": [example] * BATCH_ROWS})
    _expect(status == 200, "POST /predict/batch", f"{status} {str(batch)[:500]}")
    predictions = batch.get("predictions", [])
    _expect(
        len(predictions) == BATCH_ROWS,
        "POST /predict/batch",
        f"{len(predictions)} predictions for {BATCH_ROWS} transactions",
    )
    _expect(
        all(_is_probability(p.get("probability")) for p in predictions),
        "POST /predict/batch",
        "a probability outside [0, 1]",
    )
    _expect(
        all(math.isclose(p["probability"], one["probability"], abs_tol=1e-9) for p in predictions),
        "POST /predict/batch",
        f"copies of the example do not score as /predict did ({one['probability']})",
    )
    _expect(batch.get("model") == model, "POST /predict/batch", f"model {batch.get('model')}")

    status, body = _request(f"{base}/predict", {**example, "not_a_feature": 1})
    _expect(status == 422, "POST /predict (unknown field)", f"expected 422, got {status}")

    status, text = _request(f"{base}/metrics")
    _expect(status == 200 and isinstance(text, str), "GET /metrics", f"{status}")
    print(
        f"endpoints ok: {model['name']} v{model['version']}, "
        f"P(fraud | example) = {one['probability']:.4f}, batch of {BATCH_ROWS} ok",
        flush=True,
    )
    return 1 + BATCH_ROWS


# As compose.yaml and deploy/kubernetes run it: keys required, from a mounted secret file,
# on a read-only root filesystem (readOnlyRootFilesystem) with /tmp in memory.
KEY_FILE_IN_CONTAINER = "/run/secrets/fraud-api/api-keys"


def _check_api_keys(engine: Engine, tag: str, timeout: float) -> float:
    """The image with API keys: the readiness probe's command (python -m serving.probe)
    passes with the container's own key, a request without one is a 401, with one a 200,
    and no key shows in the log; without any key it refuses to start and says why."""
    key = secrets.token_urlsafe(32)
    folder = Path(tempfile.mkdtemp(prefix="api-keys-"))
    (folder / "api-keys").write_text(f"# the clients' keys\n{key}\n")
    # Readable by the container's user, who is not this one (as a Secret's defaultMode).
    folder.chmod(0o755)
    (folder / "api-keys").chmod(0o644)
    name = f"fraud-detector-keys-{os.getpid()}-{secrets.token_hex(3)}"
    port = _free_port()
    options = ["--read-only", "--tmpfs", "/tmp", "-e", f"SERVING_PORT={port}",
               "-e", "SERVING_REQUIRE_API_KEY=true"]  # fmt: skip
    mount = ["-v", f"{folder}:{Path(KEY_FILE_IN_CONTAINER).parent}:ro",
             "-e", f"SERVING_API_KEYS_FILE={KEY_FILE_IN_CONTAINER}"]  # fmt: skip
    try:
        refused = engine("run", "--rm", *options, tag, check=False, step="api keys")
        said = refused.stdout + refused.stderr
        _expect(
            refused.returncode == 2 and "SERVING_REQUIRE_API_KEY is true but no API key" in said,
            "api keys",
            f"without a key the image must refuse to start; it exited {refused.returncode}: {said}",
        )
        with _container(engine, name) as started:
            engine("run", "-d", "--name", name, *options, *mount, tag, step="api keys")
            ready = _wait_probe(engine, name, started, timeout)
            base = f"http://127.0.0.1:{port}"
            example = _example()
            status, body = _request(f"{base}/predict", example)
            _expect(status == 401, "api keys", f"/predict without a key: {status} {body}")
            status, body = _request(f"{base}/predict", example, headers={"X-API-Key": key})
            _expect(status == 200, "api keys", f"/predict with the key: {status} {body}")
            status, _ = _request(f"{base}/health")
            _expect(status == 200, "api keys", f"/health needs no key: {status}")
            log = _logs(engine, name, tail=200)
            _expect(key not in log, "api keys", "the key appears in the container's log")
            _expect("API keys: 1 accepted" in log, "api keys", f"no start-up line: {log}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"api keys ok: ready (probe) after {ready:.1f} s on a read-only root, 401 "
          "without the key, 200 with it, none in the log", flush=True)  # fmt: skip
    return ready


def _wait_probe(engine: Engine, name: str, started: float, timeout: float) -> float:
    """Kubernetes' readiness probe, as the manifest runs it, until it passes."""
    said = ""
    while time.perf_counter() - started < timeout:
        done = engine("podman", "exec", name, "python", "-m", "serving.probe", "/ready",
                      check=False)  # fmt: skip
        if done.returncode == 0:
            return time.perf_counter() - started
        said = (done.stdout + done.stderr).strip()
        state = engine.podman("inspect", "--format", "{{.State.Status}}", name, check=False)
        if state and state != "running":
            raise StepError("api keys", f"the container is {state}: {_logs(engine, name)}")
        time.sleep(0.5)
    raise StepError("api keys", f"the probe never passed ({said}); log:\n{_logs(engine, name)}")


def _check_user(engine: Engine, name: str) -> None:
    uid = engine.podman("exec", name, "id", "-u", step="user")
    _expect(uid.isdigit() and uid != "0", "user", f"the service runs as uid {uid!r}")
    print(f"runs as uid {uid}", flush=True)


PACKAGES_PROBE = """
import importlib, json, sys
absent, present = sys.argv[1].split(","), sys.argv[2].split(",")
found = {}
for name in absent + present:
    try:
        importlib.import_module(name)
        found[name] = True
    except (ModuleNotFoundError, OSError):  # OSError: a shared library it links is missing
        found[name] = False
# CUDA distributions (the GPU builds of a booster pull them in): the image is CPU-only.
from importlib import metadata
names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in metadata.distributions()}
cuda = sorted(n for n in names if n.startswith("nvidia-") or n.endswith(("-cu12", "-cu13")))
# Every distribution and the interpreter's marker values: what the SBOM is checked against.
import os, platform
dists = sorted({(d.metadata["Name"] or "", d.version) for d in metadata.distributions()})
markers = {"python_full_version": platform.python_version(),
           "python_version": ".".join(platform.python_version_tuple()[:2]),
           "sys_platform": sys.platform, "platform_machine": platform.machine(),
           "platform_system": platform.system(), "os_name": os.name,
           "implementation_name": sys.implementation.name,
           "platform_python_implementation": platform.python_implementation()}
import numpy as np, xgboost, lightgbm
X = np.random.default_rng(0).normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
p = xgboost.XGBClassifier(n_estimators=3, n_jobs=1).fit(X, y).predict_proba(X)
q = lightgbm.LGBMClassifier(n_estimators=3, min_child_samples=2, verbose=-1).fit(X, y)
print(json.dumps({"found": found, "cuda": cuda, "xgboost": xgboost.__version__,
                  "xgb_rows": len(p), "lgbm_rows": len(q.predict_proba(X)),
                  "distributions": dists, "markers": markers}))
"""


def _check_packages(engine: Engine, name: str) -> dict[str, Any]:
    """Checks what the image holds; returns the probe's findings (the SBOM check uses them)."""
    out = engine.podman(
        "exec",
        name,
        "python",
        "-c",
        PACKAGES_PROBE,
        ",".join(ABSENT),
        ",".join(PRESENT),
        step="packages",
    )
    probe = json.loads(out.splitlines()[-1])
    found = probe["found"]
    unwanted = [package for package in ABSENT if found[package]]
    missing = [package for package in PRESENT if not found[package]]
    _expect(not unwanted, "packages", f"the image holds {', '.join(unwanted)}")
    _expect(not missing, "packages", f"the image lacks {', '.join(missing)}")
    cuda = probe["cuda"]
    _expect(not cuda, "packages", f"the image holds CUDA distributions: {', '.join(cuda)}")
    _expect(probe["xgb_rows"] == 40, "packages", f"xgboost did not predict: {probe}")
    _expect(probe["lgbm_rows"] == 40, "packages", f"lightgbm did not predict: {probe}")
    print(
        f"packages ok: no {', '.join(ABSENT)}, no CUDA; xgboost {probe['xgboost']} and "
        "lightgbm train and predict",
        flush=True,
    )
    return dict(probe)


def _build_sbom(engine: Engine, tag: str) -> dict[str, Any]:
    """`make sbom` with this engine (the sbom stage on the builder's cached layers): the
    SBOM it writes, build/sbom.cdx.json."""
    sbom_tag = _sbom_tag(tag)
    sbom_image = f"SBOM_IMAGE={sbom_tag}"
    previous = engine.podman("image", "inspect", "--format", "{{.Id}}", sbom_tag, check=False)
    started = time.perf_counter()
    done = subprocess.run(
        ["make", "--no-print-directory", "sbom", f"CONTAINER_SH={engine.script}", sbom_image],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    output = "".join(
        line for line in (done.stdout + done.stderr).splitlines(True) if not NOISE.search(line)
    )
    _expect(done.returncode == 0, "sbom", f"make sbom exited {done.returncode}:\n{output[-3000:]}")
    current = engine.podman("image", "inspect", "--format", "{{.Id}}", sbom_tag, step="sbom")
    if previous and previous != current:
        engine.podman("rmi", previous, check=False)  # as for the image: no pile of old ones
    print(f"{output.strip().splitlines()[-1]} ({time.perf_counter() - started:.1f} s)", flush=True)
    bom: dict[str, Any] = json.loads(SBOM_FILE.read_text())
    return bom


def _sbom_tag(tag: str) -> str:
    """localhost/fraud-detector:test -> localhost/fraud-detector-sbom:test."""
    repository, colon, version = tag.rpartition(":")
    if not colon or "/" in version:  # no tag given (what precedes ':' was a registry's port)
        repository, version = tag, "latest"
    return f"{repository}-sbom:{version}"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _check_sbom(bom: dict[str, Any], probe: dict[str, Any]) -> int:
    """The SBOM lists what the running image has, exactly, at the versions uv.lock pins for
    the image's interpreter; every package has the purl a scanner matches on. Returns the
    number of packages it lists."""
    _expect(bom.get("bomFormat") == "CycloneDX", "sbom", f"not CycloneDX: {bom.get('bomFormat')}")
    listed = {}
    for component in bom.get("components", []):
        key, version = _canonical(component["name"]), component.get("version")
        purl = f"pkg:pypi/{key}@{version}"
        _expect(component.get("purl") == purl, "sbom", f"{key}: purl {component.get('purl')}")
        listed[key] = version
    root = bom["metadata"]["component"]
    image = {_canonical(name): version for name, version in probe["distributions"]}
    _expect(
        image.pop(_canonical(root["name"]), None) == root["version"],
        "sbom",
        f"the SBOM's subject {root['name']} {root['version']} is not the image's project",
    )
    _expect(listed == image, "sbom", _difference(listed, image, "the image"))
    pinned = _serve_pins(probe["markers"])
    _expect(listed == pinned, "sbom", _difference(listed, pinned, "uv.lock's serve extra"))
    named = ", ".join(f"{name} {listed.get(name)}" for name in SBOM_NAMED)
    _expect(all(name in listed for name in SBOM_NAMED), "sbom", f"the SBOM lacks one of {named}")
    print(
        f"sbom ok: {len(listed)} packages, as in the image and as uv.lock pins them ({named}), "
        f"each with its purl -> {SBOM_FILE.relative_to(ROOT)}",
        flush=True,
    )
    return len(listed)


def _serve_pins(markers: dict[str, str]) -> dict[str, str]:
    """What uv.lock pins for the serve extra, for an interpreter with these marker values."""
    exported = subprocess.run(
        [str(UV), *SERVE_EXPORT, "--no-hashes", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pins = {}
    for line in exported.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(markers):
            pins[_canonical(requirement.name)] = str(requirement.specifier).removeprefix("==")
    return pins


def _difference(sbom: dict[str, str], other: dict[str, str], name: str) -> str:
    ours = ", ".join(f"{k} {v}" for k, v in sorted(sbom.items()) if other.get(k) != v)
    theirs = ", ".join(f"{k} {v}" for k, v in sorted(other.items()) if sbom.get(k) != v)
    return f"the SBOM and {name} differ: only in the SBOM {ours or '-'}; in {name} {theirs or '-'}"


def _check_healthcheck(engine: Engine, name: str) -> None:
    done = engine("podman", "healthcheck", "run", name, check=False)
    _expect(
        done.returncode == 0,
        "healthcheck",
        f"the image's HEALTHCHECK failed ({done.returncode}): {(done.stdout + done.stderr)}",
    )


def _stop(engine: Engine, name: str, timeout: int, expected_rows: int) -> dict[str, Any]:
    started = time.perf_counter()
    engine.podman("stop", "-t", str(timeout), name, step="stop")
    seconds = time.perf_counter() - started
    code = engine.podman("inspect", "--format", "{{.State.ExitCode}}", name, step="stop")
    log = _logs(engine, name, tail=200)
    _expect(
        code == "0",
        "stop",
        f"exit code {code} after {seconds:.1f} s (137: killed at the stop timeout); log:\n{log}",
    )
    _expect(seconds < timeout / 2, "stop", f"took {seconds:.1f} s of the {timeout} s stop timeout")
    match = SHUTDOWN_LINE.search(log)
    if match is None:
        raise StepError("stop", f"no 'prediction log closed' line in the log:\n{log}")
    rows = int(match.group(1))
    _expect(
        rows == expected_rows,
        "stop",
        f"the prediction log wrote {rows} rows for {expected_rows} predictions",
    )
    print(f"stopped in {seconds:.1f} s, exit code 0, {match.group(0)}", flush=True)
    return {"stop_s": seconds, "exit_code": 0, "rows_logged": rows}


def _run_docs_commands(engine: Engine, tag: str) -> None:
    """The docs' Docker commands as written, but with container.sh for `docker`, this
    check's image for theirs (IMAGE=, `-t`, the image argument), and a free port (the
    engine shares the host's network, so `-p` does nothing: SERVING_PORT or PORT= sets
    it). A named volume gets a suffix, so that no volume of a user's is touched, and is
    removed afterwards. Each container the commands start must answer /ready, then the
    docs' curl commands with 2xx, and stop on Ctrl-C."""
    started = time.perf_counter()
    found = blocks(ROOT)
    curls = [
        command
        for block in found
        if block.kind == "server"
        for command in block.commands
        if command.simple_commands()[0].program == "curl"
    ]
    commands = [
        (block, command) for block in found if block.kind == "docker" for command in block.commands
    ]
    _expect(bool(commands and curls), "docs", "no docker-marked commands or no curl commands found")
    before = engine.podman("image", "inspect", "--format", "{{.Id}}", tag, step="docs")
    with tempfile.TemporaryDirectory(prefix="docs-check-") as scratch:
        curl_home = write_curlrc(Path(scratch))
        for block, command in commands:
            where = f"{block.page}:{command.line}"
            port = _free_port()
            argv, serves, volumes = _for_this_engine(command, engine, tag, port, where)
            shown = " ".join(argv)
            print(f"docs: {where}: {shown}", flush=True)
            try:
                if serves:
                    _serve_and_call(argv, port, curls, curl_home, where)
                else:
                    done = subprocess.run(
                        argv, cwd=ROOT, capture_output=True, text=True, check=False
                    )
                    output = (done.stdout + done.stderr).strip()[-3000:]
                    _expect(
                        done.returncode == 0,
                        "docs",
                        f"{where}: `{shown}` exited {done.returncode}\n{output}",
                    )
            finally:
                for container in engine.podman(
                    "ps", "-aq", "--filter", f"ancestor={tag}", check=False
                ).split():
                    engine.podman("rm", "-f", "-v", "-t", "0", container, check=False)
                for volume in volumes:
                    engine.podman("volume", "rm", "-f", volume, check=False)
    after = engine.podman("image", "inspect", "--format", "{{.Id}}", tag, step="docs")
    if after != before:
        engine.podman("rmi", before, check=False)  # the docs' build moved the tag
    seconds = time.perf_counter() - started
    print(
        f"docs: {len(commands)} Docker and {len(curls)} curl commands ok in {seconds:.1f} s",
        flush=True,
    )


def _for_this_engine(
    command: Command, engine: Engine, tag: str, port: int, where: str
) -> tuple[list[str], bool, list[str]]:
    """The command for this engine; whether it serves until stopped; the volumes it makes."""
    simple = command.simple_commands()
    _expect(len(simple) == 1 and not simple[0].env, "docs", f"{where}: one plain command per line")
    argv = simple[0].argv
    docker = ["bash", str(engine.script)]
    if argv[0] == "make":
        serves = "docker-run" in argv[1:]
        return [*argv, f"DOCKER={' '.join(docker)}", f"IMAGE={tag}", f"PORT={port}"], serves, []
    _expect(
        argv[:2] in (["docker", "build"], ["docker", "run"]),
        "docs",
        f"{where}: only make, docker build and docker run are translated",
    )
    words, volumes = list(argv[2:]), list[str]()
    if argv[1] == "build":
        words[words.index("-t") + 1] = tag
        return [*docker, "build", *words], False, volumes
    words[-1] = tag  # docker run [options] IMAGE
    for index, word in enumerate(words[:-1]):
        source, colon, target = word.partition(":")
        if words[index - 1] in {"-v", "--volume"} and colon and "/" not in source:
            volumes.append(f"{source}-check-{os.getpid()}")
            words[index] = f"{volumes[-1]}:{target}"
    return [*docker, "run", "-e", f"SERVING_PORT={port}", *words], True, volumes


def _serve_and_call(
    argv: list[str], port: int, curls: list[Command], curl_home: Path, where: str
) -> None:
    """Start a command that serves until Ctrl-C, call it with the docs' curls, stop it."""
    log = curl_home / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            argv, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            _expect(
                server.poll() is None, "docs", f"{where}: exited {server.returncode}:\n{_tail(log)}"
            )
            _expect(
                time.monotonic() < deadline, "docs", f"{where}: not ready in 120 s:\n{_tail(log)}"
            )
            try:
                if _request(f"{base}/ready", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        env = os.environ | {"CURL_HOME": str(curl_home)}
        for command in curls:
            text = with_ports(command.text, {SERVICE_PORT: port})
            done = subprocess.run(
                ["bash", "-c", text], cwd=ROOT, env=env, capture_output=True, text=True, check=False
            )
            problem = (
                curl_problem(command, done.stderr)
                if done.returncode == 0
                else f"exit {done.returncode}"
            )
            _expect(problem is None, "docs", f"{where}: `{text}`: {problem}\n{done.stderr[-1000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGINT)  # Ctrl-C, as in the terminal
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            code = server.wait()
    print(
        f"docs: {where}: ready, {len(curls)} curl commands answered 2xx, stopped ({code})",
        flush=True,
    )


def _tail(log: Path) -> str:
    return "".join(
        line
        for line in log.read_text(errors="replace").splitlines(keepends=True)[-30:]
        if not NOISE.search(line)
    )


def _report(figures: dict[str, Any]) -> None:
    record = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    build = f"build {figures['build_s']:.0f} s, " if "build_s" in figures else ""
    over = f" ({figures['over_base_mb']:.0f} MB over the base)" if "over_base_mb" in figures else ""
    print(
        f"\ntest-image: OK. {build}size {figures['size_mb']:.0f} MB{over}, "
        f"ready after {figures['ready_s']:.1f} s, stopped in {figures['stop_s']:.1f} s "
        f"(exit 0) -> {RESULTS.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    sys.exit(main())

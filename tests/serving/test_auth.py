"""API keys (serving/auth.py): every endpoint but /health follows the setting, a missing
or wrong key is a 401 with a challenge and no hint, two keys work side by side for a
rotation, a bad key setting stops the start-up without showing the key, and /docs
declares the scheme."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from fraud_detection.io.prediction_log import open_store
from serving.auth import CHALLENGE, REJECTED, ApiKeys
from serving.keys import HEADER, MIN_KEY_LENGTH, key_problem
from serving.settings import Settings, SettingsError, load_settings
from tests.serving.conftest import API_KEYS, AppFactory, ServedModel, Service

GUARDED = [
    ("GET", "/ready"),
    ("GET", "/model"),
    ("GET", "/metrics"),
    ("POST", "/predict"),
    ("POST", "/predict/batch"),
    ("POST", "/predict/split"),
]


@pytest.fixture
def keyed(make_app: AppFactory, tmp_path: Path) -> Iterator[TestClient]:
    key_file = tmp_path / "keys"
    key_file.write_text(f"{API_KEYS[1]}\n")
    with TestClient(make_app(api_keys=API_KEYS[0], api_keys_file=key_file)) as client:
        yield client


def body_for(path: str, served: ServedModel) -> object:
    row = served.legit_row
    if path == "/predict":
        return row
    if path == "/predict/batch":
        return {"transactions": [row]}
    return {"columns": list(row), "data": [list(row.values())]}


def call(client: TestClient, method: str, path: str, served: ServedModel, **kwargs: object):
    if method == "GET":
        return client.get(path, **kwargs)
    return client.post(path, json=body_for(path, served), **kwargs)


# --- the rule on each endpoint ------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), GUARDED)
@pytest.mark.parametrize("sent", [None, "wrong-key-but-long-enough", API_KEYS[0][:-1]])
def test_a_missing_or_wrong_key_is_a_401_with_a_challenge_and_no_hint(
    keyed: TestClient, served: ServedModel, method: str, path: str, sent: str | None
):
    headers = {HEADER: sent} if sent is not None else {}
    answer = call(keyed, method, path, served, headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.headers["WWW-Authenticate"] == CHALLENGE
    # Missing and wrong read the same, and nothing of what was sent comes back.
    assert answer.json()["detail"] == REJECTED
    assert sent is None or sent not in answer.text


@pytest.mark.parametrize(("method", "path"), GUARDED)
@pytest.mark.parametrize("key", API_KEYS)
def test_either_key_of_a_rotation_is_accepted(
    keyed: TestClient, served: ServedModel, method: str, path: str, key: str
):
    answer = call(keyed, method, path, served, headers={HEADER: key})
    assert answer.status_code == 200, answer.text


def test_health_needs_no_key(keyed: TestClient):
    assert keyed.get("/health").json() == {"status": "ok"}


def test_the_key_goes_in_its_header_only(keyed: TestClient, served: ServedModel):
    for headers in ({"Authorization": f"Bearer {API_KEYS[0]}"}, {"X-Api-Token": API_KEYS[0]}):
        assert keyed.post("/predict", json=served.legit_row, headers=headers).status_code == 401
    # Header names are case-insensitive, as HTTP says.
    lower = keyed.post("/predict", json=served.legit_row, headers={"x-api-key": API_KEYS[0]})
    assert lower.status_code == 200


def test_a_rejected_prediction_is_not_scored_nor_logged(
    make_app: AppFactory, served: ServedModel, tmp_path: Path
):
    log = tmp_path / "predictions.db"
    with TestClient(make_app(api_keys=API_KEYS[0], prediction_log=log)) as client:
        assert client.post("/predict", json=served.legit_row).status_code == 401
        assert client.post(
            "/predict", json=served.legit_row, headers={HEADER: API_KEYS[0]}
        ).is_success
    assert len(open_store(str(log)).read(None, None)) == 1  # the accepted one only


def test_without_keys_every_endpoint_is_open(client: TestClient, served: ServedModel):
    for method, path in GUARDED:
        assert call(client, method, path, served).status_code == 200, path


def test_no_model_and_no_key_is_a_401_before_the_503(make_app: AppFactory, tmp_path: Path):
    missing = tmp_path / "no-model-here"
    with TestClient(make_app(model_uri=str(missing), api_keys=API_KEYS[0])) as client:
        assert client.post("/predict", json={}).status_code == 401
        assert client.get("/ready").status_code == 401
        keyed = client.post("/predict", json={}, headers={HEADER: API_KEYS[0]})
        assert keyed.status_code == 503


def test_the_openapi_document_declares_the_scheme(keyed: TestClient):
    document = keyed.get("/openapi.json").json()
    scheme = document["components"]["securitySchemes"]["APIKey"]
    assert scheme == {
        "type": "apiKey",
        "in": "header",
        "name": HEADER,
        "description": scheme["description"],
    }
    paths = document["paths"]
    assert paths["/predict"]["post"]["security"] == [{"APIKey": []}]
    assert paths["/model"]["get"]["security"] == [{"APIKey": []}]
    assert "security" not in paths["/health"]["get"]


def test_without_keys_the_document_declares_none(client: TestClient):
    document = client.get("/openapi.json").json()
    assert "securitySchemes" not in document.get("components", {})


# --- the keys ---------------------------------------------------------------------------


def test_keys_are_kept_as_digests_and_never_shown():
    keys = ApiKeys(API_KEYS)
    assert len(keys) == 2
    assert all(key not in repr(keys) and key not in str(vars(keys)) for key in API_KEYS)
    assert keys.accepts(API_KEYS[0])
    assert not keys.accepts(API_KEYS[0] + "x")
    assert not keys.accepts("")
    assert not keys.accepts(None)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("x" * (MIN_KEY_LENGTH - 1), f"shorter than {MIN_KEY_LENGTH} characters"),
        ("with a space in it!", "a header cannot carry unchanged"),
        ("caf\u00e9-caf\u00e9-caf\u00e9-caf\u00e9", "a header cannot carry unchanged"),
    ],
)
def test_a_weak_or_unsendable_key_is_refused_without_being_shown(
    monkeypatch: pytest.MonkeyPatch, key: str, reason: str
):
    assert reason in (key_problem(key) or "")
    monkeypatch.setenv("SERVING_API_KEYS", f"{API_KEYS[0]},{key}")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith("invalid service settings:\n  SERVING_API_KEYS='***': ")
    assert reason in message
    assert "secrets.token_urlsafe" in message  # how to make a good one
    assert key not in message
    assert API_KEYS[0] not in message


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda path: None, "does not exist"),
        (lambda path: path.mkdir(), "is a folder"),
        (lambda path: path.write_text("# only a comment\n\n"), "holds no key"),
        (lambda path: path.write_bytes(b"\xff\xfe\x00"), "not UTF-8"),
    ],
)
def test_an_unusable_key_file_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, setup, reason: str
):
    path = tmp_path / "keys"
    setup(path)
    monkeypatch.setenv("SERVING_API_KEYS_FILE", str(path))
    with pytest.raises(SettingsError, match=f"SERVING_API_KEYS_FILE='{path}': .*{reason}"):
        load_settings()


def test_required_keys_that_are_missing_stop_the_start(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SERVING_REQUIRE_API_KEY", "true")
    with pytest.raises(SettingsError, match="SERVING_REQUIRE_API_KEY is true but no API key"):
        load_settings()
    monkeypatch.setenv("SERVING_API_KEYS", API_KEYS[0])
    assert load_settings().api_key_set() is not None


def test_keys_from_both_places_add_up(tmp_path: Path):
    path = tmp_path / "keys"
    path.write_text(f"{API_KEYS[1]}\n# a comment\n")
    keys = Settings(api_keys=API_KEYS[0], api_keys_file=path).api_key_set()
    assert keys is not None
    assert len(keys) == 2
    assert Settings().api_key_set() is None


# --- what the start-up says -------------------------------------------------------------


def test_open_on_a_network_address_is_a_warning(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO, logger="serving"), TestClient(make_app(host="0.0.0.0")):
        pass
    warning = [
        r for r in caplog.records if r.levelno == logging.WARNING and "API keys" in r.message
    ]
    assert warning, caplog.text
    assert "anyone who can reach port 8000" in warning[0].message
    assert "SERVING_API_KEYS_FILE" in warning[0].message


def test_the_start_up_counts_the_keys_and_shows_none(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
):
    with (
        caplog.at_level(logging.INFO, logger="serving"),
        TestClient(make_app(api_keys=",".join(API_KEYS))),
    ):
        pass
    assert "API keys: 2 accepted in the X-API-Key header" in caplog.text
    assert all(key not in caplog.text for key in API_KEYS)


# --- the real service -------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_service_checks_keys_and_logs_none(keyed_service: Service, served: ServedModel):
    url = keyed_service.url
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.post(f"{url}/predict", json=served.legit_row).status_code == 401
    for key in API_KEYS:  # one from SERVING_API_KEYS, one from SERVING_API_KEYS_FILE
        answer = httpx.post(f"{url}/predict", json=served.legit_row, headers={HEADER: key})
        assert answer.status_code == 200, answer.text
    output = keyed_service.output()
    assert "API keys: 2 accepted" in output
    assert all(key not in output for key in API_KEYS)


def test_a_path_nobody_listed_is_guarded_too(keyed: TestClient):
    # An allow-list of open paths: a route added later needs a key without anyone
    # remembering it, and a caller without one cannot even learn which paths exist.
    assert keyed.get("/no-such-route").status_code == 401
    assert keyed.get("/no-such-route", headers={HEADER: API_KEYS[0]}).status_code == 404
    assert keyed.get("/healthz").status_code == 401  # not /health


def test_the_pages_that_take_a_key_are_open(keyed: TestClient):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path
    page = keyed.get("/docs").text
    script = next(part.split('"')[0] for part in page.split('src="')[1:] if "static" in part)
    assert keyed.get(script).status_code == 200, script


def test_a_rejection_keeps_the_services_error_shape(keyed: TestClient, served: ServedModel):
    answer = keyed.post("/predict", json=served.legit_row, headers={"X-Request-ID": "abc-1"})
    assert answer.json() == {"detail": REJECTED, "request_id": "abc-1"}
    assert answer.headers["content-type"] == "application/json"


def test_a_rejection_is_counted_in_the_metrics(keyed: TestClient, served: ServedModel):
    keyed.post("/predict", json=served.legit_row)
    metrics = keyed.get("/metrics", headers={HEADER: API_KEYS[0]}).text
    assert any('status="401"' in line for line in metrics.splitlines()), metrics[:2000]

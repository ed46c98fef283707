"""Service settings from SERVING_* variables: defaults, parsing, and a message naming every
bad variable (with a did-you-mean for typos)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.settings import DEFAULT_MODEL_URI, Settings, SettingsError, load_settings


def settings_error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("invalid service settings:\n  ")
    return message


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.model_uri == DEFAULT_MODEL_URI == "models:/fraud-detector@champion"
    assert settings.tracking_uri is None
    assert settings.prediction_log == "logs/predictions.db"
    assert (settings.log_commit, settings.log_timeout_seconds) == ("before_answer", 5.0)
    assert settings.max_batch_rows == 10_000
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.log_level == "info"
    assert settings.access_log is False


def test_values_from_the_environment(monkeypatch, tmp_path):
    variables = {
        "SERVING_MODEL_URI": str(tmp_path / "model"),
        "SERVING_TRACKING_URI": "http://mlflow:5000",
        "SERVING_PREDICTION_LOG": str(tmp_path / "new" / "log.db"),
        "SERVING_MAX_BATCH_ROWS": "250",
        "SERVING_HOST": "0.0.0.0",
        "SERVING_PORT": "9001",
        "SERVING_WORKERS": "4",
        "SERVING_LOG_LEVEL": "DEBUG",
        "SERVING_ACCESS_LOG": "true",
        "SERVING_LOG_COMMIT": "background",
        "SERVING_LOG_TIMEOUT_SECONDS": "0.5",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.model_uri == str(tmp_path / "model")
    assert settings.tracking_uri == "http://mlflow:5000"
    assert settings.prediction_log == str(tmp_path / "new" / "log.db")
    assert settings.max_batch_rows == 250
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 9001, 4)
    assert settings.log_level == "debug"
    assert settings.access_log is True
    assert (settings.log_commit, settings.log_timeout_seconds) == ("background", 0.5)


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("SERVING_PORT", "0", "greater than or equal to 1"),
        ("SERVING_PORT", "65536", "less than or equal to 65535"),
        ("SERVING_PORT", "eighty", "valid integer"),
        ("SERVING_PORT", "80.5", "valid integer"),
        ("SERVING_WORKERS", "0", "greater than or equal to 1"),
        ("SERVING_WORKERS", "65", "less than or equal to 64"),
        ("SERVING_WORKERS", "two", "valid integer"),
        ("SERVING_MAX_BATCH_ROWS", "0", "greater than or equal to 1"),
        ("SERVING_LOG_LEVEL", "verbose", "'critical', 'error', 'warning', 'info' or 'debug'"),
        ("SERVING_ACCESS_LOG", "maybe", "valid boolean"),
        ("SERVING_MODEL_URI", "", "at least 1 character"),
        ("SERVING_HOST", "", "at least 1 character"),
        ("SERVING_LOG_COMMIT", "later", "'before_answer' or 'background'"),
        ("SERVING_LOG_TIMEOUT_SECONDS", "0", "greater than 0"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_value(monkeypatch, variable, value, reason):
    message = settings_error(monkeypatch, **{variable: value})
    assert f"{variable}={value!r}: " in message
    assert reason in message


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("SERVING_MODLE_URI", "SERVING_MODEL_URI"),
        ("SERVING_PROT", "SERVING_PORT"),
        ("SERVING_WORKER", "SERVING_WORKERS"),
        ("SERVING_MAX_BATCH_SIZE", "SERVING_MAX_BATCH_ROWS"),
    ],
)
def test_an_unknown_variable_gets_a_did_you_mean(monkeypatch, typo, meant):
    message = settings_error(monkeypatch, **{typo: "1"})
    assert f"{typo} is not a setting (did you mean {meant}?)" in message


def test_the_shared_prefix_does_not_make_every_name_close(monkeypatch):
    message = settings_error(monkeypatch, SERVING_XYZZY="1")
    assert "SERVING_XYZZY is not a setting; known:" in message
    assert "did you mean" not in message


def test_an_unknown_variable_with_no_close_match_lists_the_known_ones(monkeypatch):
    message = settings_error(monkeypatch, SERVING_SOMETHING_ELSE_ENTIRELY="1")
    assert "SERVING_SOMETHING_ELSE_ENTIRELY is not a setting; known: SERVING_MODEL_URI, " in message
    assert "SERVING_ACCESS_LOG" in message


def test_every_problem_is_reported_at_once(monkeypatch):
    message = settings_error(
        monkeypatch, SERVING_PORT="-1", SERVING_WORKERS="0", SERVING_MODLE_URI="x"
    )
    lines = message.splitlines()[1:]
    assert len(lines) == 3
    assert any(line.strip().startswith("SERVING_PORT='-1'") for line in lines)
    assert any(line.strip().startswith("SERVING_WORKERS='0'") for line in lines)
    assert any("did you mean SERVING_MODEL_URI?" in line for line in lines)


def test_other_variables_are_ignored(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SERVINGS", "1")
    monkeypatch.setenv("MY_SERVING_PORT", "0")
    assert load_settings().port == 8000


def test_a_log_under_a_file_is_refused(monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("x")
    message = settings_error(monkeypatch, SERVING_PREDICTION_LOG=str(tmp_path / "a-file" / "p.db"))
    assert f"SERVING_PREDICTION_LOG='{tmp_path / 'a-file' / 'p.db'}'" in message
    assert f"cannot create or write the folder {tmp_path / 'a-file'}" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_log_folder_is_refused(monkeypatch, tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        message = settings_error(monkeypatch, SERVING_PREDICTION_LOG=str(folder / "sub" / "p.db"))
    finally:
        folder.chmod(0o700)
    assert "cannot create or write the folder" in message


def test_a_log_path_that_is_a_folder_is_refused(monkeypatch, tmp_path):
    message = settings_error(monkeypatch, SERVING_PREDICTION_LOG=str(tmp_path))
    assert f"{tmp_path} exists and is not a file" in message


def test_a_log_folder_that_does_not_exist_yet_is_fine(tmp_path):
    # A Path is accepted, and kept as text like a URL.
    settings = Settings(prediction_log=tmp_path / "a" / "b" / "p.db")
    assert settings.prediction_log == str(tmp_path / "a" / "b" / "p.db")
    assert not (tmp_path / "a").exists()  # made when the service starts, not here


def test_settings_are_frozen(tmp_path):
    settings = Settings(prediction_log=tmp_path / "p.db")
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]


def test_arguments_win_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SERVING_PORT", "9999")
    assert Settings(port=1234, prediction_log=tmp_path / "p.db").port == 1234


def test_a_postgresql_log_is_accepted_without_reaching_the_server():
    # Nothing listens there: the server is reached at start-up, not when settings load.
    url = "postgresql://fraud:secret@127.0.0.1:1/predictions"
    assert Settings(prediction_log=url).prediction_log == url


def test_a_log_url_of_another_scheme_is_refused_without_its_password(monkeypatch):
    message = settings_error(monkeypatch, SERVING_PREDICTION_LOG="mysql://fraud:secret@db/log")
    assert "SERVING_PREDICTION_LOG='mysql://fraud:***@db/log'" in message
    assert "a prediction log is a SQLite file" in message
    assert "secret" not in message


def test_a_prediction_log_url_with_a_bad_port_stops_the_service_naming_it(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SERVING_PREDICTION_LOG", "postgresql://u:hunter2@db:54x2/predictions")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "SERVING_PREDICTION_LOG='postgresql://u:***@db:54x2/predictions'" in message
    assert "the port is not a number" in message
    assert "hunter2" not in message


def test_the_readme_lists_every_setting():
    """The README's table of SERVING_* variables and the settings model agree."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| `SERVING_")]
    listed = {
        name for row in rows for name in re.findall(r"`(SERVING_[A-Z_]+)`", row.split("|")[1])
    }
    assert listed == {f"SERVING_{name.upper()}" for name in Settings.model_fields}

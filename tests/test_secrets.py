"""Secrets stay out of the repository and the image: the committed DVC config holds no
credentials, the files that hold them are git-ignored and outside the Docker build
context, and no tracked file holds a value in the stack's generated formats. (The
pipeline and the service with canary secrets, grepped: tests/stack/test_teammate.py.)"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

import configobj
import pytest

REPO = Path(__file__).resolve().parents[1]
# DVC's remote options that hold a credential (S3, Azure, GCS, HTTP, SSH, WebDAV, OSS...):
# each belongs in .dvc/config.local (`dvc remote modify --local`) or the environment.
CREDENTIAL_OPTIONS = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "password",
        "ask_password",
        "passphrase",
        "token",
        "account_key",
        "sas_token",
        "connection_string",
        "client_secret",
        "gdrive_client_secret",
        "custom_auth_header",
        "oss_key_id",
        "oss_key_secret",
    }
)
# Where secrets live on a developer's machine: never committed, never in the image.
SECRET_PLACES = (
    ".env",
    ".stack/",
    ".stack/secrets.env",
    ".stack/run/api-keys",
    ".dvc/config.local",
    ".dvc/tmp/",
)
# Names of files that hold secrets: .env files, the stack's and DVC's, keys.
SECRET_NAMES = re.compile(r"(^|/)([^/]*\.env|config\.local|api-keys|[^/]*\.(pem|key|p12))$")
# The formats stack/settings.py generates (load_secrets): the S3 access key, and the
# 48 hex digits of every other secret (secrets.token_hex(24)). Bounded by what cannot
# continue the value, so a longer hash (uv.lock's 64-digit sha256s) does not match.
GENERATED = re.compile(rb"(?<![0-9A-Za-z])(STACK[0-9A-F]{16}|[0-9a-f]{48})(?![0-9A-Za-z])")


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=check, timeout=60
    )


@pytest.fixture(scope="module", autouse=True)
def in_a_clone() -> None:
    if git("rev-parse", "--is-inside-work-tree", check=False).returncode != 0:
        pytest.skip("not a git clone: these tests read what git tracks and ignores")


def ignored(path: str) -> bool:
    """git ignores ``path`` (it need not exist); --no-index: even were it tracked."""
    return git("check-ignore", "-q", "--no-index", path, check=False).returncode == 0


def test_the_committed_dvc_config_holds_no_credentials() -> None:
    assert git("ls-files", "--error-unmatch", ".dvc/config", check=False).returncode == 0
    # DVC reads its config with configobj (indented keys, which configparser misreads).
    config = configobj.ConfigObj(str(REPO / ".dvc/config"))
    options = {
        (section, option.lower()) for section in config.sections for option in config[section]
    }
    assert options, "no option read: the test would pass on any file"
    assert not {(s, o) for s, o in options if o in CREDENTIAL_OPTIONS}
    assert ("core", "remote") in options


@pytest.mark.parametrize("place", SECRET_PLACES)
def test_where_secrets_live_is_git_ignored(place: str) -> None:
    assert ignored(place), f"{place} is not git-ignored"
    assert not git("ls-files", "--", place).stdout, f"{place} is tracked"


def test_ignoring_is_checked_for_real() -> None:
    """The control: a tracked file is not reported as ignored."""
    assert not ignored(".dvc/config")
    assert not ignored("deploy/compose/example.env")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (excludes, pattern), in order: the last rule that matches a path
    (or one of its parent folders) decides, as Docker's own matcher does."""
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((excludes, re.compile(_glob_regex(pattern))))
    return rules


def _glob_regex(pattern: str) -> str:
    """Docker's glob (Go's filepath.Match, plus **) as a regular expression."""
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return f"^{out}$"


def in_build_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, pattern in rules:
        if any(pattern.match(prefix) for prefix in prefixes):
            excluded = excludes
    return not excluded


def test_the_build_context_leaves_out_every_place_secrets_live() -> None:
    rules = dockerignore_rules()
    # The control: what the Dockerfile copies is in the context.
    for kept in ("pyproject.toml", "uv.lock", "src/fraud_detection/__init__.py", "build/model/x"):
        assert in_build_context(kept, rules), kept
    for place in (
        *SECRET_PLACES,
        ".stack/postgres/data/pg_hba.conf",
        ".dvc/config",
        "build/audit/pylock.toml",
        "deploy/compose/example.env",
        "deploy/kubernetes/secret.example.yaml",
        ".git/config",
        "mlflow.db",
        "logs/predictions.db",
        "tests/stack/leaks.py",
    ):
        assert not in_build_context(place.rstrip("/"), rules), place


def test_the_build_context_holds_no_git_ignored_file_but_the_exported_model() -> None:
    """What this working tree would send to `docker build`: a file git ignores there (a
    secret someone left beside the code) would land in the image."""
    rules = dockerignore_rules()
    context = []
    for folder, names, files in os.walk(REPO):
        relative = Path(folder).relative_to(REPO).as_posix()
        prefix = "" if relative == "." else f"{relative}/"
        # Not into excluded folders: the allow-list excludes the root's, .venv's included.
        names[:] = [n for n in names if in_build_context(f"{prefix}{n}", rules) or n == "build"]
        context += [f"{prefix}{n}" for n in files if in_build_context(f"{prefix}{n}", rules)]
    assert "pyproject.toml" in context
    shipped = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=REPO,
        input="\n".join(p for p in context if not p.startswith("build/model/")),
        capture_output=True,
        text=True,
        check=False,
    )
    assert shipped.returncode in (0, 1), shipped.stderr  # 1: none ignored
    assert not shipped.stdout.split(), shipped.stdout
    # Nor one named as secrets are (a .env beside the code is not ignored: /.env is).
    assert not [p for p in context if SECRET_NAMES.search(p)]


def test_no_tracked_file_holds_a_generated_secret() -> None:
    tracked = git("ls-files", "-z").stdout.split("\0")
    read = 0
    found = []
    for name in filter(None, tracked):
        path = REPO / name
        if path.is_symlink() or not path.is_file():  # deleted in this working tree
            continue
        data = path.read_bytes()
        read += 1
        for match in GENERATED.finditer(data):
            line = data.count(b"\n", 0, match.start()) + 1
            found.append(f"{name}:{line}: {match.group()[:5].decode()}...")
    assert read > 100, "almost nothing read: the test would pass on any tree"
    assert not found, "values in the stack's secret formats:\n" + "\n".join(found)


def test_the_formats_are_those_the_stack_generates() -> None:
    """The control: the pattern matches what load_secrets makes, in a line as a file
    would hold it, and not a longer hash."""
    access = b"STACK" + secrets.token_hex(8).upper().encode()
    password = secrets.token_hex(24).encode()
    for value in (access, password):
        assert GENERATED.search(b"KEY=" + value + b"\n"), value
    assert not GENERATED.search(secrets.token_hex(32).encode())  # a sha256

"""API keys as the settings hold them: their format, where they are read from, what makes
one unusable. Standard library only: the readiness probe (serving/probe.py) reads the
same keys in a process that starts every few seconds. The check itself is serving/auth.py."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = "X-API-Key"
# 16 characters: a key that short from `secrets.token_urlsafe` still carries 96 bits.
MIN_KEY_LENGTH = 16
# What a header value can carry unchanged (no spaces, no commas: the lists' separator).
_KEY = re.compile(r"[!-+\--~]+")
NEW_KEY_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an API key, or None. Says nothing of the key itself (not
    even its length)."""
    if len(key) < MIN_KEY_LENGTH:
        return f"a key is shorter than {MIN_KEY_LENGTH} characters; {NEW_KEY_HINT}"
    if not _KEY.fullmatch(key):
        return (
            "a key holds a character a header cannot carry unchanged (a space, a comma or "
            f"a non-ASCII character); {NEW_KEY_HINT}"
        )
    return None


def parse_keys(text: str) -> list[str]:
    """Keys separated by commas or line ends (blanks around them ignored); a line that
    starts with # is a comment. SERVING_API_KEYS and the key file read alike, so a file
    made from a variable (a compose secret) holds the same list."""
    lines = (line.strip() for line in text.splitlines())
    kept = (line for line in lines if not line.startswith("#"))
    return [key.strip() for line in kept for key in line.split(",") if key.strip()]


def configured_keys(inline: str | None, file: Path | None) -> list[str]:
    """The keys of SERVING_API_KEYS, then those of SERVING_API_KEYS_FILE: both count."""
    return parse_keys(inline or "") + (read_key_file(file) if file is not None else [])


def read_key_file(path: Path) -> list[str]:
    """The keys in ``path`` (see parse_keys); a ValueError says why there are none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a file of keys") from None
    except PermissionError:
        raise ValueError(f"{path} is not readable by this user") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text (one key a line)") from None
    keys = parse_keys(text)
    if not keys:
        raise ValueError(f"{path} holds no key (one a line; # starts a comment)")
    return keys

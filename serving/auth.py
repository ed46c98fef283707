"""API-key authentication: which callers may use the service (docs/security.md).

Keys come from SERVING_API_KEYS and SERVING_API_KEYS_FILE (serving/keys.py reads both);
several may be valid at once so that one can be rotated without an outage. A caller
sends one in the X-API-Key header. With no key configured the check is off, which
`make serve` on loopback is by default; SERVING_REQUIRE_API_KEY=true (compose.yaml,
deploy/kubernetes) makes a missing key a start-up error instead of an open service.

The check is a pure ASGI middleware in front of the routes, not a FastAPI dependency on
them: a dependency cost a one-row prediction about 50 µs here (FastAPI resolves it per
request), the middleware a few (docs/security.md has the figures). Every path is guarded
but the few in OPEN_PATHS, so a route added later needs a key without anyone having to
remember it. The OpenAPI document declares the scheme (declare_in_openapi), so /docs shows
"Authorize" and sends the header with "Try it out".

Only SHA-256 digests of the keys are kept: a key cannot end up in a log line, a
traceback or /model through this object, and comparing digests of fixed length with
hmac.compare_digest takes the same time whatever the caller sent. Every key is compared
on every request, so the time does not tell which key (or whether any) matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.errors import problem
from serving.keys import HEADER

# Open whatever the setting: the liveness probe (probes hold no key) and the pages that
# let a user enter one (/docs, /redoc, the document and their bundled scripts).
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPEN_PREFIXES = ("/static-offline-docs/",)
SCHEME = "APIKey"
_HEADER_NAME = HEADER.lower().encode("latin-1")
# Every rejection reads the same, missing key or wrong key: nothing that helps guessing.
REJECTED = f"missing or invalid API key: send a valid key in the {HEADER} header"
# RFC 9110 wants a challenge with a 401. There is no registered scheme for API keys; this
# names the header, as FastAPI's own APIKeyHeader challenge ("APIKey") does not.
CHALLENGE = f'APIKey header="{HEADER}"'


class ApiKeys:
    """The accepted keys, as digests."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key) for key in keys)
        if not self._digests:
            raise ValueError("ApiKeys needs at least one key")

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self)} key(s))"

    def accepts(self, presented: str | bytes | None) -> bool:
        if presented is None:
            return False
        digest = _digest(presented)
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched


def _digest(key: str | bytes) -> bytes:
    # Header values are bytes; a key from the settings is ASCII (serving/keys.py).
    raw = key if isinstance(key, bytes) else key.encode("latin-1", errors="replace")
    return hashlib.sha256(raw).digest()


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class ApiKeyMiddleware:
    """401 for every request to a guarded path that does not carry one of ``keys``."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]) or self._carries_a_key(scope):
            await self.app(scope, receive, send)
            return
        # In the service's error shape, made where every other error body is made.
        rejection = problem(401, REJECTED, Request(scope))
        rejection.headers["WWW-Authenticate"] = CHALLENGE
        await rejection(scope, receive, send)

    def _carries_a_key(self, scope: Scope) -> bool:
        return self.keys.accepts(_header(scope, _HEADER_NAME))


def _header(scope: Scope, name: bytes) -> bytes | None:
    # ASGI gives header names lower-cased; the first one sent counts.
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def declare_in_openapi(document: dict[str, Any]) -> None:
    """The scheme, and on every guarded operation its requirement and its 401."""
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "apiKey",
        "in": "header",
        "name": HEADER,
        "description": "One of the service's API keys (SERVING_API_KEYS or SERVING_API_KEYS_FILE).",
    }
    unauthorized = {
        "description": f"Missing or invalid API key (the {HEADER} header)",
        "headers": {
            "WWW-Authenticate": {
                "description": f"The challenge: {CHALLENGE}",
                "schema": {"type": "string"},
            }
        },
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for path, operations in document.get("paths", {}).items():
        if is_open(path):
            continue
        for operation in operations.values():
            operation["security"] = [{SCHEME: []}]
            operation.setdefault("responses", {})["401"] = unauthorized

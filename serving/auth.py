"""API-key authentication: which callers may use the service (docs/security.md).

Keys come from SERVING_API_KEYS (comma-separated) and SERVING_API_KEYS_FILE (one a line,
the form a Kubernetes Secret or a Docker secret is mounted in); several may be valid at
once so that one can be rotated without an outage. A caller sends one in the X-API-Key
header. With no key configured the check is off, which `make serve` on loopback is by
default; SERVING_REQUIRE_API_KEY=true (compose.yaml, deploy/kubernetes) makes a missing
key a start-up error instead of an open service.

Only SHA-256 digests of the keys are kept: a key cannot end up in a log line, a
traceback or /model through this object, and comparing digests of fixed length with
hmac.compare_digest takes the same time whatever the caller sent. Every key is compared
on every request, so the time does not tell which key (or whether any) matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader

from serving.keys import HEADER

# Every rejection reads the same, missing key or wrong key: nothing that helps guessing.
REJECTED = f"missing or invalid API key: send a valid key in the {HEADER} header"
# RFC 9110 wants a challenge with a 401. There is no registered scheme for API keys; this
# names the header, as FastAPI's own APIKeyHeader challenge ("APIKey") does not.
CHALLENGE = f'APIKey header="{HEADER}"'

# Declares the scheme in the OpenAPI document: /docs shows "Authorize" and sends the
# header with "Try it out". auto_error=False: the rejection below is the only one.
_SCHEME = APIKeyHeader(
    name=HEADER,
    scheme_name="APIKey",
    description="One of the service's API keys (SERVING_API_KEYS or SERVING_API_KEYS_FILE).",
    auto_error=False,
)


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

    def accepts(self, presented: str | None) -> bool:
        if presented is None:
            return False
        digest = _digest(presented)
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched


def _digest(key: str) -> bytes:
    # Starlette decodes header values as latin-1: encoding back gives the bytes sent.
    return hashlib.sha256(key.encode("latin-1", errors="replace")).digest()


def unauthorized_response(problem: type[Any]) -> dict[int | str, dict[str, Any]]:
    """The 401 as the OpenAPI document lists it on every guarded operation."""
    return {
        401: {
            "model": problem,
            "description": f"Missing or invalid API key (the {HEADER} header)",
            "headers": {
                "WWW-Authenticate": {
                    "description": f"The challenge: {CHALLENGE}",
                    "schema": {"type": "string"},
                }
            },
        }
    }


def require_api_key(keys: ApiKeys) -> Callable[[str | None], Awaitable[None]]:
    """The dependency that guards a router: 401 unless the request carries one of ``keys``."""

    async def check(presented: str | None = Security(_SCHEME)) -> None:
        if not keys.accepts(presented):
            raise HTTPException(401, REJECTED, headers={"WWW-Authenticate": CHALLENGE})

    return check

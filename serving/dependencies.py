"""What endpoints depend on, overridable in tests (app.dependency_overrides).

All are ``async def``: FastAPI runs plain ``def`` dependencies in a worker thread, and
those hops cost more than a prediction. The prediction endpoints read the service's
state directly (each dependency costs FastAPI tens of microseconds per request).
"""

from __future__ import annotations

import os
import random
import re

from fastapi import HTTPException, Request

from serving.model import LoadedModel
from serving.state import request_state

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


async def get_model(request: Request) -> LoadedModel:
    state = request_state(request)
    if state.model is None:
        raise HTTPException(503, f"no model loaded: {state.model_error}")
    return state.model


def request_id(request: Request) -> str:
    """The caller's X-Request-ID when it is a sensible token, else a new one."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else _new_ids.next()


class _RequestIds:
    """Random 128-bit ids from a generator seeded once per process from the OS.

    uuid4() reads os.urandom on every call: 0.3 ms in this sandbox, as much as a
    prediction. A seeded Mersenne Twister gives ids as unique as uuid4's for this use
    (not secrets: request ids are public).
    """

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))

    def next(self) -> str:
        return f"{self._random.getrandbits(128):032x}"


_new_ids = _RequestIds()


def check_json_content_type(request: Request) -> None:
    """415 unless the body is declared as JSON (application/json or a +json type)."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(
            415,
            f"send the body as JSON with 'Content-Type: application/json' "
            f"(got {content_type or 'no content type'!r})",
        )

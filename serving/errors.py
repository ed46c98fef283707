"""Error bodies. Every 4xx says what is wrong, and none echoes the request back: the
default 422 handler does, and a NaN in the input then makes it fail with a 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger("serving.errors")
_MAX_LISTED = 20  # a bad 10,000-row batch must not answer with 150,000 messages


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _server_error)


def problem(status: int, detail: str, request: Request, **extra: Any) -> JSONResponse:
    body = {"detail": detail, **extra, "request_id": request.headers.get("x-request-id")}
    return JSONResponse(body, status_code=status)


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    issues = [_describe(issue) for issue in error.errors()]
    malformed = any(issue["type"] == "json_invalid" for issue in issues)
    summary = "; ".join(f"{issue['field']}: {issue['message']}" for issue in issues[:3])
    more = f" (and {len(issues) - 3} more)" if len(issues) > 3 else ""
    detail = ("malformed JSON: " if malformed else "invalid request: ") + summary + more
    return problem(400 if malformed else 422, detail, request, errors=issues[:_MAX_LISTED])


def _describe(issue: Any) -> dict[str, str]:
    location = [part for part in issue.get("loc", ()) if part != "body"]
    message = str(issue.get("msg", "invalid"))
    if issue.get("type") == "json_invalid":
        reason = (issue.get("ctx") or {}).get("error", "")
        at = f" at character {location[0]}" if location else ""
        return {"field": "body", "message": f"{reason}{at}".strip(), "type": "json_invalid"}
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location)
    return {"field": field.lstrip(".") or "body", "message": message, "type": str(issue["type"])}


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    response = problem(error.status_code, str(error.detail), request)
    for name, value in (error.headers or {}).items():
        response.headers[name] = value
    return response


async def _server_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "internal error; the service log has the details", request)

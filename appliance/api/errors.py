"""Every error of the API is JSON with a message, in OpenAI's shape (Anthropic's on /v1/messages); never a
stack trace."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

log = logging.getLogger("appliance.api")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
          415: "invalid_request_error", 422: "invalid_request_error", 503: "busy"}
# Anthropic's error types, which its clients (the `anthropic` package maps statuses to exception classes) expect.
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
                    415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
                    503: "overloaded_error"}
ANTHROPIC_PATH = "/v1/messages"


def anthropic_path(path: str) -> bool:
    """Whether errors on this path take Anthropic's shape (the Messages API, appliance/api/anthropic_compat.py)."""
    return path == ANTHROPIC_PATH or path.startswith(ANTHROPIC_PATH + "/")


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or _TYPES.get(status, "server_error")
        self.headers = headers

    def body(self, path: str = "") -> dict[str, Any]:
        """The JSON of the error, in the shape the clients of `path` read."""
        if anthropic_path(path):
            return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(self.status, "api_error"),
                                               "message": self.message}}
        return {"error": {"message": self.message, "type": self.kind, "code": self.status}}


def internal_error(context: str) -> ApiError:
    """Log the exception being handled under a reference; the client gets only the reference."""
    ref = uuid.uuid4().hex[:12]
    log.exception("%s (reference %s)", context, ref)
    return ApiError(500, f"internal error (reference {ref}; details are in the server log)")


def domain_errors() -> tuple[type[Exception], ...]:
    """What the use cases refuse with, whatever the channel (the page shows the same as a message)."""
    from appliance.access.limits import RateLimited
    from appliance.rag import QuestionTooLong
    from appliance.uploads import UploadRefused

    return UploadRefused, RateLimited, QuestionTooLong


def from_domain(exc: Exception) -> ApiError:
    """The HTTP answer to one of domain_errors()."""
    from appliance.access.limits import RateLimited
    from appliance.uploads import UploadRefused

    if isinstance(exc, UploadRefused):
        return ApiError(exc.status, exc.message)
    if isinstance(exc, RateLimited):
        return ApiError(429, exc.message, headers={"Retry-After": str(exc.retry_after)})
    return ApiError(400, str(exc))  # QuestionTooLong


def _response(exc: ApiError, request: Request) -> JSONResponse:
    from fastapi.responses import JSONResponse

    return JSONResponse(exc.body(request.url.path), status_code=exc.status, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _response(exc, request)

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        return _response(from_domain(exc), request)

    for domain_error in domain_errors():
        app.add_exception_handler(domain_error, refused)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors()[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            problems.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        # Anthropic's API answers a malformed body with 400 (its clients raise BadRequestError).
        status = 400 if anthropic_path(request.url.path) else 422
        return _response(ApiError(status, "invalid request: " + "; ".join(problems)), request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return _response(ApiError(exc.status_code, message, headers=getattr(exc, "headers", None)), request)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return _response(internal_error(f"unhandled error on {request.method} {request.url.path}"), request)

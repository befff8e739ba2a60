"""One error shape for every failure of the API: `{"error": {code, reason, message, retryable, field}}`.

`code` is the HTTP status, `reason` a stable word a client can switch on (unauthenticated, forbidden, not_found,
invalid, conflict, ...), `message` a sentence for people, `field` the request field at fault (validation).
An unexpected exception is a 500 that says nothing of its cause (the log has it)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from pgaasctl.errors import PgaasError

log = logging.getLogger("pgaasctl.api")

REASONS = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
           409: "conflict", 411: "length_required", 412: "precondition_failed", 413: "too_large", 415: "unsupported_media_type",
           422: "invalid", 429: "too_many_requests", 500: "internal", 503: "unavailable"}


class ErrorDetail(BaseModel):
    code: int
    reason: str
    message: str
    retryable: bool = False
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in ((400, "Malformed request, or refused by the planner"), (401, "No valid credentials"),
                              (403, "Not allowed"), (404, "Not found"),
                              (409, "Conflict: another operation, or the object's state"), (422, "Invalid request"))
}


GONE_ALREADY: dict[int | str, dict[str, Any]] = {204: {"description": "Already gone: nothing to do"}}


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None, retryable: bool = False,
                 field: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.detail = ErrorDetail(code=code, reason=reason or REASONS.get(code, "error"), message=message,
                                  retryable=retryable, field=field)
        self.headers = headers


def unauthenticated(message: str = "Sign in: send `Authorization: Bearer <token>` (`pgaasctl token create`).") -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} does not exist")


def said(exc: PgaasError) -> str:
    """The error and its hint as one line of a response."""
    if not exc.hint:
        return exc.message
    return f"{exc.message}{'' if exc.message.endswith(('.', ':', '?', '!')) else '.'} {exc.hint}"


def reply(error: ApiError) -> JSONResponse:
    return _reply(error.detail, error.headers)


def _reply(detail: ErrorDetail, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=detail).model_dump(), status_code=detail.code, headers=headers)


def _field(location: Any) -> str | None:
    """'body.settings.work_mem' from pydantic's location, without the leading 'body' or 'query'."""
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _reply(exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else REASONS.get(exc.status_code, "error")
        if exc.status_code == 404 and message == "Not Found":
            message = "no such path: see /docs for the API"
        return _reply(ErrorDetail(code=exc.status_code, reason=REASONS.get(exc.status_code, "error"), message=message),
                      dict(exc.headers) if exc.headers else None)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = _field(first.get("loc", ()))
        message = str(first.get("msg", "the request is not valid"))
        return _reply(ErrorDetail(code=422, reason="invalid", message=f"{field}: {message}" if field else message,
                                  field=field))

    @app.exception_handler(PgaasError)
    async def refused(_: Request, exc: PgaasError) -> JSONResponse:
        return _reply(ErrorDetail(code=400, reason="bad_request", message=said(exc)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return _reply(ErrorDetail(code=500, reason="internal", message="the server failed; its log says why",
                                  retryable=True))

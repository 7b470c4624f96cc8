"""Typed service errors, the one table mapping them to HTTP, and the one JSON error envelope."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.schemas import ErrorResponse

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of every error the API reports on purpose; ``code`` is stable, ``message`` is for people."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    # Response headers every error of the class carries.
    headers: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class EmptyPayload(ServiceError):
    code, status = "empty_payload", 400


class InvalidMultipart(ServiceError):
    code, status = "invalid_multipart", 400


class MalformedRequest(ServiceError):
    """Answered by the HTTP server itself (service.server) when a request cannot be parsed as HTTP."""

    code, status = "malformed_request", 400


class Unauthorized(ServiceError):
    code, status = "unauthorized", 401
    headers = (("WWW-Authenticate", "Bearer"),)  # RFC 9110 §15.5.2: a 401 names its scheme


class Forbidden(ServiceError):
    code, status = "forbidden", 403


class RequestTimeout(ServiceError):
    code, status = "request_timeout", 408
    # The rest of the body may still arrive: the connection cannot carry another request (RFC 9110 §15.5.9).
    headers = (("Connection", "close"),)


class PayloadTooLarge(ServiceError):
    code, status = "payload_too_large", 413


class UnsupportedMediaType(ServiceError):
    code, status = "unsupported_media_type", 415


class InvalidImage(ServiceError):
    code, status = "invalid_image", 422


class ImageTooLarge(ServiceError):
    code, status = "image_too_large", 422


class InvalidVideo(ServiceError):
    code, status = "invalid_video", 422


class VideoTooLong(ServiceError):
    code, status = "video_too_long", 422


class VideoTooLarge(ServiceError):
    code, status = "video_too_large", 422


class ModelNotFound(ServiceError):
    code, status = "model_not_found", 404


class ModelTaskMismatch(ServiceError):
    code, status = "model_task_mismatch", 422


class TooManyPrompts(ServiceError):
    code, status = "too_many_prompts", 422


class InvalidPrompt(ServiceError):
    """A caller prompt that is empty, only whitespace, or longer than FER_TEXT_MAX_PROMPT_CHARS."""

    code, status = "invalid_prompt", 422


class Overloaded(ServiceError):
    code, status = "overloaded", 429


class InferenceUnavailable(ServiceError):
    code, status = "inference_unavailable", 503


class InferenceTimeout(ServiceError):
    code, status = "inference_timeout", 504


class InferenceFailed(ServiceError):
    code, status = "inference_failed", 502


# The one table: every error class the API can answer with, for handlers and OpenAPI alike.
ERROR_TABLE: tuple[type[ServiceError], ...] = (
    EmptyPayload,
    InvalidMultipart,
    MalformedRequest,
    Unauthorized,
    Forbidden,
    RequestTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidImage,
    ImageTooLarge,
    InvalidVideo,
    VideoTooLong,
    VideoTooLarge,
    ModelNotFound,
    ModelTaskMismatch,
    TooManyPrompts,
    InvalidPrompt,
    Overloaded,
    InferenceUnavailable,
    InferenceTimeout,
    InferenceFailed,
)

_STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed"}

# nginx's "client closed request": never seen by the client, it labels the request in metrics and logs.
CLIENT_CLOSED_REQUEST = 499


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(error: ServiceError) -> JSONResponse:
    headers = dict(error.headers)
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    return JSONResponse(error_body(error.code, error.message), status_code=error.status, headers=headers)


async def _service_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.status >= 500:
        logger.warning("request failed: %s (%s)", exc.code, exc.message)
    return error_response(exc)


async def _validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
    return JSONResponse(error_body("invalid_request", message), status_code=422)


async def _http_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STARLETTE_CODES.get(exc.status_code, "http_error")
    # Keep Starlette's headers: a 405 must say which methods are allowed (RFC 9110 `Allow`).
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


async def _client_disconnect_handler(_: Request, exc: Exception) -> Response:
    # The client went away while its body was read: nobody to answer and nothing wrong with the service.
    logger.info("client disconnected before its request body was read")
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected_error_handler(_: Request, exc: Exception) -> JSONResponse:
    # Never echo the exception text: it can carry paths and internals.
    logger.exception("unexpected error", exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(ClientDisconnect, _client_disconnect_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)


def openapi_error_responses(*errors: type[ServiceError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route, built from the same table the handlers use."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors or ERROR_TABLE:
        entry = responses.setdefault(error.status, {"model": ErrorResponse, "description": ""})
        entry["description"] = ", ".join(filter(None, [entry["description"], error.code]))
    return responses

"""The HTTP side of errors: the one table mapping the domain's exceptions (service/exceptions.py) to status
codes and headers, the one JSON error envelope, and the handlers that answer with it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.exceptions import (
    BatchTooLarge,
    EmptyPayload,
    Forbidden,
    ImageTooLarge,
    InferenceFailed,
    InferenceTimeout,
    InferenceUnavailable,
    InvalidBase64,
    InvalidImage,
    InvalidJson,
    InvalidMultipart,
    InvalidPrompt,
    InvalidRequest,
    InvalidVideo,
    JobNotFinished,
    JobNotFound,
    JobQueueFull,
    JobStoreUnavailable,
    MalformedRequest,
    ModelNotFound,
    ModelTaskMismatch,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    SlowReader,
    TooManyImages,
    TooManyPrompts,
    TruncatedUpload,
    Unauthorized,
    UnsupportedMediaType,
    VideoTooLarge,
    VideoTooLong,
)
from service.schemas import ErrorResponse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpError:
    """How one domain error is answered: its status and the headers it always carries."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()


# The one table: every error the API can answer with, for handlers and OpenAPI alike.
HTTP_ERRORS: Final[dict[type[ServiceError], HttpError]] = {
    EmptyPayload: HttpError(400),
    InvalidMultipart: HttpError(400),
    MalformedRequest: HttpError(400, (("Connection", "close"),)),  # its framing cannot be trusted further
    Unauthorized: HttpError(401, (("WWW-Authenticate", "Bearer"),)),  # RFC 9110 §15.5.2: names its scheme
    Forbidden: HttpError(403),
    # The rest of the body may still arrive: the connection cannot carry another request (RFC 9110 §15.5.9).
    RequestTimeout: HttpError(408, (("Connection", "close"),)),
    SlowReader: HttpError(408),  # a live stream's close code 4408 (close_code below); no HTTP answer has it
    PayloadTooLarge: HttpError(413),
    UnsupportedMediaType: HttpError(415),
    InvalidImage: HttpError(422),
    ImageTooLarge: HttpError(422),
    InvalidVideo: HttpError(422),
    VideoTooLong: HttpError(422),
    VideoTooLarge: HttpError(422),
    ModelNotFound: HttpError(404),
    ModelTaskMismatch: HttpError(422),
    TooManyPrompts: HttpError(422),
    InvalidPrompt: HttpError(422),
    InvalidJson: HttpError(400),
    InvalidBase64: HttpError(422),
    TooManyImages: HttpError(422),
    BatchTooLarge: HttpError(413),
    InvalidRequest: HttpError(422),
    Overloaded: HttpError(429),
    TruncatedUpload: HttpError(400),
    JobNotFound: HttpError(404),
    JobNotFinished: HttpError(409),
    JobQueueFull: HttpError(429),
    JobStoreUnavailable: HttpError(503),
    InferenceUnavailable: HttpError(503),
    InferenceTimeout: HttpError(504),
    InferenceFailed: HttpError(502),
}
_UNMAPPED: Final = HttpError(500)

# Errors only the JSON batch (POST /v1/predict) answers with, and those only an uploaded file can get.
JSON_BATCH_ONLY: Final = (InvalidJson, InvalidBase64, TooManyImages, BatchTooLarge)
UPLOAD_ONLY: Final = (InvalidMultipart, InvalidVideo, VideoTooLong, VideoTooLarge)
# Codes only a live stream (close codes) or a job (its spool, queue and ids) can get.
STREAM_ONLY: Final = (SlowReader, InvalidRequest)
JOB_ONLY: Final = (TruncatedUpload, JobQueueFull, JobNotFound, JobNotFinished, JobStoreUnavailable)
UPLOAD_ERRORS: Final = tuple(error for error in HTTP_ERRORS if error not in JSON_BATCH_ONLY)
JSON_BATCH_ERRORS: Final = tuple(
    error for error in HTTP_ERRORS if error not in (*UPLOAD_ONLY, *STREAM_ONLY, *JOB_ONLY)
)


def http_error(error: ServiceError) -> HttpError:
    return HTTP_ERRORS.get(type(error), _UNMAPPED)


_STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed"}

# nginx's "client closed request": never seen by the client, it labels the request in metrics and logs.
CLIENT_CLOSED_REQUEST = 499


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# A WebSocket (GET /v1/stream) is closed with 4000 + the error's HTTP status (4401, 4429, ...), its
# reason the error's code: one table for both, and the 4000-4999 range is the application's (RFC 6455).
WEBSOCKET_CLOSE_BASE = 4000


def close_code(error: ServiceError) -> int:
    return WEBSOCKET_CLOSE_BASE + http_error(error).status


def error_response(error: ServiceError) -> JSONResponse:
    answer = http_error(error)
    headers = dict(answer.headers)
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    return JSONResponse(error_body(error.code, error.message), status_code=answer.status, headers=headers)


async def _service_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if http_error(exc).status >= 500:
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
    """OpenAPI ``responses=`` for a route, built from the same table the handlers use (default: every
    error an upload can get)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors or UPLOAD_ERRORS:
        entry = responses.setdefault(HTTP_ERRORS[error].status, {"model": ErrorResponse, "description": ""})
        entry["description"] = ", ".join(filter(None, [entry["description"], error.code]))
    return responses

"""What can go wrong in a request, as typed exceptions that know nothing of HTTP.

The vision, inference and serving layers raise these; ``service/http/errors.py`` alone maps them to status
codes, headers and the JSON envelope. ``code`` is the stable ``error.code`` clients match on.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """Base of every error the API reports on purpose; ``code`` is stable, ``message`` is for people."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class EmptyPayload(ServiceError):
    code = "empty_payload"


class InvalidMultipart(ServiceError):
    code = "invalid_multipart"


class MalformedRequest(ServiceError):
    """Answered by the HTTP server itself (service.http.server) when a request cannot be parsed as HTTP."""

    code = "malformed_request"


class Unauthorized(ServiceError):
    code = "unauthorized"


class Forbidden(ServiceError):
    code = "forbidden"


class RequestTimeout(ServiceError):
    code = "request_timeout"


class SlowReader(ServiceError):
    """A live stream's client stopped reading its answers (FER_STREAM_SEND_QUEUE of them waited)."""

    code = "slow_reader"


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"


class InvalidImage(ServiceError):
    code = "invalid_image"


class ImageTooLarge(ServiceError):
    code = "image_too_large"


class InvalidVideo(ServiceError):
    code = "invalid_video"


class VideoTooLong(ServiceError):
    code = "video_too_long"


class VideoTooLarge(ServiceError):
    code = "video_too_large"


class ModelNotFound(ServiceError):
    code = "model_not_found"


class ModelTaskMismatch(ServiceError):
    code = "model_task_mismatch"


class TooManyPrompts(ServiceError):
    code = "too_many_prompts"


class InvalidPrompt(ServiceError):
    """A caller prompt that is empty, only whitespace, or longer than FER_TEXT_MAX_PROMPT_CHARS."""

    code = "invalid_prompt"


class InvalidJson(ServiceError):
    """A JSON body that is not one well-formed JSON document: bad syntax, not UTF-8, a key given twice,
    nesting deeper than the API's own, or NaN/Infinity."""

    code = "invalid_json"


class InvalidBase64(ServiceError):
    """One image of a JSON batch whose ``data`` is not standard base64 (its own result carries it)."""

    code = "invalid_base64"


class TooManyImages(ServiceError):
    code = "too_many_images"


class BatchTooLarge(ServiceError):
    """The images of a JSON batch decode to more bytes than FER_JSON_MAX_DECODED_BYTES."""

    code = "batch_too_large"


class InvalidRequest(ServiceError):
    """A live stream's message that is not what the protocol takes (not JSON, an unknown type, bad base64,
    an option out of range); the same code the HTTP routes answer a query's validation error with."""

    code = "invalid_request"


class Overloaded(ServiceError):
    code = "overloaded"


class InferenceUnavailable(ServiceError):
    code = "inference_unavailable"


class InferenceTimeout(ServiceError):
    code = "inference_timeout"


class InferenceFailed(ServiceError):
    code = "inference_failed"


class TruncatedUpload(ServiceError):
    """The body ended before the Content-Length it declared (a cut connection or a lying client)."""

    code = "truncated_upload"


class JobNotFound(ServiceError):
    """No such job for this API key: unknown, expired, deleted, or another key's (all look alike)."""

    code = "job_not_found"


class JobNotFinished(ServiceError):
    """The job's result was asked for before it succeeded (queued, running, failed or cancelled)."""

    code = "job_not_finished"


class JobQueueFull(ServiceError):
    code = "job_queue_full"


class JobStoreUnavailable(ServiceError):
    """The shared job store (Redis, FER_JOBS_REDIS_URL) does not answer."""

    code = "jobs_unavailable"

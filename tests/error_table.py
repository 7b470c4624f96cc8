"""The error contract, written out by hand: what every domain error is answered with.

Deliberately NOT derived from ``service.http.errors.HTTP_ERRORS`` (the table under test): a row changed
there (a status, a header, a code) must disagree with this list, in the unit tests of the table and in the
API tests of the OpenAPI document that the table generates. Change both on purpose, never one from the other.
"""

from __future__ import annotations

# (exception class name in service.exceptions, HTTP status, error.code, headers it always carries)
EXPECTED_ERRORS: tuple[tuple[str, int, str, dict[str, str]], ...] = (
    ("EmptyPayload", 400, "empty_payload", {}),
    ("InvalidMultipart", 400, "invalid_multipart", {}),
    ("MalformedRequest", 400, "malformed_request", {"connection": "close"}),
    ("Unauthorized", 401, "unauthorized", {"www-authenticate": "Bearer"}),
    ("Forbidden", 403, "forbidden", {}),
    ("ModelNotFound", 404, "model_not_found", {}),
    ("RequestTimeout", 408, "request_timeout", {"connection": "close"}),
    ("SlowReader", 408, "slow_reader", {}),
    ("PayloadTooLarge", 413, "payload_too_large", {}),
    ("UnsupportedMediaType", 415, "unsupported_media_type", {}),
    ("InvalidImage", 422, "invalid_image", {}),
    ("ImageTooLarge", 422, "image_too_large", {}),
    ("InvalidVideo", 422, "invalid_video", {}),
    ("VideoTooLong", 422, "video_too_long", {}),
    ("VideoTooLarge", 422, "video_too_large", {}),
    ("ModelTaskMismatch", 422, "model_task_mismatch", {}),
    ("TooManyPrompts", 422, "too_many_prompts", {}),
    ("InvalidPrompt", 422, "invalid_prompt", {}),
    ("InvalidJson", 400, "invalid_json", {}),
    ("InvalidBase64", 422, "invalid_base64", {}),
    ("TooManyImages", 422, "too_many_images", {}),
    ("BatchTooLarge", 413, "batch_too_large", {}),
    ("InvalidRequest", 422, "invalid_request", {}),
    ("Overloaded", 429, "overloaded", {}),
    ("TruncatedUpload", 400, "truncated_upload", {}),
    ("JobNotFound", 404, "job_not_found", {}),
    ("JobNotFinished", 409, "job_not_finished", {}),
    ("JobQueueFull", 429, "job_queue_full", {}),
    ("JobStoreUnavailable", 503, "jobs_unavailable", {}),
    ("InferenceFailed", 502, "inference_failed", {}),
    ("InferenceUnavailable", 503, "inference_unavailable", {}),
    ("InferenceTimeout", 504, "inference_timeout", {}),
)

# What /predict and /annotate document (every error) and /v1/models (its three), by status: the codes in
# each status's description, written out.
EVERY_ERROR_BY_STATUS: dict[str, set[str]] = {
    "400": {"empty_payload", "invalid_multipart", "malformed_request", "truncated_upload"},
    "401": {"unauthorized"},
    "403": {"forbidden"},
    "404": {"model_not_found", "job_not_found"},
    "408": {"request_timeout", "slow_reader"},
    "409": {"job_not_finished"},
    "413": {"payload_too_large"},
    "415": {"unsupported_media_type"},
    "422": {
        "invalid_image",
        "image_too_large",
        "invalid_video",
        "video_too_long",
        "video_too_large",
        "model_task_mismatch",
        "too_many_prompts",
        "invalid_prompt",
        "invalid_request",
    },
    "429": {"overloaded", "job_queue_full"},
    "502": {"inference_failed"},
    "503": {"inference_unavailable", "jobs_unavailable"},
    "504": {"inference_timeout"},
}
# What POST /v1/predict documents: the JSON batch's own errors, none that only an uploaded file can get.
JSON_BATCH_ERRORS_BY_STATUS: dict[str, set[str]] = {
    "400": {"empty_payload", "malformed_request", "invalid_json"},
    "401": {"unauthorized"},
    "403": {"forbidden"},
    "404": {"model_not_found"},
    "408": {"request_timeout"},
    "413": {"payload_too_large", "batch_too_large"},
    "415": {"unsupported_media_type"},
    "422": {
        "invalid_image",
        "image_too_large",
        "model_task_mismatch",
        "too_many_prompts",
        "invalid_prompt",
        "invalid_base64",
        "too_many_images",
    },
    "429": {"overloaded"},
    "502": {"inference_failed"},
    "503": {"inference_unavailable"},
    "504": {"inference_timeout"},
}
MODELS_ERRORS_BY_STATUS: dict[str, set[str]] = {
    "401": {"unauthorized"},
    "403": {"forbidden"},
    "503": {"inference_unavailable"},
}

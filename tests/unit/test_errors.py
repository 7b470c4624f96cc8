import ast
import json
import logging
from pathlib import Path

import pytest

from service import exceptions
from service.exceptions import InferenceFailed, InferenceUnavailable, Overloaded
from service.http.errors import (
    HTTP_ERRORS,
    _service_error_handler,
    close_code,
    error_response,
    http_error,
    openapi_error_responses,
)
from service.inference.triton import classify_triton_error
from service.schemas import ErrorResponse
from tests.error_table import EVERY_ERROR_BY_STATUS, EXPECTED_ERRORS, MODELS_ERRORS_BY_STATUS


def test_codes_are_unique_and_statuses_are_http_errors() -> None:
    codes = [error.code for error in HTTP_ERRORS]
    assert len(codes) == len(set(codes))
    assert all(400 <= answer.status < 600 for answer in HTTP_ERRORS.values())


def test_every_domain_error_has_its_row_in_the_table() -> None:
    domain = {
        value
        for value in vars(exceptions).values()
        if isinstance(value, type) and issubclass(value, exceptions.ServiceError)
    }
    assert domain - {exceptions.ServiceError} == set(HTTP_ERRORS)


def test_the_domain_layers_know_nothing_of_http() -> None:
    """vision/, inference/ and the exceptions they raise import neither the web framework nor the schemas."""
    root = Path(__file__).resolve().parents[2] / "service"
    banned = ("fastapi", "starlette", "service.schemas", "service.http.errors")
    for path in [root / "exceptions.py", *(root / "vision").glob("*.py"), *(root / "inference").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                )
                assert not [n for n in names if n.startswith(banned)], f"{path.name} imports {names}"


def test_the_table_maps_the_issue_statuses() -> None:
    statuses = {error.code: answer.status for error, answer in HTTP_ERRORS.items()}
    assert statuses["payload_too_large"] == 413
    assert statuses["unsupported_media_type"] == 415
    assert statuses["invalid_image"] == statuses["image_too_large"] == 422
    assert statuses["overloaded"] == 429
    assert statuses["inference_unavailable"] == 503
    assert statuses["inference_timeout"] == 504


def test_error_response_envelope_and_retry_after() -> None:
    response = error_response(InferenceUnavailable("down", retry_after_s=7))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert json.loads(response.body) == {"error": {"code": "inference_unavailable", "message": "down"}}


def test_openapi_responses_group_codes_by_status() -> None:
    responses = openapi_error_responses()
    assert "invalid_image" in responses[422]["description"]
    assert "image_too_large" in responses[422]["description"]
    assert set(responses) == {answer.status for answer in HTTP_ERRORS.values()}


class FakeTritonError(Exception):
    def __init__(self, msg: str, status: str) -> None:
        super().__init__(msg)
        self._msg, self._status = msg, status

    def message(self) -> str:
        return self._msg

    def status(self) -> str:
        return self._status


def test_classify_triton_errors() -> None:
    unavailable = classify_triton_error(
        FakeTritonError("failed to connect to all addresses", "StatusCode.UNAVAILABLE"), 5
    )
    assert isinstance(unavailable, InferenceUnavailable) and unavailable.retry_after_s == 5
    full = classify_triton_error(FakeTritonError("Exceeds maximum queue size", "StatusCode.UNAVAILABLE"), 5)
    assert isinstance(full, Overloaded)
    expired = classify_triton_error(FakeTritonError("Request timeout expired", "StatusCode.UNAVAILABLE"), 5)
    assert isinstance(expired, Overloaded)
    assert classify_triton_error(
        FakeTritonError("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED"), 5
    ).code == ("inference_timeout")
    assert classify_triton_error(ConnectionRefusedError("refused"), 5).code == "inference_unavailable"
    assert classify_triton_error(FakeTritonError("shape mismatch", "StatusCode.INTERNAL"), 5).code == (
        "inference_failed"
    )


# --------------------------------------------------------------------------------------------------------
# Every row of the table against the written-out contract (tests/error_table.py), never against itself.

ALWAYS_PRESENT = {"content-length", "content-type"}


@pytest.mark.parametrize(
    ("name", "status", "code", "headers"), EXPECTED_ERRORS, ids=[r[0] for r in EXPECTED_ERRORS]
)
def test_every_error_is_answered_as_written_down(
    name: str, status: int, code: str, headers: dict[str, str]
) -> None:
    error_type = getattr(exceptions, name)
    assert error_type.code == code
    response = error_response(error_type("what happened"))
    assert response.status_code == status
    assert json.loads(response.body) == {"error": {"code": code, "message": "what happened"}}
    assert response.headers["content-type"] == "application/json"
    assert {k: v for k, v in response.headers.items() if k not in ALWAYS_PRESENT} == headers
    assert http_error(error_type("x")).status == status


def test_the_written_out_contract_covers_the_whole_table() -> None:
    assert {getattr(exceptions, name) for name, *_ in EXPECTED_ERRORS} == set(HTTP_ERRORS)


@pytest.mark.parametrize(
    ("name", "status", "code", "headers"), EXPECTED_ERRORS, ids=[r[0] for r in EXPECTED_ERRORS]
)
def test_retry_after_is_added_to_any_error_that_carries_it(
    name: str, status: int, code: str, headers: dict[str, str]
) -> None:
    response = error_response(getattr(exceptions, name)("busy", retry_after_s=3))
    assert response.status_code == status
    assert response.headers["retry-after"] == "3"
    assert {k: v for k, v in response.headers.items() if k not in ALWAYS_PRESENT | {"retry-after"}} == headers


def test_retry_after_zero_is_still_sent() -> None:
    assert error_response(Overloaded("now", retry_after_s=0)).headers["retry-after"] == "0"


def test_inference_failed_is_a_502_without_retry_after() -> None:
    response = error_response(InferenceFailed("shape mismatch"))
    assert response.status_code == 502 and "retry-after" not in response.headers
    assert json.loads(response.body)["error"]["code"] == "inference_failed"


def test_an_error_missing_from_the_table_is_a_500_with_its_own_code() -> None:
    class NewError(exceptions.ServiceError):
        code = "brand_new"

    response = error_response(NewError("oops"))
    assert response.status_code == 500
    assert json.loads(response.body) == {"error": {"code": "brand_new", "message": "oops"}}
    assert exceptions.ServiceError("x").code == "internal_error"


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (InferenceFailed("boom"), True),
        (InferenceUnavailable("down"), True),
        (exceptions.ServiceError("unmapped: 500"), True),
        (Overloaded("busy"), False),
        (exceptions.InvalidImage("bad"), False),
    ],
)
async def test_server_side_errors_are_logged_client_errors_are_not(
    error: exceptions.ServiceError, logged: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.http.errors"):
        response = await _service_error_handler(None, error)  # type: ignore[arg-type]
    assert response.status_code == http_error(error).status
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) is logged
    if logged:
        assert error.code in warnings[0].getMessage() and error.message in warnings[0].getMessage()


def test_openapi_responses_list_the_written_out_codes_by_status() -> None:
    documented = {
        str(status): set(entry["description"].split(", "))
        for status, entry in openapi_error_responses().items()
    }
    assert documented == EVERY_ERROR_BY_STATUS
    assert all(entry["model"] is ErrorResponse for entry in openapi_error_responses().values())
    chosen = openapi_error_responses(exceptions.Unauthorized, exceptions.Forbidden, InferenceUnavailable)
    assert {str(status): set(entry["description"].split(", ")) for status, entry in chosen.items()} == (
        MODELS_ERRORS_BY_STATUS
    )
    # Codes that share a status are listed in the table's order, each once.
    assert openapi_error_responses(exceptions.EmptyPayload, exceptions.InvalidMultipart)[400][
        "description"
    ] == ("empty_payload, invalid_multipart")


# The handlers themselves, called directly (the API tests reach them only through the happy few paths).


async def test_validation_errors_name_where_and_what() -> None:
    from fastapi.exceptions import RequestValidationError

    from service.http.errors import _validation_error_handler

    answer = await _validation_error_handler(
        None, RequestValidationError([{"loc": ("query", "model"), "msg": "bad"}])
    )  # type: ignore[arg-type]
    assert answer.status_code == 422
    assert json.loads(answer.body) == {"error": {"code": "invalid_request", "message": "query.model: bad"}}
    no_msg = await _validation_error_handler(None, RequestValidationError([{"loc": ("body",)}]))  # type: ignore[arg-type]
    assert json.loads(no_msg.body)["error"]["message"] == "body: invalid request"
    for errors in ([], [{"msg": "x"}]):
        bare = await _validation_error_handler(None, RequestValidationError(errors))  # type: ignore[arg-type]
        assert json.loads(bare.body) == {"error": {"code": "invalid_request", "message": "invalid request"}}


@pytest.mark.parametrize(
    ("status", "code", "headers"),
    [(404, "not_found", None), (405, "method_not_allowed", {"Allow": "GET"}), (418, "http_error", None)],
)
async def test_starlette_errors_keep_their_status_and_headers(
    status: int, code: str, headers: dict[str, str] | None
) -> None:
    from starlette.exceptions import HTTPException

    from service.http.errors import _http_error_handler

    answer = await _http_error_handler(None, HTTPException(status, detail="why", headers=headers))  # type: ignore[arg-type]
    assert answer.status_code == status
    assert json.loads(answer.body) == {"error": {"code": code, "message": "why"}}
    assert answer.headers.get("allow") == (headers or {}).get("Allow")


async def test_an_unexpected_error_is_a_500_that_never_echoes_it(caplog: pytest.LogCaptureFixture) -> None:
    from service.http.errors import _unexpected_error_handler

    error = RuntimeError("/secret/path")

    with caplog.at_level(logging.ERROR, logger="service.http.errors"):
        answer = await _unexpected_error_handler(None, error)  # type: ignore[arg-type]
    assert answer.status_code == 500
    assert json.loads(answer.body) == {
        "error": {"code": "internal_error", "message": "internal server error"}
    }
    assert [r.getMessage() for r in caplog.records] == ["unexpected error"]
    assert caplog.records[0].exc_info and caplog.records[0].exc_info[1] is error


async def test_a_client_that_went_away_is_499_with_no_body(caplog: pytest.LogCaptureFixture) -> None:
    from starlette.requests import ClientDisconnect

    from service.http.errors import CLIENT_CLOSED_REQUEST, _client_disconnect_handler

    with caplog.at_level(logging.INFO, logger="service.http.errors"):
        answer = await _client_disconnect_handler(None, ClientDisconnect())  # type: ignore[arg-type]
    assert CLIENT_CLOSED_REQUEST == 499 and answer.status_code == 499 and answer.body == b""
    assert [r.getMessage() for r in caplog.records] == [
        "client disconnected before its request body was read"
    ]


def test_every_handler_is_installed() -> None:
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    from service.http import errors

    app = FastAPI()
    errors.install_error_handlers(app)
    assert app.exception_handlers[exceptions.ServiceError] is errors._service_error_handler
    assert app.exception_handlers[RequestValidationError] is errors._validation_error_handler
    assert app.exception_handlers[HTTPException] is errors._http_error_handler
    assert app.exception_handlers[ClientDisconnect] is errors._client_disconnect_handler
    assert app.exception_handlers[Exception] is errors._unexpected_error_handler


def test_a_websocket_is_closed_with_4000_plus_the_errors_status() -> None:
    assert close_code(exceptions.Unauthorized("no key")) == 4401
    assert close_code(Overloaded("busy", retry_after_s=1)) == 4429
    assert close_code(InferenceFailed("model raised")) == 4502

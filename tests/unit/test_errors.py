import ast
import json
from pathlib import Path

from service import exceptions
from service.exceptions import InferenceUnavailable, Overloaded
from service.http.errors import HTTP_ERRORS, error_response, openapi_error_responses
from service.inference.triton import classify_triton_error


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

"""X-Request-ID: accepted or generated, returned, and on every JSON log line of the request."""

from __future__ import annotations

import io
import json
import logging
import re
import sys

import httpx
import pytest

from service.exceptions import InferenceUnavailable
from service.http.logs import JsonFormatter, log_handler
from tests.api.conftest import FakeInference, png_bytes, running_app


async def test_a_request_id_is_generated_and_returned(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert response.headers["x-request-id"] != (await client.get("/healthz")).headers["x-request-id"]


@pytest.mark.parametrize(
    ("given", "kept"), [("req-42.a:b", True), ("x" * 129, False), ("bad id\u2028", False), ("", False)]
)
async def test_a_sane_client_request_id_is_kept(client: httpx.AsyncClient, given: str, kept: bool) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": given.encode("utf-8")})
    assert (response.headers["x-request-id"] == given) is kept


async def test_log_lines_are_json_with_the_request_id() -> None:
    stream = io.StringIO()
    handler = log_handler("json")
    handler.setStream(stream)  # type: ignore[attr-defined]
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        fake = FakeInference(fail_with=InferenceUnavailable("down", retry_after_s=1))
        async with running_app(fake) as client:
            response = await client.post(
                "/predict",
                content=png_bytes(100),
                headers={"Content-Type": "image/png", "X-Request-ID": "trace-7"},
            )
    finally:
        root.removeHandler(handler)
    assert response.status_code == 503 and response.headers["x-request-id"] == "trace-7"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failed = [line for line in lines if "inference_unavailable" in line["message"]]
    assert failed and failed[0]["request_id"] == "trace-7" and failed[0]["level"] == "warning"
    assert {"time", "logger"} <= set(failed[0])


def test_the_json_formatter_keeps_exceptions_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed here" and "ValueError: boom" in entry["exception"]

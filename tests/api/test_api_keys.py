"""API keys: configured as SHA-256 hashes, required on the API, never on probes and /metrics."""

from __future__ import annotations

import hashlib
import logging

import httpx
import pytest
from pydantic import ValidationError

from service.config import Settings
from tests.api.conftest import png_bytes, running_app

KEY = "fer-test-key-3f9a"
KEY_SHA256 = hashlib.sha256(KEY.encode()).hexdigest()
OTHER_SHA256 = hashlib.sha256(b"someone else").hexdigest()


async def post_image(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post(
        "/predict", content=png_bytes(100), headers={"Content-Type": "image/png", **headers}
    )


async def test_the_api_needs_a_configured_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        async with running_app(api_key_sha256=(OTHER_SHA256, KEY_SHA256)) as client:
            missing = await post_image(client, {})
            wrong = await post_image(client, {"Authorization": "Bearer not-the-key"})
            bearer = await post_image(client, {"Authorization": f"Bearer {KEY}"})
            header = await post_image(client, {"X-API-Key": KEY})
            models = await client.get("/v1/models")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    assert bearer.status_code == 200 and header.status_code == 200
    assert models.status_code == 401
    assert not [r for r in caplog.records if KEY in r.getMessage() or "not-the-key" in r.getMessage()]


async def test_probes_and_metrics_need_no_key() -> None:
    async with running_app(api_key_sha256=(KEY_SHA256,)) as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 200, path


async def test_the_demo_page_loads_without_a_key_but_its_api_calls_need_one() -> None:
    async with running_app(api_key_sha256=(KEY_SHA256,)) as client:
        page = await client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert (await client.get("/static/fer.js")).status_code == 200
        assert (await client.post("/annotate", content=b"x")).status_code == 401
        assert (await client.get("/staticfer.js")).status_code == 401  # the prefix, not a lookalike


async def test_no_configured_key_means_an_open_api(client: httpx.AsyncClient) -> None:
    assert (await post_image(client, {})).status_code == 200


@pytest.mark.parametrize("value", ["not-hex", KEY_SHA256[:-1], KEY])
def test_key_hashes_must_be_sha256_hex(value: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(api_key_sha256=(value,))  # type: ignore[call-arg]
    assert value not in str(raised.value)  # a key pasted here by mistake is not echoed

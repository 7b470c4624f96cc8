"""The outside audit's defects of the edge, each pinned (issue 26, points 1, 7, 8, 9, 10, 14)."""

from __future__ import annotations

import io
import logging

import httpx
import pytest
from PIL import Image

from service.http.logs import AccessLogRedaction, redacted_target
from tests.api.conftest import png_bytes


async def test_made_up_methods_add_no_metric_series(client: httpx.AsyncClient) -> None:
    await client.request("ZFIRST", "/healthz")  # the collapsed series exists from here on
    await client.get("/metrics")
    before = len((await client.get("/metrics")).text)
    for index in range(200):
        await client.request(f"Z{index:04d}" + "A" * 500, "/healthz")
    text = (await client.get("/metrics")).text
    assert "Z0001" not in text and 'method="other"' in text
    assert len(text) - before < 512  # only counts and sums grew: no series per method


async def test_a_long_static_name_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/" + "a" * 300 + ".js")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("name", ["text_encoder", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"])
async def test_a_model_that_is_not_an_expression_model_is_the_clients_mistake(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.post(
        "/predict", params={"model": name}, content=png_bytes(), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "model_task_mismatch"


@pytest.mark.parametrize("brand", [b"heic", b"mif1", b"avif", b"avis"])
async def test_heic_and_avif_stills_are_unsupported_images_not_broken_clips(
    client: httpx.AsyncClient, brand: bytes
) -> None:
    body = b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    response = await client.post("/predict", content=body, headers={"Content-Type": "image/heic"})
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(("width", "height"), [(70000, 16), (16, 70000)])
async def test_annotate_shrinks_a_picture_beyond_jpegs_limit(
    client: httpx.AsyncClient, width: int, height: int
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 40, 40)).save(buffer, format="PNG")
    response = await client.post(
        "/annotate", content=buffer.getvalue(), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200
    picture = Image.open(io.BytesIO(response.content))
    assert max(picture.size) == 2048  # FER_ANNOTATE_MAX_SIDE's default


def test_the_access_log_shows_no_key_and_no_prompt_and_stays_short() -> None:
    target = "/predict?api_key=s3cret&prompts=my+private+words&model=" + "m" * 500 + "&flag"
    shown = redacted_target(target)
    assert "s3cret" not in shown and "private" not in shown and "api_key=[redacted]" in shown
    assert "flag" in shown and len(shown) < 400
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', None, None
    )
    record.args = ("127.0.0.1:5", "X" * 60000, target, "1.1", 401)
    AccessLogRedaction().filter(record)
    line = record.getMessage()
    assert "s3cret" not in line and len(line) < 500

"""POST /annotate and the page at `/`, on the in-process app with the fake backend and detector."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from devstack import clips
from service.exceptions import InferenceUnavailable
from tests.api.conftest import FakeInference, png_bytes, running_app


def picture(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


async def test_image_comes_back_as_jpeg_with_boxes_drawn(client: httpx.AsyncClient) -> None:
    response = await client.post("/annotate", files={"file": ("p.png", png_bytes(300, 200), "image/png")})
    image = picture(response)
    assert response.headers["content-type"] == "image/jpeg" and image.format == "JPEG"
    assert image.size == (300, 200)  # the upload's own size: boxes are drawn on it, not on a copy
    plain = np.asarray(Image.open(io.BytesIO(png_bytes(300, 200))).convert("RGB"), dtype=np.int16)
    drawn = np.asarray(image.convert("RGB"), dtype=np.int16)
    # FakeDetector's first face spans x 10..90, y 10..90: its outline changes the pixels on the box edge.
    assert np.abs(drawn[50, 8:13] - plain[50, 8:13]).max() > 60
    assert np.abs(drawn[50, 50] - plain[50, 50]).max() < 20  # inside the box, the picture is untouched


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("image/png", "PNG"),
        ("image/jpeg;q=0.5, image/png", "PNG"),
        ("image/png;q=0.2, image/jpeg", "JPEG"),
        ("*/*", "JPEG"),
        ("application/json", "JPEG"),
    ],
)
async def test_format_follows_accept(client: httpx.AsyncClient, accept: str, fmt: str) -> None:
    response = await client.post(
        "/annotate", content=png_bytes(100), headers={"Content-Type": "image/png", "Accept": accept}
    )
    assert picture(response).format == fmt
    assert response.headers["content-type"] == f"image/{fmt.lower()}"


async def test_a_clip_gives_a_bounded_contact_sheet() -> None:
    frames = [np.full((100, 200, 3), 10 * i, np.uint8) for i in range(30)]
    async with running_app(annotate_max_frames=4, annotate_tile_width=100) as client:
        response = await client.post(
            "/annotate", params={"stride": 1}, content=clips.encode(frames, fps=10),
            headers={"Content-Type": "video/mp4"},
        )  # fmt: skip
    sheet = picture(response)
    # 30 analysed frames, at most 4 tiles of 100 px in one row of 4: the sheet is 400 px wide.
    assert sheet.width == 400 and 50 < sheet.height < 120


async def test_a_clip_without_timeline_in_include_still_gets_its_sheet(client: httpx.AsyncClient) -> None:
    data = clips.encode([np.full((100, 200, 3), 90, np.uint8)] * 5, fps=10)
    response = await client.post(
        "/annotate", params={"include": "tracks"}, content=data, headers={"Content-Type": "video/mp4"}
    )
    assert picture(response).width > 0


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"", "image/jpeg", 400, "empty_payload"),
        (b"just some text", "image/jpeg", 415, "unsupported_media_type"),
        (b"{}", "application/json", 415, "unsupported_media_type"),
    ],
)
async def test_errors_use_the_error_table(
    client: httpx.AsyncClient, content: bytes, content_type: str, status: int, code: str
) -> None:
    response = await client.post("/annotate", content=content, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_an_unknown_model_is_404_and_triton_down_is_503() -> None:
    async with running_app() as client:
        response = await client.post(
            "/annotate", params={"model": "nope"}, content=png_bytes(), headers={"Content-Type": "image/png"}
        )
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    async with running_app(FakeInference(fail_with=InferenceUnavailable("down", retry_after_s=5))) as client:
        response = await client.post("/annotate", content=png_bytes(), headers={"Content-Type": "image/png"})
    assert response.status_code == 503 and response.headers["retry-after"] == "5"


async def test_the_page_and_its_assets_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<label for="file-input">' in page.text and "/static/app.js" in page.text
    for asset, kind in (("app.js", "javascript"), ("fer.js", "javascript"), ("app.css", "text/css")):
        response = await client.get(f"/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    for outside in ("/static/../config.py", "/static/..%2Fconfig.py", "/static/.hidden.js", "/static/x.py"):
        assert (await client.get(outside)).status_code == 404, outside
    metrics = (await client.get("/metrics")).text
    assert 'route="/static/{name}",status="200"' in metrics  # one label for every asset, not per path


async def test_annotate_is_in_the_openapi_contract(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    responses = paths["/annotate"]["post"]["responses"]
    assert {"image/jpeg", "image/png"} <= set(responses["200"]["content"])
    assert {"415", "429", "503"} <= set(responses)
    assert "/" not in paths  # the page is not part of the API

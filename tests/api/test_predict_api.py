import asyncio
import io
from collections.abc import Awaitable, Callable

import httpx
import numpy as np
import pytest
from PIL import Image

from service.exceptions import InferenceFailed, InferenceTimeout, InferenceUnavailable, ServiceError
from tests.api.conftest import FakeInference, png_bytes, running_app


async def test_multipart_upload_returns_every_face(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", files={"file": ("p.png", png_bytes(300), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {"width": 300, "height": 100, "format": "PNG"}
    assert len(body["faces"]) == 3
    face = body["faces"][0]
    assert set(face["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    assert sum(item["probability"] for item in face["expressions"]) == pytest.approx(1.0, abs=1e-5)
    assert face["expression"]["probability"] == max(item["probability"] for item in face["expressions"])
    assert len(face["text_similarity"]) == 7
    assert body["model"]["name"] == "fake_fer" and body["model"]["trained"] is False
    assert body["warnings"] and "NOT predictions" in body["warnings"][0]
    assert {"decode", "detect", "align", "infer", "assemble", "total"} <= set(body["timings_ms"])


async def test_raw_body_upload(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", content=png_bytes(100), headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    assert len(response.json()["faces"]) == 1


async def test_no_face_gives_an_empty_list(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", content=png_bytes(50), headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    assert response.json()["faces"] == []


async def test_batches_never_exceed_max_batch_size() -> None:
    fake = FakeInference()
    async with running_app(fake) as client:
        response = await client.post(
            "/predict", content=png_bytes(1000), headers={"Content-Type": "image/png"}
        )
    assert response.status_code == 200 and len(response.json()["faces"]) == 10
    assert sum(fake.calls) == 10 and max(fake.calls) <= 4  # FakeInference's max_batch_size


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"", "image/jpeg", 400, "empty_payload"),
        (b"just some text", "image/jpeg", 415, "unsupported_media_type"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 20, "image/jpeg", 422, "invalid_image"),
        (b"{}", "application/json", 415, "unsupported_media_type"),
    ],
)
async def test_bad_input_gets_a_json_4xx(
    client: httpx.AsyncClient, content: bytes, content_type: str, status: int, code: str
) -> None:
    response = await client.post("/predict", content=content, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    ok = await client.post("/predict", content=png_bytes(100), headers={"Content-Type": "image/png"})
    assert ok.status_code == 200  # the service keeps serving


async def test_multipart_without_file_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", data={"image": "x"}, files={"other": ("a", b"b")})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "empty_payload"


async def test_body_over_the_limit_is_413_from_content_length() -> None:
    async with running_app(max_upload_bytes=1000) as client:
        response = await client.post(
            "/predict", content=b"\xff" * 5000, headers={"Content-Type": "image/jpeg"}
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_body_over_the_limit_is_413_while_streaming() -> None:
    async def chunks():  # no Content-Length: chunked upload
        for _ in range(10):
            yield b"\xff" * 500

    async with running_app(max_upload_bytes=1000) as client:
        response = await client.post("/predict", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/predict", params={"model": "nope"}, content=png_bytes(100), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_both_transfer_encoding_and_content_length_is_a_400(client: httpx.AsyncClient) -> None:
    body = png_bytes(100)
    headers = {"Content-Type": "image/png", "Transfer-Encoding": "chunked", "Content-Length": str(len(body))}
    response = await client.post("/predict", content=body, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_request"
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "a" * 65, "../etc/passwd", "x y"])
async def test_a_model_name_that_cannot_exist_is_refused_not_echoed(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.post(
        "/predict", params={"model": name}, content=png_bytes(100), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    assert name not in response.text


async def test_openapi_declares_the_api_key_errors_on_every_protected_route(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, method in (("/predict", "post"), ("/annotate", "post"), ("/v1/models", "get")):
        assert {"401", "403"} <= set(paths[path][method]["responses"]), path


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (InferenceUnavailable("down", retry_after_s=5), 503, "5"),
        (InferenceTimeout("slow"), 504, None),
        (InferenceFailed("shape mismatch"), 502, None),
    ],
)
async def test_inference_failures_map_to_503_504_and_502(
    error: ServiceError, status: int, retry_after: str | None
) -> None:
    async with running_app(FakeInference(fail_with=error)) as client:
        response = await client.post(
            "/predict", content=png_bytes(100), headers={"Content-Type": "image/png"}
        )
    assert response.status_code == status
    assert response.json()["error"] == {"code": error.code, "message": error.message}
    assert response.headers.get("retry-after") == retry_after


async def test_inference_failing_inside_the_model_is_502_inference_failed() -> None:
    fake = FakeInference(fail_infer_with=InferenceFailed("the model raised"))
    async with running_app(fake) as client:
        response = await client.post(
            "/predict", content=png_bytes(100), headers={"Content-Type": "image/png"}
        )
    assert response.status_code == 502
    assert response.json() == {"error": {"code": "inference_failed", "message": "the model raised"}}
    assert "retry-after" not in response.headers


async def test_overload_is_429_not_a_queue() -> None:
    gate = asyncio.Event()
    fake = FakeInference(gate=gate)
    async with running_app(fake, max_in_flight=2) as client:
        post = lambda: client.post("/predict", content=png_bytes(100), headers={"Content-Type": "image/png"})  # noqa: E731
        stalled = [asyncio.create_task(post()) for _ in range(2)]
        for _ in stalled:  # both requests are now inside inference, holding their slots
            await asyncio.wait_for(fake.arrived.acquire(), timeout=10)
        refused = await asyncio.wait_for(post(), timeout=10)
        gate.set()
        finished = await asyncio.wait_for(asyncio.gather(*stalled), timeout=10)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "overloaded" and refused.headers["retry-after"] == "1"
    assert [r.status_code for r in finished] == [200, 200]


async def _hold_every_slot(
    fake: FakeInference, post: Callable[[], Awaitable[httpx.Response]], count: int
) -> list:
    """``count`` requests parked inside inference (each holding its slot) behind ``fake.gate``."""
    stalled = [asyncio.create_task(post()) for _ in range(count)]
    for _ in stalled:
        await asyncio.wait_for(fake.arrived.acquire(), timeout=10)
    return stalled


@pytest.mark.parametrize("limit", [1, 3])
async def test_limit_plus_one_concurrent_requests_and_failed_requests_give_their_slots_back(
    limit: int,
) -> None:
    """limit + 1 at once: the extra one is 429 with Retry-After. Then `limit` requests whose inference raises
    mid-way (502), one after another and all at once: each gives its slot back, so `limit` requests again
    fit at once (and the next one is refused again, not more, not fewer)."""
    fake = FakeInference(gate=asyncio.Event())
    async with running_app(fake, max_in_flight=limit) as client:
        post = lambda: client.post("/predict", content=png_bytes(100), headers={"Content-Type": "image/png"})  # noqa: E731
        stalled = await _hold_every_slot(fake, post, limit)
        refused = await asyncio.wait_for(post(), timeout=10)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        assert fake.gate is not None
        fake.gate.set()
        assert [r.status_code for r in await asyncio.wait_for(asyncio.gather(*stalled), 10)] == [200] * limit

        fake.fail_infer_with = InferenceFailed("the model raised")
        for _ in range(limit):
            failed = await asyncio.wait_for(post(), timeout=10)
            assert failed.status_code == 502 and failed.json()["error"]["code"] == "inference_failed"
        failed_together = await asyncio.wait_for(asyncio.gather(*(post() for _ in range(limit))), 10)
        assert [r.status_code for r in failed_together] == [502] * limit
        for _ in range(2 * limit):  # the failed ones did reach inference
            await asyncio.wait_for(fake.arrived.acquire(), timeout=10)

        fake.fail_infer_with = None
        fake.gate = asyncio.Event()
        stalled = await _hold_every_slot(fake, post, limit)
        assert (await asyncio.wait_for(post(), timeout=10)).status_code == 429
        fake.gate.set()
        assert [r.status_code for r in await asyncio.wait_for(asyncio.gather(*stalled), 10)] == [200] * limit
        metrics = (await client.get("/metrics")).text
    assert "fer_in_flight_requests 0.0" in metrics


async def test_large_multipart_uploads_never_touch_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def no_disk(self: object) -> None:
        raise AssertionError("the upload was spooled to a temporary file on disk")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", no_disk)
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8))  # ~3 MB as PNG
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    assert buffer.tell() > 2 * 1024 * 1024  # over Starlette's 1 MiB spool threshold
    async with running_app() as client:
        response = await client.post("/predict", files={"file": ("big.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    assert len(response.json()["faces"]) == 12  # FakeDetector: one face per 100 px of width


_PART = b'Content-Disposition: form-data; name="file"; filename="p.png"\r\nContent-Type: image/png\r\n\r\n'


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--xx\r\n" + _PART + b"abc\r\n--xx--\r\n"),  # no boundary parameter
        ("multipart/form-data; boundary=xx", b"--xx\r\nnot a header\r\n\r\nabc\r\n--xx--\r\n"),
        ("multipart/form-data; boundary=xx", b"--xx\r\nContent-Type: image/png\r\n\r\nabc\r\n--xx--\r\n"),
        ("multipart/form-data; boundary=xx", (b"--xx\r\n" + _PART + b"abc\r\n") * 2 + b"--xx--\r\n"),
    ],
    ids=["no-boundary", "bad-header-line", "no-content-disposition", "two-files"],
)
async def test_malformed_multipart_is_exactly_invalid_multipart(
    client: httpx.AsyncClient, content_type: str, body: bytes
) -> None:
    response = await client.post("/predict", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_multipart", response.text


async def test_a_multipart_body_without_any_part_is_exactly_empty_payload(client: httpx.AsyncClient) -> None:
    """Cut after the first boundary: the parser finds no part at all, so no file field (not a parse error)."""
    response = await client.post(
        "/predict", content=b"--xx\r\nnonsense", headers={"Content-Type": "multipart/form-data; boundary=xx"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "empty_payload"


async def test_a_video_model_for_a_still_image_is_a_4xx(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/predict",
        params={"model": "fake_stt"},
        content=png_bytes(300),
        headers={"Content-Type": "image/png"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "model_task_mismatch"
    assert "fake_stt" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/predict/", "/healthz/", "/v1/models/"])
async def test_a_trailing_slash_is_a_json_404_not_a_redirect_built_from_the_host_header(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(path, headers={"Host": "evil.example"}, content=b"")
    assert "location" not in response.headers
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"

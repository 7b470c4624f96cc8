"""POST /v1/predict (JSON batch) on the in-process app with the fake inference and detector: one result per
image in order, a bad image its own error, one detection call and shared Triton batches, the limits, and
hostile JSON refused with the API's envelope."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from fer_client.client import AsyncFerClient
from fer_client.errors import FerError
from service.config import Settings
from service.http.app import create_app
from tests.api.conftest import FakeDetector, FakeInference, png_bytes
from tests.error_table import JSON_BATCH_ERRORS_BY_STATUS


@dataclass
class Running:
    client: httpx.AsyncClient
    app: FastAPI
    detector: FakeDetector
    inference: FakeInference


@asynccontextmanager
async def running(**overrides: object) -> AsyncIterator[Running]:
    detector, inference = FakeDetector(), FakeInference()
    settings = Settings(
        triton_url="fake:0", default_model="fake_fer", default_video_model="fake_stt", **overrides
    )  # type: ignore[arg-type]
    app = create_app(settings, inference=lambda _s, _m: inference, detector=lambda _s: detector)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Running(client, app, detector, inference)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def image(data: bytes, image_id: str | None = None) -> dict[str, Any]:
    return {"data": b64(data), **({"id": image_id} if image_id is not None else {})}


async def post_raw(client: httpx.AsyncClient, body: bytes, content_type: str = "application/json") -> Any:
    return await client.post("/v1/predict", content=body, headers={"Content-Type": content_type})


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    return str(body["error"]["code"])


async def test_mixed_good_and_bad_images_each_get_their_own_result_in_order() -> None:
    truncated = png_bytes(300)[:60]
    images = [
        image(png_bytes(300), "three"),
        {"data": "not base64!", "id": "bad-b64"},
        image(truncated, "truncated"),
        image(b"just text", "text"),
        {"data": "", "id": "empty"},
        image(png_bytes(100), "one"),
        {"data": "https://example.com/a.jpg", "id": "url"},
        {"data": "data:image/png;base64," + b64(png_bytes(200)), "id": "data-url"},
    ]
    async with running() as run:
        response = await run.client.post("/v1/predict", json={"images": images})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == [i["id"] for i in images]
    assert [r["index"] for r in results] == list(range(len(images)))
    statuses = {r["id"]: (r["status"], (r["error"] or {}).get("code")) for r in results}
    assert statuses == {
        "three": (200, None),
        "bad-b64": (422, "invalid_base64"),
        "truncated": (422, "invalid_image"),
        "text": (415, "unsupported_media_type"),
        "empty": (400, "empty_payload"),
        "one": (200, None),
        "url": (422, "invalid_base64"),
        "data-url": (200, None),
    }
    assert "never fetches URLs" in results[6]["error"]["message"]
    faces = {r["id"]: len(r["response"]["faces"]) for r in results if r["response"]}
    assert faces == {"three": 3, "one": 1, "data-url": 2}
    assert all(r["response"] is None for r in results if r["error"])


async def test_the_answer_for_an_image_equals_the_multipart_routes() -> None:
    photo = png_bytes(300)
    async with running() as run:
        single = (await run.client.post("/predict", files={"file": ("p.png", photo, "image/png")})).json()
        batch = await run.client.post("/v1/predict", json={"images": [image(photo), image(photo)]})
    for result in batch.json()["results"]:
        answer = result["response"]
        assert answer["faces"] == single["faces"] and answer["model"] == single["model"]
        assert answer["image"] == single["image"] and answer["warnings"] == single["warnings"]
        assert {"decode", "detect", "align", "infer", "text", "assemble", "total"} <= set(
            answer["timings_ms"]
        )


async def test_one_detection_call_and_shared_triton_batches_for_the_whole_batch() -> None:
    widths = [300, 200, 100, 300]  # 3 + 2 + 1 + 3 = 9 faces
    async with running() as run:
        response = await run.client.post(
            "/v1/predict", json={"images": [image(png_bytes(w)) for w in widths]}
        )
        assert response.status_code == 200
        assert run.detector.image_calls == [4]  # every image in one cascade call
        assert run.inference.calls == [4, 4, 1]  # the 9 faces in max_batch_size batches, not per image
        assert run.app.state.resources.memory.used == 0


async def test_images_go_in_waves_that_fit_one_images_pixels() -> None:
    # 300x100 = 30,000 px each: a limit of 70,000 px takes two per wave.
    async with running(max_image_pixels=70_000) as run:
        body = {"images": [image(png_bytes(300)) for _ in range(5)]}
        response = await run.client.post("/v1/predict", json=body)
        assert response.status_code == 200
        assert run.detector.image_calls == [2, 2, 1]
        assert all(r["status"] == 200 for r in response.json()["results"])


async def test_too_many_images_and_too_many_decoded_bytes_are_refused_whole() -> None:
    async with running(json_max_images=3, json_max_decoded_bytes=2000) as run:
        many = await run.client.post("/v1/predict", json={"images": [image(b"x")] * 4})
        assert many.status_code == 422 and error_code(many) == "too_many_images"
        flood = json.dumps({"images": [{"data": ""}] * 100_000}).encode()
        began = time.perf_counter()
        flooded = await post_raw(run.client, flood)
        assert flooded.status_code == 422 and error_code(flooded) == "too_many_images"
        assert time.perf_counter() - began < 5.0
        large = await run.client.post("/v1/predict", json={"images": [image(bytes(1500))] * 2})
        assert large.status_code == 413 and error_code(large) == "batch_too_large"
        assert run.detector.image_calls == []
        limits = (await run.client.get("/v1/limits")).json()
        assert limits == {
            "max_images": 3,
            "max_decoded_bytes": 2000,
            "max_body_bytes": 20 * 1024 * 1024,
            "clip_max_bytes": 20 * 1024 * 1024,
            "clip_max_duration_s": 60.0,
            "job_max_bytes": 2048 * 1024 * 1024,
            "job_max_duration_s": 7200.0,
        }


async def test_a_body_over_the_upload_limit_is_413() -> None:
    async with running(max_upload_bytes=5000) as run:
        response = await run.client.post("/v1/predict", json={"images": [image(bytes(6000))]})
    assert response.status_code == 413 and error_code(response) == "payload_too_large"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "empty_payload"),
        (b"{", 400, "invalid_json"),
        (b"\xff\xfe{}", 400, "invalid_json"),
        (b'{"images": [{"data": "aGk=", "data": "aGk="}]}', 400, "invalid_json"),
        (b'{"images": [{"data": "aGk="}], "images": []}', 400, "invalid_json"),
        (b'{"images": [{"data": "aGk="}], "options": {"fps": NaN}}', 400, "invalid_json"),
        (b'{"images": [{"data": "aGk="}], "options": {"fps": Infinity}}', 400, "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400, "invalid_json"),
        (b'{"images": [{"data": "aGk="}], "prompts": [' + b'"a",' * 200_000 + b'"a"]}', 400, "invalid_json"),
        (b'{"images": [{"data": "aGk="}], "options": {"fps": 1' + b"0" * 5000 + b"}}", 400, "invalid_json"),
        (b'{"images": ["' + b'\\"' * 2_000_000, 400, "invalid_json"),  # unterminated, escaped quotes
        (b"[]", 422, "invalid_request"),
        (b'"images"', 422, "invalid_request"),
        (b"null", 422, "invalid_request"),
        (b"{}", 422, "invalid_request"),
        (b'{"images": []}', 422, "invalid_request"),
        (b'{"images": {"data": "aGk="}}', 422, "invalid_request"),
        (b'{"images": [{"data": 5}]}', 422, "invalid_request"),
        (b'{"images": [{"data": ["aGk="]}]}', 422, "invalid_request"),
        (b'{"images": ["aGk="]}', 422, "invalid_request"),
        (b'{"images": [{"data": "aGk=", "url": "http://169.254.169.254/"}]}', 422, "invalid_request"),
        (b'{"images": [{"data": "aGk="}], "unknown": 1}', 422, "invalid_request"),
        (b'{"images": [{"data": "aGk="}], "prompts": "smile"}', 422, "invalid_request"),
        (b'{"images": [{"data": "aGk="}], "options": {"fps": "fast"}}', 422, "invalid_request"),
        (b'{"images": [{"data": "aGk="}], "options": {"media": "video"}}', 422, "invalid_request"),
        (b'{"images": [{"data": "aGk="}], "options": {"nope": 1}}', 422, "invalid_request"),
        (b'{"images": [{"data": "aGk="}], "model": "a", "options": {"model": "b"}}', 422, "invalid_request"),
        (b'{"images": [{"data": "aGk="}], "model": "../../etc/passwd"}', 422, "invalid_request"),
        (b'{"images": [{"data": "aGk="}], "model": "nope"}', 404, "model_not_found"),
        (b'{"images": [{"data": "aGk="}], "model": "fake_stt"}', 422, "model_task_mismatch"),
        (b'{"images": [{"data": "aGk=", "id": "' + b"i" * 10_000 + b'"}]}', 422, "invalid_request"),
        (b'{"images": [{"data": "aGk="}], "prompts": ["' + b"p" * 10_000 + b'"]}', 422, "invalid_prompt"),
        (b'{"images": [{"data": "aGk="}], "prompts": ["", "x"]}', 422, "invalid_prompt"),
        (
            b'{"images": [{"data": "aGk="}], "prompts": ' + json.dumps(["p"] * 9).encode() + b"}",
            422,
            "too_many_prompts",
        ),
    ],
)
async def test_hostile_json_gets_a_clear_4xx(body: bytes, status: int, code: str) -> None:
    async with running() as run:
        began = time.perf_counter()
        response = await post_raw(run.client, body)
        assert (response.status_code, error_code(response)) == (status, code), response.text
        assert time.perf_counter() - began < 5.0
        assert run.app.state.resources.memory.used == 0
        ok = await run.client.post("/v1/predict", json={"images": [image(png_bytes(100))]})
        assert ok.status_code == 200  # the service keeps serving


@pytest.mark.parametrize(
    "content_type",
    ["image/png", "text/plain", "multipart/form-data; boundary=x", "application/json; charset=latin-1", ""],
)
async def test_a_body_that_is_not_json_by_its_content_type_is_415(content_type: str) -> None:
    async with running() as run:
        response = await post_raw(
            run.client, json.dumps({"images": [image(png_bytes(100))]}).encode(), content_type
        )
    assert response.status_code == 415 and error_code(response) == "unsupported_media_type"


async def test_options_apply_to_every_image() -> None:
    body = {"images": [image(png_bytes(100))] * 2, "options": {"model": "fake_cls", "prompts": ["a grin"]}}
    async with running() as run:
        response = await run.client.post("/v1/predict", json=body)
        top_level = await run.client.post(
            "/v1/predict", json={"images": body["images"], "model": "fake_cls", "prompts": ["a grin"]}
        )
    assert response.status_code == 200 and top_level.status_code == 200
    for answer in (response.json(), top_level.json()):
        for result in answer["results"]:
            assert result["response"]["model"]["name"] == "fake_cls"
            assert result["response"]["faces"][0]["text_similarity"][-1]["prompt"] == "a grin"


async def test_a_gif_is_taken_as_a_still() -> None:
    frames = [Image.new("RGB", (200, 100), (i * 40, 90, 90)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    async with running() as run:
        response = await run.client.post("/v1/predict", json={"images": [image(buffer.getvalue())]})
    (result,) = response.json()["results"]
    assert result["status"] == 200 and result["response"]["media"] == "image"
    assert len(result["response"]["faces"]) == 2


async def test_a_failing_model_fails_the_batch_with_its_status() -> None:
    from service.exceptions import InferenceUnavailable

    async with running() as run:
        run.inference.fail_infer_with = InferenceUnavailable("down", retry_after_s=5)
        response = await run.client.post("/v1/predict", json={"images": [image(png_bytes(100))]})
        assert response.status_code == 503 and error_code(response) == "inference_unavailable"
        assert response.headers["retry-after"] == "5"
        assert run.app.state.resources.memory.used == 0


async def test_openapi_documents_the_json_batch_with_an_example() -> None:
    async with running() as run:
        spec = (await run.client.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/predict"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert set(content["schema"]["properties"]) == {"images", "model", "prompts", "options"}
    assert "$ref" not in json.dumps(content["schema"])  # written in place, resolvable by any reader
    assert content["examples"]["two photos"]["value"]["images"][0]["id"] == "messi5.jpg"
    assert "SSRF" in operation["description"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "BatchPredictResponse"
    )
    documented = {
        status: set(r["description"].split(", "))
        for status, r in operation["responses"].items()
        if status != "200"
    }
    assert documented == JSON_BATCH_ERRORS_BY_STATUS  # the written-out contract (tests/error_table.py)


async def test_the_client_splits_images_by_the_servers_limits() -> None:
    photos = [png_bytes(100 * (1 + i % 3)) for i in range(7)]
    async with running(json_max_images=3) as run:
        transport = httpx.ASGITransport(app=run.app)
        async with AsyncFerClient("http://test", transport=transport) as client:
            results = await client.predict_many([*photos, b"junk"], concurrency=2)
            assert run.detector.image_calls and sum(run.detector.image_calls) == 7
            assert sorted(run.detector.image_calls) == [1, 3, 3]  # 8 images in 3 batches of at most 3
            with pytest.raises(FerError) as refused:
                await client.predict_batch(photos[:4])
    assert [len(r.faces) for r in results[:7] if not isinstance(r, FerError)] == [1, 2, 3, 1, 2, 3, 1]
    assert isinstance(results[7], FerError) and results[7].code == "unsupported_media_type"
    assert refused.value.status == 422 and refused.value.code == "too_many_images"


async def test_concurrent_batches_and_single_uploads_all_answer() -> None:
    async with running() as run:
        body = {"images": [image(png_bytes(200))] * 4}
        single = run.client.post("/predict", files={"file": ("p.png", png_bytes(200), "image/png")})
        batches = [run.client.post("/v1/predict", json=body) for _ in range(2)]
        answers = await asyncio.wait_for(asyncio.gather(batches[0], single, batches[1]), timeout=30)
    assert [a.status_code for a in answers] == [200, 200, 200]

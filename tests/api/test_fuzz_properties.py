"""Property-based fuzzing of /predict (hypothesis) against the in-process app with the fake inference.

Whatever the bytes, the multipart framing or the query, the answer is a 2xx or 4xx with a JSON body, and a
4xx is the API's error envelope. Bounded (max_examples, no deadline) so the suite stays fast; the corpus
of named hostile inputs against the real stack is tests/integration/test_fuzz_corpus.py.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator

import httpx
import pytest
import skimage.data
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from service.config import Settings
from service.http.app import create_app
from tests.api.conftest import FakeDetector, FakeInference

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
QUERY_KEYS = ("model", "media", "fps", "stride", "max_frames", "max_duration_s", "include", "other")
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # A synchronous client: hypothesis drives plain functions; the app's lifespan runs once per module.
    config = Settings(triton_url="fake:0", default_model="fake_fer", default_video_model="fake_stt")
    app = create_app(config, inference=lambda _s, _m: FakeInference(), detector=lambda _s: FakeDetector())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def assert_sane(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()  # raises on a non-JSON body
    if response.status_code >= 400:
        assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]


@functools.cache
def astronaut() -> Image.Image:
    """scikit-image's astronaut: a real portrait that ships in a wheel (the API layer fetches no media)."""
    return Image.fromarray(skimage.data.astronaut())


@functools.cache
def image_bytes(fmt: str, width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    image = astronaut().resize((width, height))
    (image.convert("P") if fmt == "GIF" else image).save(buffer, format=fmt)
    return buffer.getvalue()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A real photo in a random format and size, then truncated, its bytes overwritten, junk appended."""
    fmt = draw(st.sampled_from(FORMATS))
    data = bytearray(image_bytes(fmt, draw(st.integers(1, 400)), draw(st.integers(1, 300))))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=64))


query_values = st.one_of(
    st.text(max_size=40),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["timeline", "tracks", "image", "video", "auto", "../../etc/passwd", "stt", "fake_fer"]),
)
queries = st.lists(st.tuples(st.sampled_from(QUERY_KEYS), query_values), max_size=5)


@FUZZ
@given(body=st.binary(max_size=4096), content_type=st.sampled_from(["image/png", "image/jpeg", "video/mp4"]))
def test_random_raw_bodies(client: TestClient, body: bytes, content_type: str) -> None:
    assert_sane(client.post("/predict", content=body, headers={"Content-Type": content_type}))


@FUZZ
@given(data=mutated_images())
def test_mutated_real_images(client: TestClient, data: bytes) -> None:
    assert_sane(client.post("/predict", files={"file": ("x", data)}))


@FUZZ
@given(params=queries, data=st.sampled_from(FORMATS).map(lambda fmt: image_bytes(fmt, 320, 120)))
def test_random_query_parameters(client: TestClient, params: list[tuple[str, str]], data: bytes) -> None:
    assert_sane(client.post("/predict", params=params, files={"file": ("x", data)}))


@settings(FUZZ, max_examples=100)
@given(
    preamble=st.binary(max_size=64),
    boundary=st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), min_size=0, max_size=80),
    body=st.binary(max_size=2048),
)
def test_random_multipart(client: TestClient, preamble: bytes, boundary: str, body: bytes) -> None:
    framed = preamble + b"--" + boundary.encode() + b"\r\n" + body
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert_sane(client.post("/predict", content=framed, headers=headers))

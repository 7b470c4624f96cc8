"""Property-based fuzzing of POST /v1/predict (hypothesis) against the in-process app with the fake
inference: whatever the JSON (or not-JSON) body, the answer is a 2xx or 4xx with a JSON body, a 4xx is the
API's error envelope, and a 200 has one result per image, each an answer or an error. The named hostile
JSON against the real stack is in tests/corpus.py (json_probes)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from service.config import Settings
from service.http.app import create_app
from tests.api.conftest import FakeDetector, FakeInference
from tests.api.test_fuzz_properties import FUZZ, assert_sane, mutated_images

KEYS = ("images", "data", "id", "model", "prompts", "options", "fps", "media", "include", "other")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    config = Settings(triton_url="fake:0", default_model="fake_fer", default_video_model="fake_stt")
    app = create_app(config, inference=lambda _s, _m: FakeInference(), detector=lambda _s: FakeDetector())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def post(client: TestClient, body: bytes) -> httpx.Response:
    return client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=30,
)


@FUZZ
@given(document=json_values)
def test_random_json_documents(client: TestClient, document: Any) -> None:
    assert_sane(post(client, json.dumps(document).encode()))


@FUZZ
@given(body=st.binary(max_size=2048))
def test_random_bytes_as_json(client: TestClient, body: bytes) -> None:
    assert_sane(post(client, body))


@FUZZ
@given(
    images=st.lists(
        st.one_of(
            mutated_images().map(lambda data: base64.b64encode(data).decode()),
            st.text(max_size=64),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_batches_of_mutated_real_images(client: TestClient, images: list[str]) -> None:
    body = json.dumps({"images": [{"data": data, "id": str(i)} for i, data in enumerate(images)]})
    response = post(client, body.encode())
    assert_sane(response)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == [str(i) for i in range(len(images))]
    for result in results:
        assert (result["response"] is None) != (result["error"] is None)
        assert (result["status"] == 200) == (result["response"] is not None)
        assert 400 <= result["status"] < 500 or result["status"] == 200

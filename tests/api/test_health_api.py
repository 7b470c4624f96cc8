import httpx

from tests.api.conftest import FakeInference, png_bytes, running_app
from tests.error_table import EVERY_ERROR_BY_STATUS, MODELS_ERRORS_BY_STATUS


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


async def test_readyz_follows_the_inference_server() -> None:
    fake = FakeInference()
    async with running_app(fake) as client:
        ready = await client.get("/readyz")
        fake.ready = False
        not_ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "triton": True,
        "models": True,
        "model:fake_fer": True,
    }
    assert not_ready.status_code == 503 and not_ready.json()["status"] == "unavailable"


async def test_models_lists_labels_prompts_and_training_state(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    assert body["default_model"] == "fake_fer" and body["default_video_model"] == "fake_stt"
    (model,) = body["models"]
    assert model["state"] == "READY"
    assert model["info"]["trained"] is False
    assert model["info"]["labels"][0] == "neutral" and len(model["info"]["prompts"]) == 7


async def test_metrics_expose_requests_stages_faces_and_batches(client: httpx.AsyncClient) -> None:
    await client.post("/predict", content=png_bytes(300), headers={"Content-Type": "image/png"})
    await client.post("/predict", content=b"nope", headers={"Content-Type": "image/png"})
    text = (await client.get("/metrics")).text
    assert 'fer_http_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'fer_http_requests_total{method="POST",route="/predict",status="415"} 1.0' in text
    assert 'fer_stage_duration_seconds_count{stage="detect"} 1.0' in text
    assert "fer_faces_per_image_sum 3.0" in text
    assert "fer_in_flight_requests 0.0" in text


async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_openapi_documents_predict_and_errors(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    predict = spec["paths"]["/predict"]["post"]
    assert {"multipart/form-data", "image/jpeg"} <= set(predict["requestBody"]["content"])
    assert {"413", "415", "422", "429", "503", "504"} <= set(predict["responses"])
    assert "ErrorResponse" in spec["components"]["schemas"]


def _documented_errors(responses: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    """status → the error codes its description lists (the 200 is not an error)."""
    return {status: set(r["description"].split(", ")) for status, r in responses.items() if status != "200"}


async def test_openapi_errors_are_the_written_out_contract(client: httpx.AsyncClient) -> None:
    """Compared with tests/error_table.py, not with the table that generates the document."""
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert _documented_errors(paths["/predict"]["post"]["responses"]) == EVERY_ERROR_BY_STATUS
    assert _documented_errors(paths["/annotate"]["post"]["responses"]) == EVERY_ERROR_BY_STATUS
    assert _documented_errors(paths["/v1/models"]["get"]["responses"]) == MODELS_ERRORS_BY_STATUS
    for status in EVERY_ERROR_BY_STATUS:
        schema = paths["/predict"]["post"]["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}


async def test_openapi_carries_a_worked_example(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    (example,) = spec["components"]["schemas"]["PredictResponse"]["examples"]
    assert example["faces"][0]["expression"]["label"] in example["model"]["labels"]


async def test_wrong_method_is_a_json_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.request("TRACE", "/healthz")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET"

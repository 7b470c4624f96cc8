"""A landmark model (POSTER) gets each face's 5 landmarks beside its crop; trained provenance is shown."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fermodels.contract import RAFDB_LABELS, EvaluationMetrics, ModelConfig
from service.arrays import FloatArray
from service.inference.base import ImageOutputs, RepositoryEntry, ServedModel
from tests.api.conftest import FakeInference, png_bytes, running_app

METRICS = EvaluationMetrics("imagefolder test", 8, 0.75, 0.5, (("happiness", 1.0), ("fear", None)))
LANDMARK_CONFIG = ModelConfig(
    name="fake_poster",
    architecture="poster",
    input_size=32,
    labels=RAFDB_LABELS,
    num_landmarks=5,
    trained=True,
    dataset="imagefolder train",
    metrics=METRICS,
)


@dataclass
class LandmarkInference(FakeInference):
    landmarks: list[FloatArray | None] = field(default_factory=list)

    async def model_statuses(self) -> list[RepositoryEntry]:
        return [RepositoryEntry("fake_poster", "1", "READY")]

    async def served_model(self, name: str) -> ServedModel:
        if name == "fake_poster":
            return ServedModel(config=LANDMARK_CONFIG, version="1", max_batch_size=2)
        return await super().served_model(name)

    async def infer_image(  # type: ignore[override]
        self, model: ServedModel, crops: FloatArray, landmarks: FloatArray | None = None
    ) -> ImageOutputs:
        self.landmarks.append(landmarks)
        outputs = await super().infer_image(model, crops)
        if model.config.prompts:
            return outputs
        return ImageOutputs(outputs.probabilities, outputs.embeddings, np.zeros((len(crops), 0), np.float32))


async def test_each_face_is_sent_with_its_landmarks_in_crop_coordinates() -> None:
    fake = LandmarkInference()
    async with running_app(fake) as client:
        response = await client.post(
            "/predict?model=fake_poster", content=png_bytes(500), headers={"Content-Type": "image/png"}
        )
    assert response.status_code == 200, response.text
    assert len(response.json()["faces"]) == 5
    # 5 faces, max_batch_size 2: three calls, each with as many landmark sets as crops.
    assert fake.calls == [2, 2, 1]
    sent = [points for points in fake.landmarks if points is not None]
    assert [points.shape for points in sent] == [(2, 5, 2), (2, 5, 2), (1, 5, 2)]
    template = np.asarray(LANDMARK_CONFIG.normalised_landmark_template())
    for points in sent:  # the fake detector's faces are all the same shape: one similarity from the template
        assert ((points > 0) & (points < 1)).all()
        assert np.abs(points - template).max() < 0.1


async def test_models_and_responses_show_the_training_data_and_metrics() -> None:
    async with running_app(LandmarkInference()) as client:
        listed = (await client.get("/v1/models")).json()["models"][0]["info"]
        predicted = (
            await client.post(
                "/predict?model=fake_poster", content=png_bytes(), headers={"Content-Type": "image/png"}
            )
        ).json()["model"]
    for info in (listed, predicted):
        assert info["trained"] is True and info["dataset"] == "imagefolder train"
        assert info["metrics"] == {
            "data": "imagefolder test",
            "num_samples": 8,
            "war": 0.75,
            "uar": 0.5,
            "per_class_recall": {"happiness": 1.0, "fear": None},
        }
        assert info["inputs"] == ["face_crop", "landmarks"]


async def test_single_input_models_are_called_as_before() -> None:
    fake = LandmarkInference()
    async with running_app(fake) as client:
        response = await client.post("/predict", content=png_bytes(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200 and fake.landmarks == [None]
    assert response.json()["model"]["metrics"] is None and response.json()["model"]["inputs"] == ["face_crop"]

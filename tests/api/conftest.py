"""The in-process app with a fake inference backend and a fake detector (API layer only)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from fermodels.contract import RAFDB_LABELS, TEXT_ENCODER, ModelConfig, prompts_for
from service.arrays import FloatArray, IntArray
from service.config import Settings
from service.detection.base import Detections
from service.exceptions import ModelNotFound, ServiceError
from service.http.app import create_app
from service.inference.base import ClipOutputs, ImageOutputs, RepositoryEntry, ServedModel, ServedTextEncoder

FAKE_VIDEO_CONFIG = ModelConfig(
    name="fake_stt", architecture="fake", task="video", input_size=32, labels=RAFDB_LABELS, clip_length=4
)
FAKE_CONFIG = ModelConfig(
    name="fake_fer",
    architecture="fake",
    input_size=32,
    labels=RAFDB_LABELS,
    prompts=prompts_for(RAFDB_LABELS),
)

# A classifier without a text side (like the trained mini-Xception): its text similarity is ConSE's.
FAKE_CLASSIFIER_CONFIG = ModelConfig(
    name="fake_cls", architecture="fake", input_size=32, labels=RAFDB_LABELS, trained=True
)
# A classifier that also regresses valence and arousal (like HSEmotion's _mtl nets), cut from the box.
FAKE_AFFECT_CONFIG = ModelConfig(
    name="fake_va",
    architecture="fake",
    input_size=32,
    labels=RAFDB_LABELS,
    trained=True,
    affect_outputs=("valence", "arousal"),
    crop_mode="box",
)


@dataclass
class FakeInference:
    """Computes outputs from the crops (so the test sees real plumbing) and can fail or stall on demand."""

    fail_with: ServiceError | None = None
    fail_infer_with: Exception | None = (
        None  # raised by infer_image/infer_clip after `arrived`, before `gate`
    )
    gate: asyncio.Event | None = None
    ready: bool = True
    calls: list[int] = field(default_factory=list)
    clip_calls: list[tuple[int, ...]] = field(default_factory=list)
    text_calls: list[int] = field(default_factory=list)  # prompts per text-encoder call
    extra_statuses: list[RepositoryEntry] = field(default_factory=list)
    arrived: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))

    async def server_ready(self) -> bool:
        return self.ready

    async def model_statuses(self) -> list[RepositoryEntry]:
        return [
            RepositoryEntry("fake_fer", "1", "READY" if self.ready else "UNAVAILABLE"),
            *self.extra_statuses,
        ]

    async def served_model(self, name: str) -> ServedModel:
        if self.fail_with is not None:
            raise self.fail_with
        configs = {
            "fake_fer": FAKE_CONFIG,
            "fake_stt": FAKE_VIDEO_CONFIG,
            "fake_cls": FAKE_CLASSIFIER_CONFIG,
            "fake_va": FAKE_AFFECT_CONFIG,
        }
        if name not in configs:
            raise ModelNotFound(f"model {name!r} is not served")
        return ServedModel(config=configs[name], version="1", max_batch_size=4)

    async def infer_clip(self, model: ServedModel, clips: FloatArray) -> ClipOutputs:
        self.arrived.release()
        if self.fail_infer_with is not None:
            raise self.fail_infer_with
        if self.gate is not None:
            await self.gate.wait()
        self.clip_calls.append(clips.shape[:2])
        uniform = np.full((len(clips), 7), 1 / 7, dtype=np.float32)
        return ClipOutputs(uniform, np.ones((len(clips), 4), np.float32) / 2)

    async def infer_image(self, model: ServedModel, crops: FloatArray) -> ImageOutputs:
        self.arrived.release()
        if self.fail_infer_with is not None:
            raise self.fail_infer_with
        if self.gate is not None:
            await self.gate.wait()
        self.calls.append(len(crops))
        brightness = crops.mean(axis=(1, 2, 3))
        logits = np.outer(brightness, np.arange(7, dtype=np.float32))
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        # Valence = the crop's mean brightness - 0.5, arousal = its negative: known values per face.
        affect = (
            np.stack([brightness - 0.5, 0.5 - brightness], axis=1) if model.config.affect_outputs else None
        )
        return ImageOutputs(
            probabilities.astype(np.float32),
            np.ones((len(crops), 4), np.float32) / 2,
            np.tile(np.linspace(-0.5, 0.5, 7, dtype=np.float32), (len(crops), 1)),
            *(() if affect is None else (affect.astype(np.float32),)),
        )

    async def served_text_encoder(self, name: str) -> ServedTextEncoder:
        if name != TEXT_ENCODER.name:
            raise ModelNotFound(f"model {name!r} is not served")
        return ServedTextEncoder(config=TEXT_ENCODER, version="1")

    async def infer_text(self, encoder: ServedTextEncoder, ids: IntArray, mask: IntArray) -> FloatArray:
        """A unit vector per prompt, seeded by its tokens (the same prompt always maps to the same one)."""
        self.text_calls.append(len(ids))
        rows = []
        for row, keep in zip(ids, mask, strict=True):
            seed = int.from_bytes(hashlib.sha256(row[keep > 0].tobytes()).digest()[:8], "little")
            vector = np.random.default_rng(seed).standard_normal(encoder.config.dim)
            rows.append(vector / np.linalg.norm(vector))
        return np.asarray(rows, dtype=np.float32)

    async def close(self) -> None:
        return None


class FakeDetector:
    """One face per 100 px of image width, laid out left to right."""

    def __init__(self) -> None:
        self.image_calls: list[int] = []  # images per detect_images call

    def detect_batch(self, frames: np.ndarray) -> list[Detections]:
        return [self.detect(frame) for frame in frames]

    def detect_images(self, images: Sequence[np.ndarray]) -> list[Detections]:
        self.image_calls.append(len(images))
        return [self.detect(image) for image in images]

    def close(self) -> None:
        pass

    def detect(self, rgb: np.ndarray) -> Detections:
        count = rgb.shape[1] // 100
        boxes = np.array([[100.0 * i + 10, 10, 100.0 * i + 90, 90] for i in range(count)]).reshape(-1, 4)
        template = np.array([[30, 40], [70, 40], [50, 60], [35, 75], [65, 75]], dtype=np.float64)
        landmarks = np.array([template + np.array([100.0 * i, 0.0]) for i in range(count)]).reshape(-1, 5, 2)
        return Detections(boxes, landmarks, np.linspace(0.99, 0.95, count))


def png_bytes(width: int = 300, height: int = 100) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


@asynccontextmanager
async def running_app(
    inference: FakeInference | None = None, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    backend = inference or FakeInference()
    overrides.setdefault("jobs_dir", Path(tempfile.mkdtemp(prefix="fer-jobs-api-")))
    overrides.setdefault("memory_follow_resident", False)  # pytest's resident memory is not the app's
    settings = Settings(
        triton_url="fake:0", default_model="fake_fer", default_video_model="fake_stt", **overrides
    )  # type: ignore[arg-type]
    app = create_app(
        settings,
        inference=lambda _settings, _metrics: backend,
        detector=lambda _settings: FakeDetector(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with running_app() as c:
        yield c

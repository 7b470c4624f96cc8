"""The API contract: request options, responses and the error envelope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

EXAMPLES_DIR = Path(__file__).parent / "examples"


def _add_predict_example(schema: dict[str, Any]) -> None:
    """A real response (messi5.jpg, trained mini-Xception) for /docs; read when the schema is built."""
    example = json.loads((EXAMPLES_DIR / "predict_response.json").read_text(encoding="utf-8"))
    schema["examples"] = [example]


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())


class ErrorDetail(_Schema):
    code: str = Field(description="Stable machine-readable error code.", examples=["invalid_image"])
    message: str = Field(description="Human-readable explanation.", examples=["image data is truncated"])


class ErrorResponse(_Schema):
    error: ErrorDetail


class Box(_Schema):
    x1: float = Field(description="Left edge, pixels.", examples=[226.7])
    y1: float = Field(description="Top edge, pixels.", examples=[93.9])
    x2: float = Field(description="Right edge, pixels.", examples=[254.2])
    y2: float = Field(description="Bottom edge, pixels.", examples=[132.5])


class Point(_Schema):
    x: float
    y: float


class Landmarks(_Schema):
    """MTCNN's 5 points in image pixels; left/right as seen in the image."""

    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point


class LabelScore(_Schema):
    label: str = Field(description="Canonical expression label.", examples=["happiness"])
    probability: float = Field(ge=0.0, le=1.0, examples=[0.83])


class TextSimilarity(_Schema):
    label: str = Field(description="Expression the prompt describes.", examples=["happiness"])
    prompt: str = Field(examples=["a photo of a person making a happy facial expression."])
    score: float = Field(description="Cosine similarity of image and prompt embeddings, in [-1, 1].")


class FaceResult(_Schema):
    box: Box
    landmarks: Landmarks
    detection_score: float = Field(ge=0.0, le=1.0, description="MTCNN face probability.")
    expression: LabelScore = Field(description="Most probable expression.")
    expressions: list[LabelScore] = Field(description="Full distribution in canonical label order.")
    text_similarity: list[TextSimilarity] = Field(
        description="Similarity of the face embedding to the text embedding of each expression prompt."
    )


class ImageInfo(_Schema):
    width: int = Field(examples=[548])
    height: int = Field(examples=[342])
    format: str = Field(description="Container format detected from the bytes.", examples=["JPEG"])


class ModelInfo(_Schema):
    name: str = Field(examples=["fer_former"])
    version: str = Field(examples=["1"])
    architecture: str = Field(examples=["fer_former"])
    trained: bool = Field(description="False: weights are not trained and outputs are not predictions.")
    weights: str = Field(description="Provenance of the served weights.")
    accuracy: str = Field(description="Measured accuracy and on which data, or 'not measured'.")
    license: str
    input_size: int = Field(description="Side of the aligned square face crop fed to the model.")
    labels: list[str] = Field(description="The model's labels in canonical order.")
    prompts: list[str] = Field(description="Text prompts behind text_similarity, in label order.")
    text_encoder: str = Field(description="Encoder that produced the prompt embeddings.")
    max_batch_size: int


class PredictResponse(_Schema):
    model_config = ConfigDict(frozen=True, protected_namespaces=(), json_schema_extra=_add_predict_example)

    image: ImageInfo
    model: ModelInfo
    faces: list[FaceResult]
    timings_ms: dict[str, float] = Field(
        description="Wall time per pipeline stage (decode, detect, align, infer, assemble) and total."
    )
    warnings: list[str] = Field(default_factory=list)


class ModelState(_Schema):
    name: str
    version: str
    state: str = Field(description="Triton's state of the model, e.g. READY or UNAVAILABLE.")
    info: ModelInfo | None = Field(None, description="Config of a ready model.")


class ModelsResponse(_Schema):
    default_model: str
    models: list[ModelState]


class HealthResponse(_Schema):
    status: Literal["ok", "unavailable"]
    checks: dict[str, bool] = Field(default_factory=dict)

"""Model outputs + detections → the API's per-face results, with labels in canonical order."""

from __future__ import annotations

import numpy as np

from fermodels.config import EvaluationMetrics, ModelConfig, canonical_order, prompts_for
from service.inference.base import FloatArray, ImageOutputs, ServedModel
from service.inference.similarity import TextScores
from service.schemas import (
    LANDMARK_NAMES,
    Box,
    CropInfo,
    FaceResult,
    LabelScore,
    Landmarks,
    ModelInfo,
    ModelMetrics,
    Point,
    TextSimilarity,
)
from service.vision.detection import Detections

# Pixels to 1/100 px and scores to 6 decimals: more digits are noise and only bloat the JSON.
PIXEL_DECIMALS, SCORE_DECIMALS = 2, 6


def _px(value: float) -> float:
    return round(float(value), PIXEL_DECIMALS)


def _score(value: float) -> float:
    return round(float(value), SCORE_DECIMALS)


UNTRAINED_WARNING = (
    "model {name!r} serves untrained weights ({weights}): its outputs (expression probabilities{text}) "
    "are NOT predictions; use them only to test the plumbing"
)


NO_TEXT_WARNING = (
    "model {name!r} has no text side: text_similarity is zero-shot (method 'conse': the face's expression "
    "probabilities mix the prompts' text embeddings), not a trained image-text match"
)


def label_distribution(probabilities: FloatArray, config: ModelConfig) -> list[LabelScore]:
    """One face's probabilities as (label, probability) pairs in canonical label order."""
    return [
        LabelScore(label=config.labels[i], probability=_score(probabilities[i]))
        for i in canonical_order(config.labels)
    ]


def text_similarities(scores: TextScores, index: int, config: ModelConfig) -> list[TextSimilarity]:
    """One face's scores: the expression prompts in canonical label order, then the caller's in theirs."""
    prompts = config.prompts or prompts_for(config.labels)
    fixed = [
        TextSimilarity(
            label=config.labels[i],
            prompt=prompts[i],
            score=_score(scores.expression[index, i]),
            method=scores.expression_method,
            encoder=scores.expression_encoder,
        )
        for i in canonical_order(config.labels)
    ]
    caller = [
        TextSimilarity(
            label=None,
            prompt=prompt,
            score=_score(scores.caller[index, j]),
            source="caller",
            method="conse",
            encoder=scores.caller_encoder,
        )
        for j, prompt in enumerate(scores.caller_prompts)
    ]
    return fixed + caller


def top_label(probabilities: FloatArray, config: ModelConfig) -> LabelScore:
    """The most probable label of one distribution (a face's or a track's)."""
    best = int(np.argmax(probabilities))
    return LabelScore(label=config.labels[best], probability=_score(probabilities[best]))


def face_result(
    detections: Detections, outputs: ImageOutputs, text: TextScores, index: int, config: ModelConfig
) -> FaceResult:
    probabilities = outputs.probabilities[index]
    x1, y1, x2, y2 = (_px(v) for v in detections.boxes[index])
    points = detections.landmarks[index]
    return FaceResult(
        box=Box(x1=x1, y1=y1, x2=x2, y2=y2),
        landmarks=Landmarks(
            **{name: Point(x=_px(points[i, 0]), y=_px(points[i, 1])) for i, name in enumerate(LANDMARK_NAMES)}
        ),
        detection_score=_score(detections.scores[index]),
        expression=top_label(probabilities, config),
        expressions=label_distribution(probabilities, config),
        text_similarity=text_similarities(text, index, config),
    )


def face_results(
    detections: Detections, outputs: ImageOutputs, text: TextScores, config: ModelConfig
) -> list[FaceResult]:
    return [face_result(detections, outputs, text, i, config) for i in range(len(detections))]


def model_info(model: ServedModel, text_encoder: str = "") -> ModelInfo:
    """``text_encoder``: the encoder of the baked-in expression prompts a classifier is scored against."""
    config = model.config
    order = canonical_order(config.labels)
    prompts = config.prompts or (prompts_for(config.labels) if config.task == "image" else ())
    return ModelInfo(
        name=config.name,
        version=model.version,
        architecture=config.architecture,
        trained=config.trained,
        weights=config.weights,
        accuracy=config.accuracy,
        dataset=config.dataset,
        metrics=model_metrics(config.metrics),
        inputs=["face_crop", "landmarks"] if config.num_landmarks else ["face_crop"],
        license=config.license,
        task=config.task,
        input_size=config.input_size,
        clip_length=config.clip_length,
        labels=[config.labels[i] for i in order],
        prompts=[prompts[i] for i in order] if prompts else [],
        text_encoder=config.text_encoder or text_encoder,
        text_similarity_method="cosine" if config.prompts else "conse",
        max_batch_size=model.max_batch_size,
        crop=crop_info(config),
    )


def model_metrics(metrics: EvaluationMetrics | None) -> ModelMetrics | None:
    if metrics is None:
        return None
    return ModelMetrics(
        data=metrics.data,
        num_samples=metrics.num_samples,
        war=metrics.war,
        uar=metrics.uar,
        per_class_recall=dict(metrics.per_class_recall),
    )


def crop_info(config: ModelConfig) -> CropInfo:
    steps = ["5-point similarity warp (rotation removed)", "anti-aliased"]
    steps += ["grey (OpenCV BT.601 on uint8)"] if config.crop_color == "gray" else []
    steps += [f"cut at {config.crop_size} px"]
    steps += [f"resized to {config.input_size} px"] if config.crop_size != config.input_size else []
    steps += ["averaged with its mirror image"] if config.tta == "flip" else []
    return CropInfo(
        method=", ".join(steps),
        window=list(config.crop_window),
        color=config.crop_color,
        cut_size=config.crop_size,
        test_time_augmentation=config.tta,
    )


def model_warnings(config: ModelConfig) -> list[str]:
    """Untrained weights, and a classifier's zero-shot text similarity (video models have no faces' text)."""
    text = ", text similarities" if config.prompts else ""
    untrained = UNTRAINED_WARNING.format(name=config.name, weights=config.weights, text=text)
    warnings = [] if config.trained else [untrained]
    if not config.prompts and config.task == "image":
        warnings.append(NO_TEXT_WARNING.format(name=config.name))
    return warnings

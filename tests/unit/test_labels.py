from dataclasses import replace

import numpy as np
import pytest

from fermodels.contract import (
    ARCFACE_TEMPLATE_112,
    CANONICAL_LABELS,
    FER2013_LABELS,
    RAFDB_LABELS,
    ModelConfig,
    canonical_order,
    prompts_for,
)
from service.detection.base import Detections
from service.inference.base import ImageOutputs, ServedModel
from service.serving.prompting import ClassPrompts
from service.serving.responses import face_results, model_info, model_warnings, similarity_method
from service.serving.similarity import PromptSet, text_scores


def test_canonical_order_reorders_any_dataset_order() -> None:
    for labels in (RAFDB_LABELS, FER2013_LABELS):
        reordered = [labels[i] for i in canonical_order(labels)]
        assert reordered == [label for label in CANONICAL_LABELS if label in labels]


def test_config_json_round_trip() -> None:
    config = ModelConfig(
        name="m", architecture="a", labels=FER2013_LABELS, prompts=prompts_for(FER2013_LABELS)
    )
    assert ModelConfig.from_json(config.to_json()) == config


def test_config_rejects_unknown_labels_and_mismatched_prompts() -> None:
    with pytest.raises(ValueError):
        ModelConfig(name="m", architecture="a", labels=("joy",))
    with pytest.raises(ValueError):
        ModelConfig(name="m", architecture="a", labels=RAFDB_LABELS, prompts=("one",))


def test_the_default_crop_window_is_the_arcface_template_itself() -> None:
    config = ModelConfig(name="m", architecture="a", input_size=112)
    np.testing.assert_allclose(config.landmark_template(), ARCFACE_TEMPLATE_112, atol=1e-9)


def test_a_wider_crop_window_shrinks_the_template_about_the_window_centre() -> None:
    tight = np.asarray(ModelConfig(name="m", architecture="a", input_size=64).landmark_template())
    wide = ModelConfig(name="m", architecture="a", input_size=64, crop_window=(55.5, 55.5, 224.0))
    # Pixel centres on integers: the 64-px crop's centre is at 31.5.
    np.testing.assert_allclose(np.asarray(wide.landmark_template()) - 31.5, (tight - 31.5) * 0.5, atol=1e-9)


def test_a_low_resolution_source_cuts_the_template_at_that_size() -> None:
    config = ModelConfig(name="m", architecture="a", input_size=64, crop_source_size=48)
    assert config.crop_size == 48
    np.testing.assert_allclose(
        np.asarray(config.landmark_template()) + 0.5,
        (np.asarray(config.landmark_template(64)) + 0.5) * 48 / 64,
        atol=1e-9,
    )


def served(labels: tuple[str, ...] = RAFDB_LABELS, trained: bool = False) -> ServedModel:
    config = ModelConfig(
        name="m", architecture="a", labels=labels, prompts=prompts_for(labels), trained=trained
    )
    return ServedModel(config=config, version="3", max_batch_size=8)


def test_face_results_map_model_outputs_to_canonical_labels() -> None:
    model = served()
    probabilities = np.zeros((1, 7), np.float32)
    probabilities[0, RAFDB_LABELS.index("happiness")] = 0.9
    probabilities[0, RAFDB_LABELS.index("anger")] = 0.1
    similarity = np.linspace(-1, 1, 7, dtype=np.float32)[None]
    outputs = ImageOutputs(probabilities, np.zeros((1, 4), np.float32), similarity)
    detections = Detections(
        np.array([[1.0, 2.0, 3.0, 4.0]]), np.arange(10.0).reshape(1, 5, 2), np.array([0.99])
    )
    text = text_scores(probabilities, similarity, ClassPrompts().of(model.config), PromptSet.empty())
    (face,) = face_results(detections, outputs, text, model.config)
    assert face.expression.label == "happiness" and face.expression.probability == pytest.approx(0.9)
    assert [s.label for s in face.expressions] == [
        label for label in CANONICAL_LABELS if label in RAFDB_LABELS
    ]
    assert sum(s.probability for s in face.expressions) == pytest.approx(1.0)
    by_label = {s.label: s for s in face.text_similarity}
    assert by_label["surprise"].score == pytest.approx(-1.0)  # RAF-DB index 0
    assert "surprised" in by_label["surprise"].prompt
    assert face.landmarks.nose.x == 4.0 and face.landmarks.mouth_right.y == 9.0


def test_each_model_says_how_it_scores_text() -> None:
    classifier = replace(served().config, prompts=())
    video = replace(classifier, task="video", clip_length=16)
    assert [similarity_method(c) for c in (served().config, classifier, video)] == ["cosine", "conse", "none"]


def test_untrained_models_are_flagged() -> None:
    assert model_info(served()).trained is False
    assert "NOT predictions" in model_warnings(served().config)[0]
    assert model_warnings(served(trained=True).config) == []

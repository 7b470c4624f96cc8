"""ConSE and cosine text similarity on known vectors."""

from __future__ import annotations

import numpy as np
import pytest

from service.serving.similarity import PromptSet, conse_embeddings, cosine, text_scores

# Three orthonormal class embeddings in 4-d, and a caller prompt halfway between classes 0 and 1.
CLASSES = np.eye(3, 4, dtype=np.float32)
HALFWAY = (np.array([[1.0, 1.0, 0.0, 0.0]]) / np.sqrt(2)).astype(np.float32)


def test_conse_is_the_normalised_probability_weighted_mean() -> None:
    probabilities = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.6, 0.0, 0.4]], np.float32)
    embedded = conse_embeddings(probabilities, CLASSES)
    np.testing.assert_allclose(embedded[0], [1, 0, 0, 0], atol=1e-7)  # a certain face is its class
    np.testing.assert_allclose(embedded[1], HALFWAY[0], atol=1e-7)
    np.testing.assert_allclose(embedded[2], np.array([0.6, 0, 0.4, 0]) / np.hypot(0.6, 0.4), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(embedded, axis=1), 1.0, atol=1e-6)


def test_cosine_of_unit_vectors_stays_in_range() -> None:
    scores = cosine(np.array([[1.0, 0, 0, 0]], np.float32) * 1.0000001, CLASSES)
    assert scores.max() <= 1.0 and scores[0, 0] == pytest.approx(1.0)
    assert cosine(HALFWAY, CLASSES)[0, :2] == pytest.approx([np.sqrt(0.5)] * 2)


def test_text_scores_use_the_models_own_cosine_when_it_has_a_text_side() -> None:
    probabilities = np.array([[0.5, 0.5, 0.0]], np.float32)
    classes = PromptSet(("a", "b", "c"), CLASSES, "enc-fixed")
    caller = PromptSet(("halfway",), HALFWAY, "enc-caller")
    own = np.array([[0.1, 0.2, 0.3]], np.float32)
    with_text_side = text_scores(probabilities, own, classes, caller)
    assert with_text_side.expression_method == "cosine" and with_text_side.expression is own
    classifier = text_scores(probabilities, None, classes, caller)
    assert classifier.expression_method == "conse"
    assert classifier.expression[0] == pytest.approx([np.sqrt(0.5), np.sqrt(0.5), 0.0], abs=1e-6)
    # Either way the caller's prompt is scored by ConSE: halfway between the two likely classes is a match.
    assert with_text_side.caller[0, 0] == pytest.approx(1.0, abs=1e-6) == classifier.caller[0, 0]
    assert classifier.caller_encoder == "enc-caller" and classifier.expression_encoder == "enc-fixed"


def test_no_face_and_no_prompt_give_empty_scores() -> None:
    classes = PromptSet(("a", "b", "c"), CLASSES, "enc")
    none = text_scores(np.zeros((0, 3), np.float32), None, classes, PromptSet.empty())
    assert none.expression.shape == (0, 3) and none.caller.shape == (0, 0)
    one = text_scores(np.array([[1.0, 0, 0]], np.float32), None, classes, PromptSet.empty())
    assert one.caller.shape == (1, 0)

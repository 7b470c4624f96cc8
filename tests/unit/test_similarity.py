"""ConSE and cosine text similarity on known vectors."""

from __future__ import annotations

import numpy as np
import pytest

from service.serving.similarity import (
    PromptSet,
    clip_text_scores,
    conse_embeddings,
    cosine,
    text_scores,
)

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


def test_scores_are_float32_and_clipped_on_both_sides() -> None:
    beyond = np.array([[1.0000001, 0, 0, 0], [-1.0000001, 0, 0, 0]], np.float32)  # rounding past unit norm
    scores = cosine(beyond, CLASSES)
    assert scores[0, 0] == 1.0 and scores[1, 0] == -1.0 and scores.dtype == np.float32
    embedded = conse_embeddings(np.array([[0.2, 0.8, 0.0]], np.float32), CLASSES)
    assert embedded.dtype == np.float32


def test_scores_keep_the_callers_prompts_and_float32_when_empty() -> None:
    classes = PromptSet(("a", "b", "c"), CLASSES, "enc")
    caller = PromptSet(("halfway", "third"), np.vstack([HALFWAY, CLASSES[2:]]), "enc-caller")
    scored = text_scores(np.array([[0.5, 0.5, 0.0]], np.float32), None, classes, caller)
    assert scored.caller_prompts == ("halfway", "third") and scored.caller_method == "conse"
    assert scored.caller[0] == pytest.approx([1.0, 0.0], abs=1e-6)
    no_face = text_scores(np.zeros((0, 3), np.float32), None, classes, caller)
    assert no_face.caller.shape == (0, 2) and no_face.caller.dtype == np.float32
    assert no_face.expression.dtype == np.float32
    no_prompt = text_scores(np.array([[1.0, 0, 0]], np.float32), None, classes, PromptSet.empty())
    assert no_prompt.caller.dtype == np.float32 and no_prompt.caller_prompts == ()


def test_an_empty_prompt_set_has_no_prompts_no_vectors_and_no_encoder() -> None:
    empty = PromptSet.empty()
    assert empty.prompts == () and empty.encoder == ""
    assert empty.vectors.shape == (0, 0) and empty.vectors.dtype == np.float32
    assert PromptSet.empty(512).vectors.shape == (0, 512)


def test_a_clip_models_caller_prompts_are_its_own_embedding_against_them() -> None:
    own = np.array([[0.3, 0.1, 0.2], [0.0, 0.9, 0.1]], np.float32)
    embeddings = np.array([[1.0, 0, 0, 0], HALFWAY[0]], np.float32)
    caller = PromptSet(("first", "halfway"), np.vstack([CLASSES[:1], HALFWAY]), "vit_text")
    scored = clip_text_scores(own, embeddings, "vit", caller)
    assert scored.expression is own and scored.expression_encoder == "vit"
    assert scored.expression_method == "clip" and scored.caller_method == "clip"
    assert scored.caller_prompts == ("first", "halfway") and scored.caller_encoder == "vit_text"
    np.testing.assert_allclose(scored.caller, [[1.0, np.sqrt(0.5)], [np.sqrt(0.5), 1.0]], atol=1e-6)
    assert scored.caller.dtype == np.float32
    no_prompt = clip_text_scores(own, embeddings, "vit", PromptSet.empty())
    assert no_prompt.caller.shape == (2, 0) and no_prompt.caller.dtype == np.float32
    no_face = clip_text_scores(own[:0], embeddings[:0], "vit", caller)
    assert no_face.caller.shape == (0, 2) and no_face.caller.dtype == np.float32


def test_rows_cut_every_per_face_score_and_keep_the_rest() -> None:
    classes = PromptSet(("a", "b", "c"), CLASSES, "enc-fixed")
    caller = PromptSet(("halfway",), HALFWAY, "enc-caller")
    faces = np.array([[1.0, 0, 0], [0.5, 0.5, 0], [0, 0, 1.0]], np.float32)
    whole = text_scores(faces, None, classes, caller)
    part = whole.rows(1, 3)
    np.testing.assert_array_equal(part.expression, whole.expression[1:3])
    np.testing.assert_array_equal(part.caller, whole.caller[1:3])
    assert (part.expression_method, part.expression_encoder) == ("conse", "enc-fixed")
    assert (part.caller_prompts, part.caller_encoder, part.caller_method) == (
        ("halfway",),
        "enc-caller",
        "conse",
    )
    clip = clip_text_scores(faces, np.eye(3, 4, dtype=np.float32), "vit", caller).rows(0, 1)
    assert clip.caller_method == "clip" and clip.expression.shape == (1, 3)

"""Metrics on hand-computed confusion matrices, and the confusion-matrix PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fermodels.contract import RAFDB_LABELS
from fermodels.metrics import accuracy, confusion_matrix, per_class_recall, save_confusion_png, summarize, uar


def test_confusion_matrix_counts_rows_true_columns_predicted() -> None:
    matrix = confusion_matrix([0, 0, 0, 0, 1, 1, 2], [0, 0, 0, 1, 1, 0, 2], num_classes=3)
    assert matrix.tolist() == [[3, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert matrix.dtype == np.int64


def test_hand_computed_recall_war_uar() -> None:
    matrix = confusion_matrix([0, 0, 0, 0, 1, 1, 2], [0, 0, 0, 1, 1, 0, 2], num_classes=3)
    assert accuracy(matrix) == pytest.approx(5 / 7)
    assert per_class_recall(matrix).tolist() == pytest.approx([0.75, 0.5, 1.0])
    assert uar(matrix) == pytest.approx((0.75 + 0.5 + 1.0) / 3)


def test_uar_and_war_differ_on_imbalanced_data() -> None:
    # Nine majority-class samples all right, the one minority sample wrong: WAR rewards the imbalance.
    matrix = confusion_matrix([0] * 9 + [1], [0] * 10, num_classes=2)
    assert accuracy(matrix) == pytest.approx(0.9)
    assert uar(matrix) == pytest.approx(0.5)


def test_absent_classes_have_no_recall_and_do_not_count_in_uar() -> None:
    matrix = confusion_matrix([0, 1, 1], [0, 1, 0], num_classes=4)
    recall = per_class_recall(matrix)
    assert recall[:2].tolist() == [1.0, 0.5]
    assert math.isnan(recall[2]) and math.isnan(recall[3])
    assert uar(matrix) == pytest.approx(0.75)


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="targets"):
        confusion_matrix([0, 1], [0], num_classes=2)
    with pytest.raises(ValueError, match="class indices"):
        confusion_matrix([0, 2], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="empty"):
        accuracy(confusion_matrix([], [], num_classes=2))
    with pytest.raises(ValueError, match="empty"):
        uar(confusion_matrix([], [], num_classes=2))


def test_summary_is_strict_json_with_null_for_absent_classes() -> None:
    labels = ("happiness", "sadness", "fear")
    summary = summarize(confusion_matrix([0, 0, 1], [0, 1, 1], num_classes=3), labels)
    decoded = json.loads(json.dumps(summary, allow_nan=False))
    assert decoded["war"] == decoded["accuracy"] == pytest.approx(2 / 3)
    assert decoded["uar"] == pytest.approx(0.75)
    assert decoded["per_class_recall"] == {"happiness": 0.5, "sadness": 1.0, "fear": None}
    assert decoded["support"] == {"happiness": 2, "sadness": 1, "fear": 0}
    assert decoded["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_confusion_png_is_a_labelled_heatmap(tmp_path: Path) -> None:
    targets = [3] * 20 + [0] * 5 + [6] * 5
    predictions = [3] * 20 + [0, 0, 0, 6, 6] + [6] * 5
    matrix = confusion_matrix(targets, predictions, num_classes=len(RAFDB_LABELS))
    path = save_confusion_png(matrix, RAFDB_LABELS, tmp_path / "sub" / "confusion.png")
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"), dtype=np.int64)
    assert width > 7 * 64 and height > 7 * 64
    # A full row (happiness 20/20) is drawn dark blue, an empty one stays near white.
    dark = (pixels.sum(axis=2) < 200) & (pixels[..., 2] > pixels[..., 0])
    assert dark.sum() > 1000
    assert (pixels.sum(axis=2) > 700).mean() > 0.3

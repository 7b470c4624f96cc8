"""Classification metrics as the FER literature reports them, and a confusion-matrix PNG.

WAR (weighted average recall) is plain accuracy; UAR (unweighted average recall) is the mean recall over
the classes that occur, so rare classes count as much as common ones (RAF-DB's fear and disgust, DFEW's
disgust). Everything works on a confusion matrix ``[C, C]`` (rows: true class, columns: predicted).
The PNG is drawn with Pillow (already a dependency) rather than matplotlib, which the venv does not have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

IntMatrix = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

# matplotlib's "Blues" colour map, sampled at 0, 0.5 and 1.
_BLUES: Final = ((247, 251, 255), (107, 174, 214), (8, 48, 107))
_MARGIN: Final = 12
_FONT_SIZE: Final = 14


def confusion_matrix(targets: npt.ArrayLike, predictions: npt.ArrayLike, num_classes: int) -> IntMatrix:
    """Counts ``[C, C]``: entry (i, j) is how many samples of class i were predicted as j."""
    true = np.asarray(targets, dtype=np.int64).ravel()
    pred = np.asarray(predictions, dtype=np.int64).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"{true.size} targets but {pred.size} predictions")
    if true.size and (min(true.min(), pred.min()) < 0 or max(true.max(), pred.max()) >= num_classes):
        raise ValueError(f"class indices must be in [0, {num_classes})")
    counts = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def accuracy(matrix: IntMatrix) -> float:
    """Fraction correct, which is also WAR (recall per class weighted by its support)."""
    total = int(matrix.sum())
    if total == 0:
        raise ValueError("the confusion matrix is empty")
    return float(np.trace(matrix)) / total


def per_class_recall(matrix: IntMatrix) -> Float64Array:
    """Recall per true class; NaN for classes with no samples (they have no recall, not a zero one)."""
    support = matrix.sum(axis=1).astype(np.float64)
    diagonal = np.diag(matrix).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall: Float64Array = np.where(support > 0, diagonal / support, np.nan)
    return recall


def uar(matrix: IntMatrix) -> float:
    """Mean recall over the classes that occur."""
    recall = per_class_recall(matrix)
    if np.isnan(recall).all():
        raise ValueError("the confusion matrix is empty")
    return float(np.nanmean(recall))


def summarize(matrix: IntMatrix, labels: Sequence[str]) -> dict[str, Any]:
    """JSON-ready metrics (absent classes' recall is ``None``)."""
    recall = per_class_recall(matrix)
    war = accuracy(matrix)
    return {
        "num_samples": int(matrix.sum()),
        "accuracy": war,
        "war": war,
        "uar": uar(matrix),
        "labels": list(labels),
        "per_class_recall": {label: _finite_or_none(r) for label, r in zip(labels, recall, strict=True)},
        "support": {label: int(n) for label, n in zip(labels, matrix.sum(axis=1), strict=True)},
        "confusion_matrix": matrix.tolist(),
    }


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# ----------------------------------------------------------------------------- PNG


def save_confusion_png(matrix: IntMatrix, labels: Sequence[str], path: Path, title: str = "") -> Path:
    """A labelled heatmap: cell colour = share of the true class's row, cell text = count, a recall column
    on the right (row colours make rare classes readable where raw counts would wash them out)."""
    font = ImageFont.load_default(_FONT_SIZE)
    cell = max(64, max(_text_width(font, label) for label in labels) + 16)
    left = max(_text_width(font, label) for label in labels) + 2 * _MARGIN
    top = 2 * _FONT_SIZE + 4 * _MARGIN
    size = len(labels)
    image = Image.new("RGB", (left + (size + 1) * cell + _MARGIN, top + size * cell + 2 * _MARGIN), "white")
    draw = ImageDraw.Draw(image)
    _draw_cells(draw, font, matrix, (left, top), cell)
    _draw_axes(draw, font, labels, (left, top), cell)
    scores = f"WAR {accuracy(matrix):.1%}   UAR {uar(matrix):.1%}   (rows: true, columns: predicted)"
    heading = f"{title}   {scores}" if title else scores
    draw.text((_MARGIN, _MARGIN), heading, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def _draw_cells(
    draw: ImageDraw.ImageDraw, font: Font, matrix: IntMatrix, origin: tuple[int, int], cell: int
) -> None:
    support = matrix.sum(axis=1)
    recall = per_class_recall(matrix)
    x0, y0 = origin
    for row, col in np.ndindex(matrix.shape):
        share = matrix[row, col] / support[row] if support[row] else 0.0
        box = (x0 + col * cell, y0 + row * cell, x0 + (col + 1) * cell - 1, y0 + (row + 1) * cell - 1)
        draw.rectangle(box, fill=_blues(share), outline=(200, 200, 200))
        _centred(draw, font, box, str(matrix[row, col]), "white" if share > 0.5 else "black")
    for row, value in enumerate(recall):
        box = (
            x0 + len(recall) * cell,
            y0 + row * cell,
            x0 + (len(recall) + 1) * cell - 1,
            y0 + (row + 1) * cell - 1,
        )
        _centred(draw, font, box, "-" if math.isnan(value) else f"{value:.0%}", "black")


def _draw_axes(
    draw: ImageDraw.ImageDraw, font: Font, labels: Sequence[str], origin: tuple[int, int], cell: int
) -> None:
    x0, y0 = origin
    top, bottom = y0 - _FONT_SIZE - _MARGIN, y0 - _MARGIN
    for i, label in enumerate((*labels, "recall")):
        _centred(draw, font, (x0 + i * cell, top, x0 + (i + 1) * cell, bottom), label, "black")
    for i, label in enumerate(labels):
        row_box = (_MARGIN, y0 + i * cell, x0 - _MARGIN, y0 + (i + 1) * cell)
        _centred(draw, font, row_box, label, "black")


def _blues(share: float) -> tuple[int, int, int]:
    """Piecewise-linear interpolation through ``_BLUES`` for ``share`` in [0, 1]."""
    position = min(max(share, 0.0), 1.0) * (len(_BLUES) - 1)
    low = min(int(position), len(_BLUES) - 2)
    t = position - low
    a, b = _BLUES[low], _BLUES[low + 1]
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def _centred(
    draw: ImageDraw.ImageDraw, font: Font, box: tuple[int, int, int, int], text: str, fill: str
) -> None:
    # textbbox rather than anchor="mm": anchors need FreeType, which a Pillow build may lack.
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (box[0] + box[2] - (right - left)) / 2 - left
    y = (box[1] + box[3] - (bottom - top)) / 2 - top
    draw.text((x, y), text, fill=fill, font=font)


def _text_width(font: Font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return math.ceil(right - left)

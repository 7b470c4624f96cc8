"""Test-time augmentation: each face and its views go to the model in the same batched calls, then merge.

"flip" adds the mirror image of every crop (expressions are left-right symmetric; the FER2013 training
code augmented with horizontal flips), and averages the two outputs per face.
"""

from __future__ import annotations

import numpy as np

from fermodels.contract import TestTimeAugmentation
from service.arrays import FloatArray
from service.inference.base import ImageOutputs


def view_count(tta: TestTimeAugmentation) -> int:
    return 2 if tta == "flip" else 1


def with_views(crops: FloatArray, tta: TestTimeAugmentation) -> FloatArray:
    """N x 3 x S x S crops → (V·N) x 3 x S x S: all originals, then every view in the same face order."""
    if tta == "none" or len(crops) == 0:
        return crops
    return np.concatenate([crops, crops[..., ::-1]])


def merged(outputs: ImageOutputs, tta: TestTimeAugmentation) -> ImageOutputs:
    """The mean over each face's views: probabilities stay a distribution, embeddings are re-normalised."""
    views = view_count(tta)
    if views == 1 or len(outputs.probabilities) == 0:
        return outputs
    faces = len(outputs.probabilities) // views

    def mean(rows: FloatArray) -> FloatArray:
        return rows.reshape(views, faces, *rows.shape[1:]).mean(axis=0) if rows.size else rows[:faces]

    embeddings = mean(outputs.embeddings)
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True) if embeddings.size else 1.0
    return ImageOutputs(
        probabilities=mean(outputs.probabilities),
        embeddings=(embeddings / np.maximum(norms, 1e-12)).astype(np.float32),
        text_similarity=mean(outputs.text_similarity),
        affect=mean(outputs.affect),
    )

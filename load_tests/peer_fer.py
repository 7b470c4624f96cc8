"""The peer, run in its own venv (`make peer-venv`): the `fer` library on the same photos, its own front ends.

Reads a JSON list of ``{"path": ..., "mtcnn_rects": [[x, y, w, h], ...]}`` on stdin and prints, per image,
what `fer` 25.10.3 does with the very same FER2013 weights (its Keras .hdf5, ``use_tflite=False``):

- ``haar``: fer's default front end (OpenCV Haar cascade, then tosquare + 10 px offsets, cv2.resize to 64);
- ``mtcnn``: fer's ``mtcnn=True`` front end. facenet-pytorch and TensorFlow crash when loaded into one
  process here, so the caller runs facenet-pytorch's MTCNN on the BGR image exactly as ``FER.find_faces``
  does (``MTCNN(keep_all=True).detect(bgr)``, boxes truncated to int x, y, w, h) and passes the rectangles
  in; fer then crops and classifies them itself.

Only the standard library, numpy, cv2 and fer are imported: this file never imports the project.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf_keras: Keras 2 semantics for the Keras 2.0.5 file
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2
import numpy as np
from fer.fer import FER

FER_OFFSET = 10  # FER(offsets=(10, 10)), its default


class RecordingFER(FER):
    """fer rounds its scores to 2 decimals (ties); keep the classifier's raw output as well."""

    raw: list[list[float]]

    def _classify_emotions(self, gray_faces: np.ndarray) -> np.ndarray:
        scores = super()._classify_emotions(gray_faces)
        self.raw = np.asarray(scores, dtype=np.float64).tolist()
        return scores


def fer_window(rect: list[int]) -> list[int]:
    """The image window fer classifies for a detector rectangle: square it, then add its offsets."""
    x, y, w, h = (int(v) for v in FER.tosquare(tuple(rect)))
    return [x - FER_OFFSET, y - FER_OFFSET, x + w + FER_OFFSET, y + h + FER_OFFSET]


def faces(detector: RecordingFER, image: np.ndarray, rects: list[list[int]] | None) -> dict[str, Any]:
    detector.raw = []
    start = time.perf_counter()
    if rects is None:
        found = detector.detect_emotions(image)
    else:
        found = detector.detect_emotions(image, face_rectangles=rects) if rects else []
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    results = [
        {
            "rect": [int(v) for v in face["box"]],
            "window": fer_window(face["box"]),
            "probabilities": detector.raw[i],
        }
        for i, face in enumerate(found)
    ]
    return {"faces": results, "ms": elapsed_ms}


def main() -> int:
    requests = json.load(sys.stdin)
    haar = RecordingFER(use_tflite=False)
    labels = [haar._get_labels()[i] for i in range(7)]
    if requests:  # the first call builds Keras' graph: keep it out of the per-face times
        faces(haar, cv2.imread(requests[0]["path"]), None)
    output = []
    for request in requests:
        image = cv2.imread(request["path"])  # BGR, as fer reads files itself
        if image is None:
            raise SystemExit(f"cannot read {request['path']}")
        output.append(
            {
                "path": request["path"],
                "haar": faces(haar, image, None),
                "mtcnn": faces(haar, image, request["mtcnn_rects"]),
            }
        )
    json.dump({"labels": labels, "images": output}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The array types the gateway passes between layers, named once (numpy's own dtypes, no framework)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Crops, model inputs and outputs, embeddings: what Triton sends and receives.
FloatArray = npt.NDArray[np.float32]
# Geometry: boxes, landmarks, similarity transforms, track state (float64 so sub-pixel maths stays exact).
Float64Array = npt.NDArray[np.float64]
# Token ids and attention masks for the text encoder.
IntArray = npt.NDArray[np.int64]

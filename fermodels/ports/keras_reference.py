"""Run the original Keras model on a batch: the reference the PyTorch port is tested against.

Run it with the interpreter of the separate Keras venv, not the project's (TensorFlow needs numpy 2,
the project pins numpy 1.26), so this file imports neither torch nor fermodels:

    .cache/keras-venv/bin/python fermodels/ports/keras_reference.py \
        --hdf5 model.hdf5 --inputs x.npy --probs probs.npy --logits logits.npy

``x.npy`` is float32 in PyTorch layout ``[N, C, H, W]``; it is transposed to Keras' ``[N, H, W, C]`` here.
``--logits`` receives the input of the model's final softmax layer, ``--probs`` the model's output.
The Keras venv is built with (see tests/models/test_mini_xception_port.py):

    python3.11 -m venv .cache/keras-venv
    .cache/keras-venv/bin/python -m pip install tensorflow-cpu==2.21.0
    .cache/keras-venv/bin/python -m pip install --no-deps tf_keras==2.21.0
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]


def import_keras() -> ModuleType:
    """tf_keras is the Keras 2 line the file was saved with; Keras 3 also reads Keras 2 HDF5 files."""
    try:
        return importlib.import_module("tf_keras")
    except ImportError:
        return importlib.import_module("keras")


def predict(hdf5: Path, inputs: Floats) -> tuple[Floats, Floats]:
    """(logits, probabilities) of the Keras model for an NCHW batch."""
    keras = import_keras()
    model = keras.models.load_model(str(hdf5), compile=False)
    # A second output taps the tensor that the last layer (the softmax) receives: the logits.
    tapped = keras.Model(model.inputs, [model.layers[-1].input, model.output])
    nhwc = np.ascontiguousarray(inputs.astype(np.float32).transpose(0, 2, 3, 1))
    logits, probs = tapped.predict(nhwc, batch_size=len(nhwc), verbose=0)
    return np.asarray(logits, dtype=np.float32), np.asarray(probs, dtype=np.float32)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Keras reference predictions for a .npy batch")
    parser.add_argument("--hdf5", type=Path, required=True, help="the Keras 2 HDF5 model")
    parser.add_argument("--inputs", type=Path, required=True, help="float32 batch, [N, C, H, W]")
    parser.add_argument("--probs", type=Path, required=True, help="where to save the model's output")
    parser.add_argument("--logits", type=Path, help="where to save the softmax layer's input")
    args = parser.parse_args(argv)
    logits, probs = predict(args.hdf5, np.load(args.inputs))
    np.save(args.probs, probs)
    if args.logits is not None:
        np.save(args.logits, logits)
    return 0


if __name__ == "__main__":
    sys.exit(main())

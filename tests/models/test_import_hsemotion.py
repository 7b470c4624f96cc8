"""``python -m fermodels import --format hsemotion``: the served TorchScript equals timm's own model run the
way HSEmotion's test code runs it (int box crop, PIL resize, ImageNet normalisation), on seeded weights
saved as the authors saved theirs (``torch.save(model)``); and bad files fail cleanly."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from fermodels.cli import main
from fermodels.contract import AFFECT_OUTPUT, ModelConfig
from fermodels.export import load_scripted
from fermodels.importing.hsemotion import HSEMOTION_7_LABELS, HSEMOTION_8_LABELS, read_hsemotion
from fermodels.ports.seeded_weights import seeded_state_dict
from fermodels.repository import CONFIG_FILENAME, MODEL_FILENAME
from service.vision.cropping import CropGeometry
from tests.unit.test_checkpoint_reader import RunsCode, rewrite_pickle

ATOL = 1e-4
SIZES = {"tf_efficientnet_b0": 224, "tf_efficientnet_b2": 260}
# The module paths timm 0.4.5 pickled (the authors' first files) for what timm 1.0 calls otherwise.
TIMM_045_PATHS = {
    b"timm.models._efficientnet_blocks\n": b"timm.models.efficientnet_blocks\n",
    b"timm.layers.conv2d_same\n": b"timm.models.layers.conv2d_same\n",
    b"timm.layers.adaptive_avgmax_pool\n": b"timm.models.layers.adaptive_avgmax_pool\n",
    # and one no timm release has: the reader must not need the class at all
    b"timm.layers.norm_act\n": b"timm.models.layers.gone_in_some_release\n",
}


def authors_model(variant: str, outputs: int, sequential: bool = False) -> nn.Module:
    model = timm.create_model(variant, pretrained=False, num_classes=outputs)
    model.load_state_dict(seeded_state_dict(model.state_dict()))
    if sequential:  # the authors' 7/8-class training notebooks: classifier = Sequential(Linear)
        model.classifier = nn.Sequential(model.classifier)
    return model.eval()


def photo_and_boxes(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random photo (so resampling matters) and ``count`` float boxes of different sizes/aspects."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    photo = np.asarray(Image.fromarray(small).resize((400, 300), Image.Resampling.BICUBIC))
    x0, y0 = rng.uniform(0, 250, count), rng.uniform(0, 150, count)
    width, height = rng.uniform(40, 150, count), rng.uniform(40, 150, count)
    boxes = np.stack([x0, y0, np.minimum(x0 + width, 400), np.minimum(y0 + height, 300)], axis=1)
    return photo, boxes


def authors_inputs(photo: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """hsemotion's notebook + facial_emotions.py: box.astype(int), frame[y1:y2, x1:x2], their transforms."""
    transform = transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    faces = []
    for box in boxes:
        x1, y1, x2, y2 = box.astype(int)[0:4]
        faces.append(transform(Image.fromarray(photo[y1:y2, x1:x2, :])))
    return torch.stack(faces)


def import_file(path: Path, repository: Path, name: str, *extra: str) -> int:
    args = ["import", "--format", "hsemotion", "--checkpoint", str(path), "--name", name]
    return main([*args, "--repository", str(repository), *extra])


def served_config(model_dir: Path) -> ModelConfig:
    text = (model_dir / CONFIG_FILENAME).read_text()
    raw = text.split('key: "fer_config" value { string_value: "', 1)[1].split('" } }', 1)[0]
    return ModelConfig.from_json(json.loads(f'"{raw}"'))


@pytest.fixture(scope="module")
def threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize(
    ("variant", "outputs", "sequential", "labels"),
    [
        ("tf_efficientnet_b0", 7, True, HSEMOTION_7_LABELS),
        ("tf_efficientnet_b0", 8, False, HSEMOTION_8_LABELS),
        ("tf_efficientnet_b2", 8, True, HSEMOTION_8_LABELS),
        ("tf_efficientnet_b0", 10, False, HSEMOTION_8_LABELS),  # enet_b0_8_va_mtl
    ],
    ids=["b0-7", "b0-8", "b2-8", "b0-8-va-mtl"],
)
def test_served_model_equals_timm_with_the_authors_preprocessing(
    tmp_path: Path, threads: None, variant: str, outputs: int, sequential: bool, labels: tuple[str, ...]
) -> None:
    model = authors_model(variant, outputs, sequential)
    path = tmp_path / f"{variant}_{outputs}.pt"
    torch.save(model, path)
    assert import_file(path, tmp_path / "repo", "hse") == 0
    model_dir = tmp_path / "repo" / "hse"
    config = served_config(model_dir)
    assert config.labels == labels and config.input_size == SIZES[variant] and config.crop_mode == "box"
    assert config.trained and "HSEmotion (A. Savchenko), Apache-2.0" in config.weights
    assert config.affect_outputs == (("valence", "arousal") if outputs == 10 else ())
    served = load_scripted(model_dir / "1" / MODEL_FILENAME)

    photo, boxes = photo_and_boxes(16)
    with torch.no_grad():
        reference = authors_inputs(photo, boxes, config.input_size)
        feature_map = model.forward_features(reference)  # model(x) is forward_head(forward_features(x))
        features = model.forward_head(feature_map, pre_logits=True)
        logits = model.forward_head(feature_map)
    classes = len(labels)
    crops = CropGeometry.of(config).crop(photo, np.zeros((16, 5, 2)), boxes)
    for batch in (1, 3, 16):
        # As served: DISABLE_OPTIMIZED_EXECUTION (no re-profiling for each new batch size).
        with torch.no_grad(), torch.jit.optimized_execution(False):
            result = served(torch.from_numpy(crops[:batch]))
        probabilities, embedding = result[0], result[1]
        torch.testing.assert_close(probabilities, logits[:batch, :classes].softmax(-1), rtol=0, atol=ATOL)
        torch.testing.assert_close(embedding, F.normalize(features[:batch], dim=-1), rtol=0, atol=ATOL)
        if outputs == 10:
            assert len(result) == 4 and result[2].shape == (batch, 0)
            torch.testing.assert_close(result[3], logits[:batch, classes:], rtol=0, atol=ATOL)
    if outputs == 10:
        assert f'name: "{AFFECT_OUTPUT}"' in (model_dir / CONFIG_FILENAME).read_text()


def test_the_box_crop_is_the_authors_crop(threads: None) -> None:
    photo, boxes = photo_and_boxes(8, seed=3)
    for size in (224, 260):
        config = ModelConfig(name="m", architecture="a", input_size=size, crop_mode="box")
        ours = CropGeometry.of(config).crop(photo, np.zeros((8, 5, 2)), boxes)
        theirs = []
        for box in boxes:
            x1, y1, x2, y2 = box.astype(int)[0:4]
            face = transforms.Resize((size, size))(Image.fromarray(photo[y1:y2, x1:x2, :]))
            theirs.append(np.asarray(face, dtype=np.float32).transpose(2, 0, 1))
        difference = np.abs(np.round(ours * 255.0) - np.stack(theirs)).max()
        assert difference <= 1.0


def test_a_pickle_with_timm_045_module_paths_reads_without_the_classes(tmp_path: Path) -> None:
    model = authors_model("tf_efficientnet_b0", 8, sequential=True)
    path = tmp_path / "enet_b0_8_best_vgaf.pt"
    torch.save(model, path)
    rewrite_pickle(path, TIMM_045_PATHS)
    state = read_hsemotion(path)
    expected = {key.replace("classifier.0.", "classifier."): v for key, v in model.state_dict().items()}
    assert list(state) == list(expected)
    assert all(torch.equal(state[key], expected[key]) for key in expected)
    assert import_file(path, tmp_path / "repo", "hse", "--dataset", "affectnet8") == 0
    config = served_config(tmp_path / "repo" / "hse")
    assert "61.32 %" in config.accuracy and config.accuracy.startswith("as reported by the authors")


def test_config_fields_round_trip_and_are_checked() -> None:
    config = ModelConfig(
        name="m",
        architecture="a",
        crop_mode="box",
        channel_order="bgr",
        affect_outputs=("valence", "arousal"),
    )
    assert ModelConfig.from_json(config.to_json()) == config
    assert config.affect_output_names == (AFFECT_OUTPUT,) and AFFECT_OUTPUT not in config.output_names
    for bad in ({"crop_mode": "tight"}, {"channel_order": "bgra"}, {"affect_outputs": ("dominance",)}):
        with pytest.raises(ValueError):
            ModelConfig(name="m", architecture="a", **bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- bad files


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()
    }


@pytest.fixture(scope="module")
def saved_b0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("b0") / "enet_b0_7.pt"
    torch.save(authors_model("tf_efficientnet_b0", 7), path)
    return path


def bad_files(saved: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    data = saved.read_bytes()
    truncated = folder / "truncated.pt"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    corrupt = folder / "corrupt.pt"
    damaged = bytearray(data)
    with zipfile.ZipFile(saved) as archive:
        info = max(archive.infolist(), key=lambda member: member.file_size)  # the largest weight tensor
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 1000
    damaged[start : start + 16] = bytes(16)
    corrupt.write_bytes(bytes(damaged))
    renamed = folder / "renamed.pt"
    state = authors_model("tf_efficientnet_b0", 7).state_dict()
    state["conv_head.weights"] = state.pop("conv_head.weight")
    torch.save(state, renamed)
    evil = folder / "evil.pt"
    torch.save({"model": RunsCode(f"touch {folder / 'ran'}")}, evil)
    png = folder / "face.png"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    png.write_bytes(buffer.getvalue())
    return {
        "truncated": (truncated, "truncated or corrupt"),
        "corrupt": (corrupt, "damaged"),
        "renamed": (renamed, "missing keys: conv_head.weight; unexpected keys: conv_head.weights"),
        "evil": (evil, "system, which is not allowed"),
        "png": (png, "not a torch checkpoint"),
    }


def test_bad_files_fail_in_one_line_and_leave_the_repository_alone(
    tmp_path: Path, saved_b0: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repo"
    assert import_file(saved_b0, repository, "hse") == 0
    before = snapshot(repository)
    capsys.readouterr()
    for label, (path, message) in bad_files(saved_b0, tmp_path).items():
        assert import_file(path, repository, "hse", "--force") == 2, label
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.count("\n") == 1 and message in error, (label, error)
        assert snapshot(repository) == before, label
    assert not (tmp_path / "ran").exists()


def test_an_existing_version_needs_force(tmp_path: Path, saved_b0: Path) -> None:
    assert import_file(saved_b0, tmp_path / "repo", "hse") == 0
    assert import_file(saved_b0, tmp_path / "repo", "hse") == 1
    wrong_dataset = ("--dataset", "affectnet8", "--force")  # the file has 7 classes
    assert import_file(saved_b0, tmp_path / "repo", "hse", *wrong_dataset) == 2

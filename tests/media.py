"""Real test media no one on this project made, fetched on first use into .cache/test-media.

- Debian's ``opencv-doc`` package ships OpenCV's sample data: ``messi5.jpg`` (one real face),
  ``fruits.jpg`` (no face), ``Megamind.avi`` and ``vtest.avi`` (real clips). The .deb is ~96 MB, so it
  is downloaded with ``apt-get download`` and unpacked with ``dpkg -x`` rather than committed.
- scikit-image's wheel ships ``data.astronaut()``, a real portrait (Eileen Collins, public domain).

Run ``python -m tests.media`` to fetch everything; the test fixtures call the same function.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEDIA_DIR = ROOT / ".cache" / "test-media"
OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data"
OPENCV_FILES = ("messi5.jpg", "fruits.jpg", "Megamind.avi", "vtest.avi")


def ensure_media(directory: Path = MEDIA_DIR) -> Path:
    """Fetch every test file that is missing; return the folder."""
    directory.mkdir(parents=True, exist_ok=True)
    if not all((directory / name).exists() for name in OPENCV_FILES):
        _extract_opencv_doc(directory)
    if not (directory / "astronaut.png").exists():
        _write_astronaut(directory / "astronaut.png")
    return directory


def _extract_opencv_doc(directory: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        # apt-get download needs a package index; refresh it once if the first attempt finds nothing.
        if subprocess.run(["apt-get", "download", "opencv-doc"], cwd=scratch, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "download", "opencv-doc"], cwd=scratch, check=True)
        deb = next(Path(scratch).glob("opencv-doc_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(Path(scratch) / "x")], check=True)
        for name in OPENCV_FILES:
            shutil.copy2(Path(scratch) / "x" / OPENCV_DATA / name, directory / name)


def _write_astronaut(path: Path) -> None:
    from PIL import Image
    from skimage import data

    Image.fromarray(data.astronaut()).save(path)


if __name__ == "__main__":
    print(ensure_media())

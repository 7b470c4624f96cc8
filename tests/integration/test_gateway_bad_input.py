"""Bad input against the real gateway: each gets its 4xx JSON and the next good request still works."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from PIL import Image

from devstack.stack import encode

pytestmark = pytest.mark.integration


def bad_requests(media: Path) -> dict[str, tuple[dict[str, object], int, str]]:
    messi = (media / "messi5.jpg").read_bytes()
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")
    return {
        "empty body": ({"content": b"", "headers": {"Content-Type": "image/jpeg"}}, 400, "empty_payload"),
        "0-byte file": ({"files": {"file": ("empty.jpg", b"", "image/jpeg")}}, 400, "empty_payload"),
        "truncated jpeg": (
            {"files": {"file": ("t.jpg", messi[: len(messi) // 3], "image/jpeg")}},
            422,
            "invalid_image",
        ),
        "text named .jpg": (
            {"files": {"file": ("notes.jpg", b"meeting at 10\n" * 40, "image/jpeg")}},
            415,
            "unsupported_media_type",
        ),
        "20000x20000 png bomb": (
            {"files": {"file": ("bomb.png", bomb, "image/png")}},
            422,
            "image_too_large",
        ),
        "wrong content type": (
            {"content": messi, "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        "video model on a still image": (
            {"files": {"file": ("m.jpg", messi, "image/jpeg")}, "params": {"model": "stt"}},
            422,
            "model_task_mismatch",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty body",
        "0-byte file",
        "truncated jpeg",
        "text named .jpg",
        "20000x20000 png bomb",
        "wrong content type",
        "video model on a still image",
    ],
)
def test_bad_input_then_good_input(client: httpx.Client, media: Path, case: str) -> None:
    kwargs, status, code = bad_requests(media)[case]
    response = client.post("/predict", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    good = client.post(
        "/predict", files={"file": ("m.jpg", (media / "messi5.jpg").read_bytes(), "image/jpeg")}
    )
    assert good.status_code == 200 and len(good.json()["faces"]) == 1


@pytest.mark.parametrize("size", [(1, 1), (5, 300), (19, 19)])
def test_images_smaller_than_any_face_have_no_faces(client: httpx.Client, size: tuple[int, int]) -> None:
    """MTCNN itself crashes on images smaller than its minimum face; the gateway answers 200 with no faces."""
    response = client.post("/predict", files={"file": ("tiny.png", encode(Image.new("RGB", size), "PNG"))})
    assert response.status_code == 200, response.text
    assert response.json()["faces"] == []

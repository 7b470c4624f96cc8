"""The page's live mode in the real headless browser: Chromium's fake camera plays a real clip (the first
seconds of OpenCV's Megamind.avi as an MJPEG file), the page streams it to /v1/stream on the real gateway,
Triton and MTCNN, and draws boxes, labels and each person's line as the answers arrive.

Screenshot: .cache/test-artifacts/web/live.png.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from devstack.stack import Gateway
from fer_client.stream import video_frames
from tests.integration.test_web_page import ARTIFACTS, screenshot, system_binary, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def camera_file(media: Path) -> Path:
    """Megamind's first 6 s forwards then backwards, as concatenated JPEGs (the format Chromium's fake camera
    reads as MJPEG). The fake camera loops its file; played as a palindrome, the loop has no cut, so the
    person on screen never jumps (a cut is a new scene, where a new id would be right)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "megamind-camera.mjpeg"
    frames = [data for t, data in video_frames(str(media / "Megamind.avi"), fps=10) if t < 6.0]
    path.write_bytes(b"".join(frames + frames[::-1]))
    return path


@pytest.fixture(scope="module")
def live_browser(camera_file: Path) -> Iterator[WebDriver]:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never downloads anything
    options = Options()
    options.binary_location = system_binary("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1800",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={camera_file}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=system_binary("chromedriver")), options=options)
    yield driver
    driver.quit()


PEOPLE = (By.CSS_SELECTOR, "#live-people li")


def answers(driver: WebDriver) -> int:
    return int(driver.find_element(By.ID, "live").get_attribute("data-answers") or 0)


def test_live_mode_draws_people_as_the_fake_camera_plays_a_real_clip(
    live_browser: WebDriver, gateway: Gateway
) -> None:
    live_browser.get(f"{gateway.url}/")
    wait_for(live_browser, "#live-start")
    live_browser.find_element(By.ID, "live-start").click()
    (first,) = wait_for(live_browser, "#live-people li", timeout_s=120)[:1]
    assert re.fullmatch(r"person \d+: \w+ \d+%, \w+ since \d+\.\d s", first.text), first.text
    # Megamind has two people, one of whom leaves and comes back: over the next answers, the numbers on the
    # list stay few and one person keeps theirs through most of them.
    ids: Counter[str] = Counter()
    lists = [0, answers(live_browser)]  # lists read, the last answer read

    def read_each_answer(driver: WebDriver) -> bool:
        now = answers(driver)
        if now != lists[1]:
            lists[:] = [lists[0] + 1, now]
            ids.update(li.get_attribute("data-track") or "" for li in driver.find_elements(*PEOPLE))
        return lists[0] >= 8

    WebDriverWait(live_browser, 180, poll_frequency=0.05).until(read_each_answer)
    assert ids, "nobody was listed in 8 answers"
    _, most = ids.most_common(1)[0]
    assert most >= 0.6 * lists[0] and len(ids) <= 3, ids  # the same person keeps their number
    assert "Live: frame" in live_browser.find_element(By.ID, "live-status").text
    # Boxes and the 30 s lines are drawn on canvases: some of their pixels are no longer transparent.
    for canvas in ("live-overlay", "live-chart"):
        drawn = live_browser.execute_script(
            "const c = document.getElementById(arguments[0]);"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;",
            canvas,
        )
        assert drawn > 0, f"nothing drawn on #{canvas}"
    screenshot(live_browser, "live.png", docs="web-page-live.png")
    live_browser.find_element(By.ID, "live-stop").click()
    WebDriverWait(live_browser, 10).until(lambda d: "Stopped" in d.find_element(By.ID, "live-status").text)

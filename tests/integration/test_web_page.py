"""The page at `/` in a real headless browser (Debian's chromium + chromedriver, driven by Selenium) against
the real gateway, Triton and MTCNN: a real photo and a real clip, uploaded as a person would.

Screenshots are written to .cache/test-artifacts/web/ (photo.png, clip.png, contact-sheet.png, error.png,
job-progress.png, job.png).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from devstack import clips
from devstack.media import ROOT
from devstack.stack import Gateway, gateway_settings, start_gateway
from service.launcher.triton_local import LocalTriton
from tests.integration.test_gateway_images import MESSI_FACE

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / ".cache" / "test-artifacts" / "web"


def system_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # `make test` installs both; never fall back to a download
        pytest.fail(f"{name} is not installed: run `bash scripts/install-browser.sh`")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    # Selenium Manager must never run: the driver path is explicit and SE_OFFLINE forbids downloads.
    os.environ["SE_OFFLINE"] = "true"
    options = Options()
    options.binary_location = system_binary("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1800"):
        options.add_argument(argument)
    # Chromium's built-in synthetic camera, allowed without a prompt: the webcam path runs for real.
    options.add_argument("--use-fake-device-for-media-stream")
    options.add_argument("--use-fake-ui-for-media-stream")
    driver = webdriver.Chrome(service=Service(executable_path=system_binary("chromedriver")), options=options)
    driver.set_script_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait_for(driver: WebDriver, css: str, timeout_s: float = 60, count: int = 1) -> list[WebElement]:
    def found(d: WebDriver) -> list[WebElement] | bool:
        elements = d.find_elements(By.CSS_SELECTOR, css)
        return elements if len(elements) >= count and elements[0].is_displayed() else False

    result: list[WebElement] = WebDriverWait(driver, timeout_s).until(found)
    return result


def screenshot(driver: WebDriver, name: str, docs: str | None = None) -> None:
    """The whole page, not just the viewport: the window is made as tall as the document for the shot.
    ``docs``: also written over that picture of the docs site, so the docs show the page as it is now."""
    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    full = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, min(max(full, height), 8000))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(ARTIFACTS / name))
    if docs is not None:
        driver.save_screenshot(str(ROOT / "docs" / docs))
    driver.set_window_size(width, height)


def open_page(driver: WebDriver, gateway: Gateway) -> None:
    driver.get(f"{gateway.url}/")
    # The model picker fills from /v1/models: the module script has run and reached the API.
    wait_for(driver, "#model-select option[value='mini_xception_fer2013']")


def upload(driver: WebDriver, path: Path) -> None:
    driver.find_element(By.ID, "file-input").send_keys(str(path))


def test_a_photo_gets_its_box_label_and_bars(browser: WebDriver, gateway: Gateway, media: Path) -> None:
    open_page(browser, gateway)
    upload(browser, media / "messi5.jpg")
    (box,) = wait_for(browser, "[data-testid=face-box]")
    label = box.find_element(By.CSS_SELECTOR, ".face-label").text
    assert re.fullmatch(r"1 \w+ \d+%", label), label
    # The box sits where a person sees Messi's face, in the picture as displayed.
    picture = browser.find_element(By.ID, "preview")
    scale = picture.rect["width"] / 548
    centre_x = (box.rect["x"] - picture.rect["x"] + box.rect["width"] / 2) / scale
    centre_y = (box.rect["y"] - picture.rect["y"] + box.rect["height"] / 2) / scale
    assert MESSI_FACE[0] <= centre_x <= MESSI_FACE[2] and MESSI_FACE[1] <= centre_y <= MESSI_FACE[3]
    (card,) = browser.find_elements(By.CSS_SELECTOR, ".face-card")
    assert len(card.find_elements(By.CSS_SELECTOR, ".bars li")) == 7
    assert "has no text side" in card.text
    model = browser.find_element(By.ID, "model-info").text
    assert "mini_xception_fer2013" in model and "trained" in model
    assert "no text side" in browser.find_element(By.ID, "warnings").text
    screenshot(browser, "photo.png", docs="web-page-photo.png")


def test_custom_prompts_are_sent_and_a_server_without_them_still_answers(
    browser: WebDriver, gateway: Gateway, media: Path
) -> None:
    open_page(browser, gateway)
    browser.find_element(By.ID, "prompts-input").send_keys("a photo of a footballer celebrating")
    upload(browser, media / "messi5.jpg")
    wait_for(browser, "[data-testid=face-box]")
    warnings = browser.find_element(By.ID, "warnings").text
    # Either the service takes prompts= (then no note), or the page says it analysed without them.
    accepted = "does not accept custom prompts" not in warnings
    assert accepted or "analysed without them" in warnings
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None


def test_a_clip_gets_a_chart_per_person_and_frames_on_click(
    browser: WebDriver, gateway: Gateway, media: Path
) -> None:
    open_page(browser, gateway)
    upload(browser, media / "Megamind.avi")
    charts = wait_for(browser, "[data-testid=track-chart]", timeout_s=180)
    assert len(charts[0].find_elements(By.CSS_SELECTOR, "polyline")) == 7  # one line per expression
    summary = browser.find_element(By.ID, "summary").text
    assert "People" in summary and "57 analysed of 270 decoded" in summary.replace("\n", " ")
    points = charts[0].find_elements(By.CSS_SELECTOR, "[data-testid=track-point]")
    assert len(points) >= 10
    points[3].click()
    caption = browser.find_element(By.ID, "stage-caption")
    WebDriverWait(browser, 10).until(lambda _: caption.text.startswith("Frame"))
    assert re.search(r"at \d+\.\d\d s", caption.text), caption.text
    clicked_at = caption.get_attribute("data-frame-time")
    boxes = wait_for(browser, "[data-testid=face-box]")
    assert all(re.fullmatch(r"#\d+ \w+ \d+%", b.text) for b in boxes)
    # Keyboard: the clicked point has focus; the right arrow moves to the next frame.
    browser.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    WebDriverWait(browser, 10).until(lambda _: caption.get_attribute("data-frame-time") != clicked_at)
    screenshot(browser, "clip.png", docs="web-page-clip.png")
    browser.find_element(By.ID, "sheet-button").click()
    sheet = wait_for(browser, "#sheet", timeout_s=180)[0]
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return arguments[0].naturalWidth", sheet) > 0
    )
    screenshot(browser, "contact-sheet.png")


def test_errors_show_the_api_message(browser: WebDriver, gateway: Gateway, tmp_path: Path) -> None:
    open_page(browser, gateway)
    fake = tmp_path / "not-a-photo.jpg"
    fake.write_text("just some text")
    upload(browser, fake)
    (error,) = wait_for(browser, "#error")
    assert "not a supported image" in error.text or "unsupported" in error.text.lower(), error.text
    screenshot(browser, "error.png")


def test_a_webcam_snapshot_is_analysed(browser: WebDriver, gateway: Gateway) -> None:
    open_page(browser, gateway)
    browser.find_element(By.ID, "webcam-start").click()
    wait_for(browser, "#webcam-snap").pop().click()
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 60).until(lambda _: status.text == "Done: webcam.jpg.")
    # Chromium's synthetic camera shows no face: the page says so instead of drawing boxes.
    assert browser.find_element(By.ID, "stage-caption").text == "No face found in this picture."


def test_a_playable_clip_seeks_to_the_clicked_frame(
    browser: WebDriver, gateway: Gateway, media: Path, tmp_path: Path
) -> None:
    """A WebM the browser can play: clicking a point pauses the clip on that frame, under its boxes."""
    clip = tmp_path / "moving.webm"
    clip.write_bytes(clips.encode(clips.moving_face(media), fps=10, kind="webm-vp8"))
    open_page(browser, gateway)
    upload(browser, clip)
    (chart,) = wait_for(browser, "[data-testid=track-chart]", timeout_s=120)
    video = browser.find_element(By.ID, "clip")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return arguments[0].readyState", video) > 0)
    points = chart.find_elements(By.CSS_SELECTOR, "[data-testid=track-point]")
    points[-1].click()
    caption = browser.find_element(By.ID, "stage-caption")
    WebDriverWait(browser, 10).until(lambda _: caption.get_attribute("data-frame-time"))
    wanted = float(caption.get_attribute("data-frame-time") or "nan")
    assert video.is_displayed() and wanted > 1.0
    WebDriverWait(browser, 10).until(
        lambda d: abs(d.execute_script("return arguments[0].currentTime", video) - wanted) < 0.05
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-testid=face-box]")) == 1


# Every form control's accessible name, and the text contrast of the page's text styles (WCAG AA: 4.5:1),
# computed in the browser from the styles it actually applied.
_AUDIT = """
const unnamed = [...document.querySelectorAll("input, select, textarea, button, [role=button]")]
  .filter((el) => !(el.labels && el.labels.length))
  .filter((el) => !el.getAttribute("aria-label") && !el.textContent.trim())
  .map((el) => el.id || el.outerHTML.slice(0, 60));
const rgb = (text) => text.match(/[0-9.]+/g).slice(0, 3).map(Number);
const luminance = (c) => {
  const linear = (v) => (v / 255 <= 0.03928 ? v / 255 / 12.92 : ((v / 255 + 0.055) / 1.055) ** 2.4);
  const [r, g, b] = c.map(linear);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const background = (el) => {
  for (let node = el; node; node = node.parentElement) {
    const colour = getComputedStyle(node).backgroundColor;
    if (colour !== "rgba(0, 0, 0, 0)" && colour !== "transparent") return rgb(colour);
  }
  return [255, 255, 255];
};
const contrast = [...document.querySelectorAll(arguments[0])].map((el) => {
  const [a, b] = [luminance(rgb(getComputedStyle(el).color)), luminance(background(el))];
  return [el.className || el.tagName, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
});
return { unnamed, contrast };
"""


def test_controls_are_labelled_reachable_and_text_has_contrast(
    browser: WebDriver, gateway: Gateway, media: Path
) -> None:
    open_page(browser, gateway)
    upload(browser, media / "messi5.jpg")
    wait_for(browser, "[data-testid=face-box]")
    styles = "label, p, .hint, .warnings li, .badge, .face-label, .bars li span, h1, h2, h4, button"
    audit = browser.execute_script(_AUDIT, styles)
    assert audit["unnamed"] == [] and len(audit["contrast"]) > 20  # the audit saw the rendered result
    low = [(name, round(ratio, 2)) for name, ratio in audit["contrast"] if ratio < 4.5]
    assert not low, low
    # The drop zone is a keyboard stop (Enter opens the file chooser) a few Tabs from the top of the page.
    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    reached = []
    for _ in range(6):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        reached.append(browser.switch_to.active_element.get_attribute("id"))
    assert "drop-zone" in reached, reached


@pytest.fixture(scope="module")
def job_gateway(triton: LocalTriton) -> Iterator[Gateway]:
    """A gateway whose jobs write their progress every 8 frames and page their timeline by 16 frames: a
    short real clip then moves the bar in steps and its result comes in several pages."""
    settings = gateway_settings(triton, jobs_window_frames=8, jobs_progress_interval_s=0.1, jobs_page_size=16)
    running = start_gateway(settings)
    yield running
    running.stop()


# Every change of the progress bar, as the page makes it: [state, value, the line under the bar].
_RECORD_PROGRESS = """
const bar = document.getElementById("job-progress");
window.jobProgress = [];
new MutationObserver(() => window.jobProgress.push(
  [bar.getAttribute("data-state"), bar.getAttribute("value"), document.getElementById("job-text").textContent]
)).observe(bar, { attributes: true, attributeFilter: ["value", "data-state"] });
"""


def test_a_video_sent_as_a_job_shows_its_progress_then_the_same_charts(
    browser: WebDriver, job_gateway: Gateway, media: Path
) -> None:
    open_page(browser, job_gateway)
    browser.execute_script(_RECORD_PROGRESS)
    browser.find_element(By.ID, "job-input").click()
    upload(browser, media / "Megamind.avi")
    bar = wait_for(browser, "#job-progress")[0]
    WebDriverWait(browser, 240).until(
        lambda _: (
            bar.get_attribute("data-state") == "succeeded"
            or (bar.get_attribute("data-state") == "running" and float(bar.get_attribute("value") or 0) > 0)
        )
    )
    screenshot(browser, "job-progress.png")
    charts = wait_for(browser, "[data-testid=track-chart]", timeout_s=240)
    status = browser.find_element(By.ID, "status").text
    assert status == "Done: Megamind.avi, analysed as a job (as you asked).", status
    # The bar rose in steps while the job ran and ended full; the line said frames, percent and time.
    seen: list[list[str | None]] = browser.execute_script("return window.jobProgress")
    values = [float(value) for _, value, _ in seen if value is not None]
    assert values == sorted(values) and values[-1] == 100, seen
    running = [text for state, value, text in seen if state == "running" and value and 0 < float(value) < 100]
    assert running, seen
    assert re.fullmatch(
        r"Analysing: \d+ of \d+ frames \(\d+%\), \d+ s elapsed(, about \d+ s left)?", running[0]
    )
    assert browser.find_element(By.ID, "job-text").text.startswith("Analysed: 57 of 57 frames (100%)")
    assert not browser.find_element(By.ID, "job-cancel").is_displayed()
    # The same charts as a clip's answer, from every page of the timeline (57 frames, pages of 16).
    summary = browser.find_element(By.ID, "summary").text.replace("\n", " ")
    assert "57 analysed of 270 decoded" in summary, summary
    body = json.loads(browser.find_element(By.ID, "raw").get_attribute("textContent") or "{}")
    assert body["timeline_frames"] == len(body["timeline"]) == 57
    assert len(charts) == len(body["tracks"]) >= 1
    for chart, track in zip(charts, body["tracks"], strict=True):
        assert len(chart.find_elements(By.CSS_SELECTOR, "polyline")) == 7
        frames = [
            f for f in body["timeline"] if any(face["track_id"] == track["track_id"] for face in f["faces"])
        ]
        assert len(chart.find_elements(By.CSS_SELECTOR, "[data-testid=track-point]")) == len(frames)
    assert max(len(c.find_elements(By.CSS_SELECTOR, "[data-testid=track-point]")) for c in charts) > 16
    assert not browser.find_element(By.ID, "sheet-button").is_displayed()  # over the clip limits: no sheet
    screenshot(browser, "job.png")


def test_a_video_too_long_for_a_clip_goes_as_a_job_and_can_be_cancelled(
    browser: WebDriver, job_gateway: Gateway, media: Path
) -> None:
    """vtest.avi lasts 79.5 s, over the 60 s of a clip; Chromium cannot read an AVI's duration, so /predict
    refuses it (video_too_long) and the page sends it on as a job without being asked, then cancels it."""
    open_page(browser, job_gateway)
    upload(browser, media / "vtest.avi")
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 120).until(lambda _: "sent as a job (refused as a clip: " in status.text)
    assert "60 s" in status.text, status.text  # the refusal's own message names the clip limit
    bar = wait_for(browser, "#job-progress")[0]
    WebDriverWait(browser, 120).until(lambda _: bar.get_attribute("data-state") == "running")
    cancel = wait_for(browser, "#job-cancel")[0]
    cancel.click()
    WebDriverWait(browser, 60).until(lambda _: status.text == "Cancelled: vtest.avi.")
    assert bar.get_attribute("data-state") == "cancelled"
    assert browser.find_element(By.ID, "job-text").text == "Cancelled."
    assert not cancel.is_displayed()
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid=track-chart]")

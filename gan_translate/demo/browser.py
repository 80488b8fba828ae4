"""The demo served in this process and driven in a real browser: headless Chromium through selenium (Debian's chromium
and chromium-driver, which come version-matched; selenium is in the extra "demo"). scripts/demo_screenshot.py makes
the README's picture with it, and the demo's browser test drives the page the same way."""

from __future__ import annotations

import base64
import io
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")
BINARIES = ("chromium", "chromedriver")


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e .[demo])"
    absent = [name for name in BINARIES if shutil.which(name) is None]
    if absent:
        return f"no {' or '.join(absent)} on PATH (apt-get install chromium chromium-driver)"
    return None


@dataclass
class PageResult:
    output: Image.Image  # the output image as the page received it
    status: str  # the page's status line
    seconds: float  # from the click to the output showing


def open_browser(profile: Path, size: tuple[int, int] = (1280, 900)):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def _wait(driver, condition, timeout: float, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {timeout:g} s") from None


_FETCH_IMAGE = """
const [src, done] = arguments;
fetch(src).then(r => r.blob()).then(b => { const f = new FileReader(); f.onload = () => done(f.result);
  f.readAsDataURL(b); }).catch(e => done('error: ' + e));
"""


def translate_in_page(driver, url: str, image: Path, *, timeout: float = 60.0) -> PageResult:
    """Opens the page, uploads ``image`` into the input, presses translate and reads the output image back (fetched
    by the page itself from the address its <img> shows)."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#input input[type=file]"), timeout, "the upload box")
    driver.find_element(By.CSS_SELECTOR, "#input input[type=file]").send_keys(str(Path(image).resolve()))
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#input img"), timeout, "the uploaded image")
    start = time.perf_counter()
    driver.find_element(By.CSS_SELECTOR, "#translate").click()

    def output_src(d):
        imgs = d.find_elements(By.CSS_SELECTOR, "#output img")
        return imgs[0].get_attribute("src") if imgs and imgs[0].get_attribute("src") else None

    src = _wait(driver, output_src, timeout, "an output image")
    seconds = time.perf_counter() - start
    _wait(driver, lambda d: d.execute_script("const i = document.querySelector('#output img');"
                                             "return i && i.complete && i.naturalWidth > 0;"), timeout,
          "the output image loaded")
    data = driver.execute_async_script(_FETCH_IMAGE, src)
    assert data.startswith("data:"), data
    output = Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1])))
    output.load()
    status = driver.find_element(By.CSS_SELECTOR, "#status").text.strip()
    return PageResult(output=output, status=status, seconds=seconds)


def save_small_png(driver, path: Path, colours: int = 256) -> Path:
    """The browser window as a PNG with a palette (a page of flat colours loses nothing visible, a third the bytes)."""
    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    shot.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """The demo launched in this process (gradio's own server thread), closed by ``close()``."""

    def __init__(self, page, app) -> None:
        self.page, self.app = page, app
        self.port = free_port()
        from gan_translate.demo import serve

        serve(page, port=self.port, block=False)
        self.url = f"http://127.0.0.1:{self.port}/"

    def close(self) -> None:
        self.page.close()

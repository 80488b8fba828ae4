"""The demo in a real browser (headless Chromium): open the page, upload an image, translate, read the output image
back from the page; a screenshot is kept as an artifact in pytest's temporary folder. Skips, saying why, where
selenium, chromium or chromium-driver is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_translate.demo.browser import Served, missing_browser, open_browser, save_small_png, translate_in_page
from tests.demo_helpers import picture, write_run

pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e .[demo])")
REASON = missing_browser()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=f"browser test: {REASON}"),
              pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword):")]


@pytest.fixture(scope="module")
def served(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    from gan_translate.demo import create_app

    run = write_run(tmp_path_factory.mktemp("checkpoints"), "p2p", "pix2pix", tiny_data / "aligned", steps=2)
    page, app = create_app(run=run)
    server = Served(page, app)
    yield server
    server.close()


def test_upload_translate_and_read_the_output_back(served: Served, tmp_path: Path) -> None:
    upload = picture(tmp_path / "upload.png", (80, 60))
    driver = open_browser(tmp_path / "profile")
    try:
        result = translate_in_page(driver, served.url, upload)
        shot = save_small_png(driver, tmp_path / "demo_page.png")
    finally:
        driver.quit()
    # training scale: the run's load_size (36) snapped to its unet_32's stride: shorter side 32, 80x60 -> 43x32
    assert result.output.format == "PNG" and result.output.size == (43, 32), result.status
    assert result.status.startswith("p2p/step_00000002: 43x32 in, 43x32 out (training scale: shorter side 32")
    given = np.asarray(Image.open(upload).convert("RGB").resize((43, 32)), dtype=np.float64)
    assert np.abs(np.asarray(result.output.convert("RGB"), dtype=np.float64) - given).mean() > 5
    page = Image.open(shot)
    assert page.size[0] >= 1000 and len(page.getcolors(256) or []) > 10  # the page was drawn, not a blank window
    print(f"screenshot: {shot}; output shown {result.seconds:.2f} s after the click")

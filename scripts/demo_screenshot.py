"""The README's picture of the web demo, made the way the browser test drives the page (gan_translate/demo/browser.py).

    accelerate launch train.py --model pix2pix --name facades_builtin        # the built-in facades, quick preset
    python scripts/demo_screenshot.py --run checkpoints/facades_builtin --out docs/demo.png

Serves the demo for ``--run``, opens it in headless Chromium (Debian's chromium + chromium-driver), uploads a test
image of the built-in facades (``--image`` for another), translates it and saves the window as a palette PNG.
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from gan_translate.demo import create_app  # noqa: E402
from gan_translate.demo.browser import Served, missing_browser, open_browser, save_small_png, translate_in_page  # noqa: E402
from gan_translate.demo.runs import example_images  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run folder to show")
    p.add_argument("--out", default="docs/demo.png", help="screenshot file (default: %(default)s)")
    p.add_argument("--image", default="", help="image to upload (default: the built-in facades' first test label map)")
    p.add_argument("--size", default="1280x860", help="browser window WIDTHxHEIGHT (default: %(default)s)")
    args = p.parse_args()
    reason = missing_browser()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    image = Path(args.image) if args.image else Path(example_images()[0])
    width, height = (int(v) for v in args.size.split("x"))
    page, app = create_app(run=args.run)
    server = Served(page, app)
    try:
        with tempfile.TemporaryDirectory() as profile:
            driver = open_browser(Path(profile), (width, height))
            try:
                result = translate_in_page(driver, server.url, image)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                save_small_png(driver, Path(args.out))
            finally:
                driver.quit()
    finally:
        server.close()
    print(f"wrote {args.out}: {result.status}; output shown {result.seconds:.2f} s after the click")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A local web demo: pick a trained run, drop in an image, see and download the translation.

    pip install -e ".[demo]"
    python -m gan_translate demo --checkpoints_dir checkpoints          # http://127.0.0.1:7860, this machine only
    python -m gan_translate demo --run checkpoints/facades --port 8000 --host 0.0.0.0

Built on the inference API (``load_translator``'s loader and ``Translator``), so every registered model and every run
written or imported later is offered with no code here. gradio is imported only when the command runs
(``app.py``); ``runs.py`` and ``session.py`` do the work without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

from gan_translate.config import CommandParser
from gan_translate.errors import UserError

__all__ = ["demo_command", "build_parser", "create_app", "require_gradio", "serve"]

INSTALL_HINT = 'the demo needs gradio, the optional extra "demo": pip install -e ".[demo]"'


def build_parser() -> argparse.ArgumentParser:
    from gan_translate.demo.session import DEFAULT_MAX_MEGAPIXELS

    p = CommandParser(prog="python -m gan_translate demo",
                description="A local web page that translates images with trained runs (Gradio).")
    a = p.add_argument
    a("--checkpoints_dir", default="checkpoints", help="folder of run folders to offer (default: %(default)s)")
    a("--run", default="", metavar="DIR", help="offer this one run folder only")
    a("--host", default="127.0.0.1",
      help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 for the network)")
    a("--port", type=int, default=7860, help="(default: %(default)s)")
    a("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    a("--vgg_weights", default="", metavar="FILE",
      help="VGG-19 weights for the stylize entry (default: torchvision's cache); 'random' for tests only")
    a("--max_megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
      help="largest image handed to a network, and largest upload decoded (default: %(default)s)")
    a("--mixed_precision", default="no", choices=("no", "bf16", "fp16"),
      help="translate under autocast in this precision, as test.py (default: %(default)s)")
    a("--tile", type=int, default=0, metavar="N",
      help="run generators in tiles of N pixels, blended where they overlap: large images in bounded memory "
           "(default: 0, whole images)")
    return p


def require_gradio() -> None:
    """UserError naming the extra when gradio is not installed (checked without importing it)."""
    if importlib.util.find_spec("gradio") is None:
        raise UserError(INSTALL_HINT)


def create_app(*, checkpoints_dir: str | Path | None = "checkpoints", run: str | Path | None = None,
               vgg_weights: str = "", device: str = "auto", max_megapixels: float | None = None,
               mixed_precision: str = "no", tile: int = 0):
    """The demo's ``gradio.Blocks`` (not launched) and its ``DemoApp``; for tests and for embedding."""
    require_gradio()
    from gan_translate.demo.app import DemoApp
    from gan_translate.demo.session import DEFAULT_MAX_MEGAPIXELS, DemoSession

    session = DemoSession(vgg_weights=vgg_weights, device=device,
                          max_megapixels=DEFAULT_MAX_MEGAPIXELS if max_megapixels is None else max_megapixels,
                          mixed_precision=mixed_precision, tile=tile)
    app = DemoApp(session, checkpoints_dir=checkpoints_dir, run=run or None)
    return app.build(), app


def serve(page, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> None:
    """Serves the page: one request at a time (one model in memory), the demo's CSS, no tracebacks in the page;
    ``block=False`` returns at once with the server running in a thread (tests)."""
    from gan_translate.demo.app import CSS

    page.queue(default_concurrency_limit=1).launch(server_name=host, server_port=port, show_error=False,
                                                   inbrowser=False, css=CSS, prevent_thread_lock=not block,
                                                   quiet=not block)


def demo_command(argv: Sequence[str]) -> int:
    """``python -m gan_translate demo``: serves the page until interrupted."""
    args = build_parser().parse_args(list(argv))
    require_gradio()
    if args.run and not Path(args.run).is_dir():
        raise UserError(f"option --run: no run folder at {args.run}")
    if args.max_megapixels <= 0:
        raise UserError(f"option --max_megapixels: {args.max_megapixels} must be positive")
    if args.tile < 0:
        raise UserError(f"option --tile: {args.tile} must be 0 (whole images) or a size in pixels")
    page, _ = create_app(checkpoints_dir=args.checkpoints_dir, run=args.run or None, vgg_weights=args.vgg_weights,
                         device=args.device, max_megapixels=args.max_megapixels,
                         mixed_precision=args.mixed_precision, tile=args.tile)
    where = f"run {args.run}" if args.run else f"runs under {args.checkpoints_dir}"
    print(f"demo: {where}; Ctrl+C to stop", file=sys.stderr)
    try:
        serve(page, host=args.host, port=args.port)
    except OSError as err:  # the port is taken, the address is not this machine's
        reason = str(err).split(". ")[0]  # gradio's advice names its launch() arguments, not this command's
        raise UserError(f"cannot serve on {args.host}:{args.port}: {reason} (choose another --port)") from None
    return 0

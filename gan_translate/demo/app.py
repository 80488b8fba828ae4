"""The Gradio page: a run picker, the input beside its translation, and only the controls the picked model needs.

Imported only by ``python -m gan_translate demo`` (gradio is the optional extra ``demo``). The widgets are built from
what ``runs.py`` reads on disk and what ``session.controls_for`` reads from the model's class, so every registered
model and every run written later appears without a line here.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from gan_translate.data.images import load_image
from gan_translate.demo.runs import (LATEST_CHOICE, STYLIZE, RunInfo, builtin_style_images, checkpoint_choices,
                                     example_images, find_runs, read_run, run_styles)
from gan_translate.demo.session import STYLIZE_COMBINATIONS, Controls, DemoSession, controls_for
from gan_translate.errors import UserError
from gan_translate.losses.style import STYLE_LOSSES

IMAGE_HEIGHT = 340
KEPT_DOWNLOADS = 32  # PNGs written for the download button; older ones are deleted (gradio keeps its own copy)
THUMBNAIL = 160  # gallery thumbnails: the full style image is loaded only when picked
# Small images (the built-in data is 64 px) are drawn up to the box without smoothing, so their pixels stay visible.
CSS = """
#input img, #style img, #output img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
#status { min-height: 1.5em; }
"""
STYLIZE_LABEL = "stylize · Gatys-style optimisation (VGG-19, no run)"


class DemoApp:
    """The page and its handlers over one ``DemoSession``.

    Args:
        session: holds the loaded model.
        checkpoints_dir: where runs are looked for (re-read on every page load and on "refresh").
        run: a single run folder to serve instead (``--run``).
    """

    def __init__(self, session: DemoSession, *, checkpoints_dir: str | Path | None = None,
                 run: str | Path | None = None) -> None:
        self.session = session
        self.checkpoints_dir = Path(checkpoints_dir) if checkpoints_dir else None
        self.single_run = read_run(run) if run else None  # a bad --run is the command's one-line error
        self.workdir = Path(tempfile.mkdtemp(prefix="gan_translate_demo_"))  # in the temp dir gradio may serve
        atexit.register(shutil.rmtree, self.workdir, ignore_errors=True)
        self.examples = self._copy_examples()
        self._downloads: deque[Path] = deque()

    # ---- what is on disk
    def runs(self) -> list[RunInfo]:
        if self.single_run is not None:
            return [read_run(self.single_run.path)]
        return find_runs(self.checkpoints_dir) if self.checkpoints_dir else []

    def run_choices(self) -> list[tuple[str, str]]:
        return [(r.label, str(r.path)) for r in self.runs()] + [(STYLIZE_LABEL, STYLIZE)]

    def _copy_examples(self) -> list[str]:
        folder = self.workdir / "examples"
        folder.mkdir()
        out = []
        for path in example_images():
            target = folder / f"{Path(path).parent.name}_{Path(path).name}"
            shutil.copyfile(path, target)
            out.append(str(target))
        return out

    def _run(self, value: str) -> RunInfo | None:
        return None if value in ("", None, STYLIZE) else read_run(value)

    # ---- handlers
    def on_load(self) -> tuple[Any, ...]:
        """Page load and "refresh": the runs now on disk, the first one picked."""
        choices = self.run_choices()
        return (gr.update(choices=choices, value=choices[0][1]), *self.on_run(choices[0][1]))

    def on_run(self, value: str) -> tuple[Any, ...]:
        """A run picked: its checkpoints, its styles, and the controls of its model."""
        self.session.release()  # one model per run: the previous one goes now, not at the next translation
        try:
            run = self._run(value)
        except UserError as err:
            return (gr.update(choices=[LATEST_CHOICE], value=LATEST_CHOICE, visible=True), *self._controls(Controls()),
                    [], [], f"error: {err}")
        if run is None:  # stylize
            styles = builtin_style_images()
            controls = Controls(needs_style=True)
            info = "stylize: optimises the pixels against VGG-19 content and style losses (gan_translate.stylize)"
            return (gr.update(choices=[LATEST_CHOICE], value=LATEST_CHOICE, visible=False),
                    *self._controls(controls, stylize=True), self._thumbnails(styles), styles, info)
        controls = controls_for(run.model)
        styles = run_styles(run) if controls.needs_style else []
        info = f"{run.label}: " + (f"checkpoints {', '.join(run.checkpoints)}" if run.checkpoints
                                   else "no checkpoint yet")
        return (gr.update(choices=checkpoint_choices(run), value=LATEST_CHOICE, visible=True),
                *self._controls(controls), self._thumbnails(styles), styles, info)

    @staticmethod
    def _controls(c: Controls, *, stylize: bool = False) -> tuple[Any, ...]:
        """Visibility of: direction, native switch, style image, style gallery group, second style + mix, alpha,
        stylize settings."""
        return (gr.update(visible=c.bidirectional), gr.update(visible=not stylize), gr.update(visible=c.needs_style),
                gr.update(visible=c.needs_style), gr.update(visible=c.style_mix), gr.update(visible=c.alpha),
                gr.update(visible=stylize))

    @staticmethod
    def _thumbnails(paths: list[str]) -> list[Image.Image]:
        thumbs = []
        for path in paths:
            try:
                image = load_image(path, 3)
            except UserError:
                continue
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            thumbs.append(image)
        return thumbs

    @staticmethod
    def on_pick_style(paths: list[str], target: str, evt: gr.SelectData) -> tuple[Any, Any]:
        """A gallery click: that style image (full size) into the first or second style input."""
        try:
            image = load_image(paths[evt.index], 3)
        except (UserError, IndexError):
            return gr.update(), gr.update()
        return (image, gr.update()) if target != "style 2" else (gr.update(), image)

    def on_translate(self, run_value: str, checkpoint: str, image: Any, native: bool, direction: str, style: Any,
                     style2: Any, mix: float, alpha: float, loss: str, image_size: float, steps: float,
                     content_mask: Any = None, style_mask: Any = None,
                     progress: gr.Progress = gr.Progress()) -> tuple[Any, Any, str]:  # noqa: B008 (gradio's way)
        """The button: (output image, PNG file for download, one status line). Never raises for a visitor's
        mistake: a UserError becomes the status line and the server goes on."""
        try:
            if run_value == STYLIZE:
                progress(0.0, desc="stylize")
                out, line = self.session.stylize(
                    _upload_path(image), _upload_path(style), loss=loss, image_size=int(image_size),
                    steps=int(steps), on_step=lambda step, total: progress((step, total), desc="stylize",
                                                                           unit="iterations"),
                    content_mask=_upload_path(content_mask), style_mask=_upload_path(style_mask))
                stem = f"stylize_{loss}"
            else:
                if not run_value:
                    raise UserError("no run picked")
                out, line = self.session.translate(run_value, checkpoint or LATEST_CHOICE, _upload_path(image),
                                                   native=bool(native), direction=direction,
                                                   style=_upload_path(style), style2=_upload_path(style2),
                                                   mix=float(mix), alpha=float(alpha))
                stem = f"{Path(run_value).name}_{checkpoint or LATEST_CHOICE}"
        except UserError as err:
            return None, gr.update(value=None, visible=False), f"error: {err}"
        return out, gr.update(value=str(self._save_png(out, stem)), visible=True), line

    def _save_png(self, image: Image.Image, stem: str) -> Path:
        """The output as a PNG (lossless, unlike the framework's default WebP) for the download button."""
        png = self.workdir / uuid.uuid4().hex[:12] / f"{stem}.png"
        png.parent.mkdir()
        image.save(png)
        self._downloads.append(png.parent)
        while len(self._downloads) > KEPT_DOWNLOADS:
            shutil.rmtree(self._downloads.popleft(), ignore_errors=True)
        return png

    # ---- the page
    def build(self) -> gr.Blocks:
        with gr.Blocks(title="gan_translate demo", analytics_enabled=False) as page:
            gr.Markdown("## gan_translate: pick a trained run, drop in an image")
            with gr.Row():
                choices = self.run_choices()
                run = gr.Dropdown(label="run (name · model · trained steps · training size)", choices=choices,
                                  value=choices[0][1], scale=4, elem_id="run")
                checkpoint = gr.Dropdown(label="checkpoint", choices=[LATEST_CHOICE], value=LATEST_CHOICE,
                                         scale=1, elem_id="checkpoint")
                refresh = gr.Button("refresh runs", scale=0, size="sm")
            with gr.Row():
                direction = gr.Radio(["AtoB", "BtoA"], value="AtoB", label="direction", visible=False)
                native = gr.Checkbox(False, label="native resolution (else the training scale)", elem_id="native")
            with gr.Row(visible=False) as stylize_group:
                loss = gr.Dropdown([*STYLE_LOSSES, *STYLIZE_COMBINATIONS], value="gram", label="style loss")
                image_size = gr.Slider(32, 1024, value=256, step=32, label="image size (longer side)")
                steps = gr.Slider(1, 1000, value=100, step=1, label="iterations")
                # guided regions: colour-coded masks (blue, green, black, white, red, yellow, grey, lightblue,
                # purple); each region of the input takes the style of the same colour's region of the style image
                content_mask = gr.Image(label="input mask (optional, colour regions)", type="filepath", format="png",
                                        sources=["upload", "clipboard"], height=120, elem_id="content_mask")
                style_mask = gr.Image(label="style mask (optional, same colours)", type="filepath", format="png",
                                      sources=["upload", "clipboard"], height=120, elem_id="style_mask")
            with gr.Row():
                with gr.Column():
                    image = gr.Image(label="input", type="filepath", format="png", sources=["upload", "clipboard"],
                                     elem_id="input", height=IMAGE_HEIGHT)
                    go = gr.Button("translate", variant="primary", elem_id="translate")
                with gr.Column(visible=False) as style_column:
                    style = gr.Image(label="style image", type="filepath", format="png",
                                     sources=["upload", "clipboard"], elem_id="style", height=IMAGE_HEIGHT)
                with gr.Column():
                    output = gr.Image(label="output (PNG)", format="png", interactive=False, elem_id="output",
                                      buttons=["download", "fullscreen"], height=IMAGE_HEIGHT)
                    download = gr.DownloadButton("download PNG", visible=False, elem_id="download", size="md")
            status = gr.Markdown(elem_id="status")
            with gr.Group(visible=False) as style_group:
                gallery = gr.Gallery(label="the run's styles (click one to use it)", columns=10, height=150,
                                     allow_preview=False, format="png", elem_id="styles")
                with gr.Row():
                    with gr.Column(visible=False) as mix_group:
                        with gr.Row():
                            style2 = gr.Image(label="second style image", type="filepath", format="png",
                                              sources=["upload", "clipboard"], height=160, elem_id="style2")
                            with gr.Column():
                                mix = gr.Slider(0, 1, value=0.5, step=0.05,
                                                label="interpolation: weight of the second style")
                                target = gr.Radio(["style 1", "style 2"], value="style 1",
                                                  label="a clicked style goes to")
                    alpha = gr.Slider(0, 1, value=1, step=0.05, label="alpha: content (0) - style (1) trade-off",
                                      visible=False)
            gr.Examples(self.examples, inputs=image, label="examples: the built-in facades' test images")
            style_paths = gr.State([])

            run_outputs = [checkpoint, direction, native, style_column, style_group, mix_group, alpha, stylize_group,
                           gallery, style_paths, status]
            page.load(self.on_load, None, [run, *run_outputs])
            refresh.click(self.on_load, None, [run, *run_outputs])
            run.input(self.on_run, run, run_outputs)
            gallery.select(self.on_pick_style, [style_paths, target], [style, style2])
            # preprocess=False: uploads reach the handler as files, read by the project's safe loader, so a broken
            # upload is one line in the page rather than an exception inside the framework
            go.click(self.on_translate, [run, checkpoint, image, native, direction, style, style2, mix, alpha, loss,
                                         image_size, steps, content_mask, style_mask], [output, download, status],
                     preprocess=False,
                     api_name="translate")
        return page


def _upload_path(payload: Any) -> str | None:
    """The file behind an unprocessed image payload (a dict with 'path', or a path string)."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return payload.get("path")
    return str(payload)

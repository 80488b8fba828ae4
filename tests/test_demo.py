"""The web demo through gradio_client against the app served in this process: every model family translates an
upload to the expected size, the visitor's mistakes come back as one line and the server goes on serving; the run
picker, the one-model memory, and the command without gradio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_translate.cli import main
from gan_translate.data.styles import ensure_builtin_styles
from gan_translate.demo.browser import Served
from tests.conftest import REPO
from tests.demo_helpers import make_runs, picture

gradio_client = pytest.importorskip("gradio_client", reason="the demo extra is not installed (pip install -e .[demo])")
pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e .[demo])")

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword):")]  # gradio's own pandas use


@pytest.fixture(scope="module")
def runs(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    styles = ensure_builtin_styles(tmp_path_factory.mktemp("styles"), size=32, n_content=4, per_class=2)
    return make_runs(tmp_path_factory.mktemp("checkpoints"), tiny_data, styles)


@pytest.fixture(scope="module")
def served(runs: dict[str, Path]):
    from gan_translate.demo import create_app

    page, app = create_app(checkpoints_dir=runs["pix2pix"].parent, vgg_weights="random", max_megapixels=0.05)
    server = Served(page, app)
    yield server
    server.close()


@pytest.fixture(scope="module")
def client(served: Served):
    return gradio_client.Client(served.url, verbose=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    (folder / "garbage.png").write_bytes(b"this is not a PNG file at all")
    return {"photo": picture(folder / "photo.png", (48, 40)), "style": picture(folder / "style.png", (30, 30), 1),
            "style2": picture(folder / "style2.png", (36, 28), 2), "garbage": folder / "garbage.png",
            "huge": picture(folder / "huge.png", (300, 200))}  # 0.06 MP, over the test server's 0.05 MP limit


def translate(client, run: str, image: Path | None, *, checkpoint: str = "latest", native: bool = False,
              direction: str = "AtoB", style: Path | None = None, style2: Path | None = None, mix: float = 0.0,
              alpha: float = 1.0, loss: str = "gram", image_size: int = 32, steps: int = 2,
              content_mask: Path | None = None, style_mask: Path | None = None):
    """The page's translate button as an API call: (output image or None, PNG file or None, status line)."""
    handle = gradio_client.handle_file
    output, download, status = client.predict(
        run, checkpoint, handle(str(image)) if image else None, native, direction,
        handle(str(style)) if style else None, handle(str(style2)) if style2 else None, mix, alpha, loss,
        image_size, steps, handle(str(content_mask)) if content_mask else None,
        handle(str(style_mask)) if style_mask else None, api_name="/translate")
    png = download.get("value") if isinstance(download, dict) else download
    return (Image.open(output) if output else None), png, status


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


# (run, options, expected output size for the 48x40 upload). Training scale: the shorter side at the run's
# load_size, aspect kept (40 -> 36: 43x36); pix2pix's unet_32 snaps 36 to its stride (32: 38x32) rather than padding
# to 64; MIXGAN's fully connected layers fix its size (32x32).
CASES = [
    ("pix2pix", {}, (38, 32)),
    ("pix2pix", {"native": True}, (48, 40)),
    ("cyclegan", {"direction": "AtoB"}, (43, 36)),
    ("cyclegan", {"direction": "BtoA", "native": True}, (48, 40)),
    ("cut", {}, (43, 36)),  # a model added after the demo: no change needed
    ("imported", {"direction": "BtoA"}, (43, 36)),  # a run written by `gan_translate import`
    ("mixgan", {}, (32, 32)),
    ("adain", {"style": "style", "alpha": 0.6}, (48, 40)),  # load_size 40: the shorter side stays 40
    ("adain", {"style": "style", "style2": "style2", "mix": 0.5}, (48, 40)),
    ("tpfr", {"style": "style"}, (43, 36)),
]


@pytest.mark.parametrize("name, extra, size", CASES, ids=[f"{c[0]}-{'-'.join(c[1]) or 'default'}" for c in CASES])
def test_every_model_family_returns_an_image_of_the_expected_size(client, runs, images, name, extra, size) -> None:
    extra = {k: images[v] if k.startswith("style") else v for k, v in extra.items()}
    output, png, status = translate(client, str(runs[name]), images["photo"], **extra)
    assert output is not None, status
    assert output.size == size, status
    assert f"{size[0]}x{size[1]} out" in status and not status.startswith("error")
    saved = Image.open(png)
    assert saved.format == "PNG" and Path(png).suffix == ".png"
    assert np.array_equal(pixels(saved), pixels(output))  # the download is the image shown, losslessly


def test_the_knobs_change_the_output(client, runs, images) -> None:
    """Direction picks the other generator, alpha and interpolation reach AdaIN, the checkpoint picker is honoured."""
    photo, style, style2 = images["photo"], images["style"], images["style2"]
    a, _, _ = translate(client, str(runs["cyclegan"]), photo, direction="AtoB")
    b, _, _ = translate(client, str(runs["cyclegan"]), photo, direction="BtoA")
    assert not np.array_equal(pixels(a), pixels(b))
    full, _, _ = translate(client, str(runs["adain"]), photo, style=style, alpha=1.0)
    none, _, _ = translate(client, str(runs["adain"]), photo, style=style, alpha=0.0)
    mixed, _, _ = translate(client, str(runs["adain"]), photo, style=style, style2=style2, mix=0.5)
    assert len({pixels(x).tobytes() for x in (full, none, mixed)}) == 3
    named, _, status = translate(client, str(runs["pix2pix"]), photo, checkpoint="step_00000002")
    assert "p2p/step_00000002" in status
    assert np.array_equal(pixels(named), pixels(translate(client, str(runs["pix2pix"]), photo)[0]))


def test_stylize_optimises_at_the_content_size(client, images) -> None:
    output, png, status = translate(client, "stylize", images["photo"], style=images["style"], loss="mmd_linear",
                                    image_size=32, steps=3)
    assert output is not None, status
    assert output.size == (48, 40) and "stylize (mmd_linear, 3 iterations at 32 px)" in status
    assert not np.array_equal(pixels(output), pixels(Image.open(images["photo"])))


def test_stylize_with_masks(client, images, tmp_path: Path) -> None:
    """Guided regions from the page: an input mask and a style mask of the same colours; a colour outside the palette
    is one status line naming the upload."""
    top_bottom = np.zeros((40, 48, 3), np.uint8)
    top_bottom[:20], top_bottom[20:] = (0, 0, 255), (0, 255, 0)
    Image.fromarray(top_bottom).save(tmp_path / "input_mask.png")
    Image.fromarray(top_bottom[::2, ::2]).save(tmp_path / "style_mask.png")  # another size: resized, said
    plain, _, _ = translate(client, "stylize", images["photo"], style=images["style"], steps=3)
    guided, _, status = translate(client, "stylize", images["photo"], style=images["style"], steps=3,
                                  content_mask=tmp_path / "input_mask.png", style_mask=tmp_path / "style_mask.png")
    assert guided is not None and guided.size == (48, 40), status
    assert "resized (nearest)" in status and not np.array_equal(pixels(plain), pixels(guided))
    Image.fromarray(np.full((40, 48, 3), (200, 30, 30), np.uint8)).save(tmp_path / "smudge.png")
    output, _, status = translate(client, "stylize", images["photo"], style=images["style"],
                                  content_mask=tmp_path / "smudge.png", style_mask=tmp_path / "style_mask.png")
    assert output is None and status.startswith("error: content mask smudge.png: colour (200, 30, 30)")


def test_user_errors_are_one_line_and_the_server_goes_on(client, runs, images) -> None:
    pix2pix, photo = str(runs["pix2pix"]), images["photo"]
    cases = [  # (run, upload, options, the status line's start)
        (pix2pix, images["garbage"], {}, "error: cannot read the image garbage.png: not an image (unknown or corrupt"),
        (pix2pix, images["huge"], {}, "error: the image huge.png is 300x200 (0.1 MP), above this demo's limit of "
                                      "0.05 MP (--max_megapixels)"),
        (pix2pix, None, {}, "error: no image: upload one or pick an example"),
        (str(runs["broken"]), photo, {}, f"error: checkpoint {runs['broken'] / 'step_00000007'} has no network 'G_A' "
                                         "(missing net_G_A.safetensors)"),
        (str(runs["untrained"]), photo, {}, "error: run untrained has no checkpoint yet (train it, or pick another"),
        (str(runs["tpfr"]), photo, {}, "error: no style image: upload one or click one of the run's styles"),
        (pix2pix, photo, {"checkpoint": "step_00000099"}, "error: checkpoint 'step_00000099' not found in"),
        ("stylize", photo, {"style": images["style"], "image_size": 16}, "error: option --image_size: 16 is below 32"),
    ]
    for run, image, options, expected in cases:
        output, png, status = translate(client, run, image, **options)
        assert output is None and png is None, expected
        assert status.startswith(expected), (status, expected)
        assert "\n" not in status and "Traceback" not in status
    good, _, _ = translate(client, pix2pix, photo)  # still serving
    assert good is not None and good.size == (38, 32)


def test_run_picker_lists_every_run_and_reads_new_ones(served: Served, runs) -> None:
    from gan_translate.demo.runs import checkpoint_choices, find_runs

    labels = {Path(value).name: label for label, value in served.app.run_choices() if value != "stylize"}
    assert set(labels) == {"p2p", "cyc", "cut", "imp", "mix", "ada", "tp", "broken", "untrained"}
    assert labels["p2p"] == "p2p · pix2pix · 2 steps · 32 px"
    assert labels["ada"] == "ada · adain · 7 steps · 32 px"
    assert labels["imp"] == "imp · cyclegan · imported · 32 px"
    assert labels["untrained"] == "untrained · cyclegan · no checkpoint · 32 px"
    assert checkpoint_choices(next(r for r in find_runs(runs["pix2pix"].parent) if r.name == "p2p")) == [
        "latest", "step_00000002"]
    # a run written after the server started shows up on the next page load ("refresh")
    from tests.demo_helpers import write_run

    write_run(runs["pix2pix"].parent, "later", "cyclegan", runs["cyclegan"] / "unused", steps=3)
    assert "later · cyclegan · 3 steps · 32 px" in [label for label, _ in served.app.run_choices()]


def test_one_model_stays_loaded_and_switching_frees_it(served: Served, client, runs, images) -> None:
    session = served.app.session
    translate(client, str(runs["cyclegan"]), images["photo"])
    first = session.loaded.model
    translate(client, str(runs["cyclegan"]), images["photo"], direction="BtoA")
    assert session.loaded.model is first  # the same run: not reloaded
    translate(client, str(runs["pix2pix"]), images["photo"])
    assert session.loaded.model is not first and session.loaded.model.name == "pix2pix"
    import gc
    import weakref

    gone = weakref.ref(first)
    del first
    gc.collect()
    assert gone() is None  # nothing else holds the previous run's model
    served.app.on_run(str(runs["mixgan"]))  # picking a run in the page frees the loaded one at once
    assert session.loaded is None


def test_controls_follow_the_model_class() -> None:
    from gan_translate.demo.session import Controls, controls_for

    assert controls_for("pix2pix") == Controls() == controls_for("mixgan") == controls_for("cut")
    assert controls_for("cyclegan") == Controls(bidirectional=True)
    assert controls_for("adain") == Controls(needs_style=True, alpha=True, style_mix=True)
    assert controls_for("tpfr") == Controls(needs_style=True)


def test_without_gradio_the_command_exits_2_naming_the_extra(monkeypatch, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["demo", "--checkpoints_dir", "nowhere"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'error: the demo needs gradio, the optional extra "demo": pip install -e ".[demo]"']


def test_gradio_is_imported_only_by_the_demo_command() -> None:
    code = ("import sys, gan_translate.cli, gan_translate.demo, gan_translate.demo.runs, gan_translate.demo.session; "
            "from gan_translate.cli import main; main(['--help']); print(sorted(m for m in sys.modules if "
            "m.split('.')[0] in ('gradio', 'gradio_client')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "demo     a local web page" in result.stdout


def test_bad_options_are_one_line(capsys) -> None:
    assert main(["demo", "--port", "http"]) == 2
    assert capsys.readouterr().err.strip() == "error: argument --port: invalid int value: 'http'"
    assert main(["demo", "--run", "no/such/run"]) == 2
    assert capsys.readouterr().err.strip() == "error: option --run: no run folder at no/such/run"

"""test.py end to end on tiny trained runs: outputs, sizes, channels, metrics, the gallery, errors and exit codes;
load_translator, ONNX export, and validation during training (--val_freq)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gan_translate import load_translator
from gan_translate.cli import main, train_main
from gan_translate.cli import test_main as run_test_command  # aliased: pytest would collect a module-level test_main
from gan_translate.engine.checkpoint import find_checkpoint
from gan_translate.errors import UserError
from gan_translate.evaluate import inception, runner
from gan_translate.inference import load_model
from gan_translate.nets.channels_last import is_channels_last
from tests.conftest import REPO, tiny_run
from tests.test_evaluate import tiny_inception_file


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(inception.NO_DOWNLOAD_ENV, "1")


@pytest.fixture(scope="module")
def runs(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tiny runs of 2 steps: pix2pix (RGB), pix2pix (grey -> grey) and CycleGAN."""
    ckpts = tmp_path_factory.mktemp("checkpoints")
    assert train_main(tiny_run("pix2pix", tiny_data, ckpts, "p2p", "--max_steps", "2")) == 0
    assert train_main(tiny_run("pix2pix", tiny_data, ckpts, "grey", "--max_steps", "2", "--input_nc", "1",
                               "--output_nc", "1")) == 0
    assert train_main(tiny_run("cyclegan", tiny_data, ckpts, "cyc", "--max_steps", "2")) == 0
    return ckpts


def odd_images(folder: Path, mode: str = "RGB") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (w, h) in {"wide.png": (333, 250), "small.jpg": (45, 37)}.items():
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(array).convert(mode).save(folder / name)
    return folder


def test_args(runs: Path, results: Path, name: str, *extra: str) -> list[str]:
    return ["--name", name, "--checkpoints_dir", str(runs), "--results_dir", str(results), "--num_threads", "0",
            *extra]


test_args.__test__ = False  # a helper, not a test


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64)


def test_pix2pix_writes_images_gallery_and_metrics(runs: Path, tiny_data: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    weights = str(tiny_inception_file(tmp_path))
    assert run_test_command(test_args(runs, tmp_path / "results", "p2p", "--dataroot", str(tiny_data / "aligned"),
                               "--inception_weights", weights)) == 0
    out_dir = tmp_path / "results" / "p2p" / "test_latest"
    assert f"gallery: {out_dir / 'index.html'}" in capsys.readouterr().out
    names = sorted(p.name for p in (out_dir / "images").iterdir())
    assert names == sorted(f"{i:04d}_{role}.png" for i in range(2) for role in ("real_A", "fake_B", "real_B"))
    report = json.loads((out_dir / "metrics.json").read_text())
    result = report["results"]["AtoB"]
    assert result["images"] == result["paired_images"] == 2 and result["fid_images"] == [2, 2]
    for key in ("psnr", "ssim", "l1", "fid", "kid", "kid_std"):
        assert isinstance(result[key], float), key
    assert set(report["definitions"]) == {"psnr", "ssim", "l1", "fid", "kid"}
    assert any("small-sample" in n for n in report["notes"])
    assert report["inception"].startswith("TorchScript file")
    # the scores are those of the saved 8-bit PNGs
    fake, real = read_png(out_dir / "images" / "0000_fake_B.png"), read_png(out_dir / "images" / "0000_real_B.png")
    first = report["per_image"]["AtoB"][0]
    assert first["file"] == "0000.png"
    assert first["l1"] == pytest.approx(np.abs(fake - real).mean(), abs=1e-4)
    assert first["psnr"] == pytest.approx(10 * np.log10(255**2 / ((fake - real) ** 2).mean()), abs=1e-4)
    page = (out_dir / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(sources) == sorted(f"images/{n}" for n in names)  # every image, by relative path
    assert all((out_dir / s).is_file() for s in sources)


def test_cyclegan_translates_both_ways_and_pairs_by_name(runs: Path, tiny_data: Path, tmp_path: Path) -> None:
    args = test_args(runs, tmp_path / "r", "cyc", "--dataroot", str(tiny_data / "unaligned"), "--metrics", "psnr,l1",
                     "--batch_size", "2", "--reconstruct")
    assert run_test_command(args) == 0
    out_dir = tmp_path / "r" / "cyc" / "test_latest"
    report = json.loads((out_dir / "metrics.json").read_text())
    assert set(report["results"]) == {"AtoB", "BtoA"}
    assert report["results"]["BtoA"]["paired_images"] == 2  # testB/0000.png pairs with testA/0000.png
    assert "ssim" not in report["results"]["AtoB"] and report["inception"] is None
    names = {p.name for p in (out_dir / "images").iterdir()}
    assert {"0000_fake_B.png", "0000_rec_A.png", "0000_fake_A.png", "0000_rec_B.png", "0001_real_B.png"} <= names
    # the cycle's reconstruction is scored against the input it came from, from the saved 8-bit PNGs
    rec, real = read_png(out_dir / "images" / "0001_rec_B.png"), read_png(out_dir / "images" / "0001_real_B.png")
    assert report["per_image"]["BtoA"][1]["rec_l1"] == pytest.approx(np.abs(rec - real).mean(), abs=1e-4)
    assert {"rec_l1", "rec_l1_std"} <= set(report["results"]["AtoB"]) and "rec_l1" in report["definitions"]
    assert "<th>rec_A</th>" in (out_dir / "index.html").read_text()
    assert run_test_command(test_args(runs, tmp_path / "r2", "cyc", "--dataroot", str(tiny_data / "unaligned"),
                               "--direction", "BtoA", "--metrics", "none")) == 0
    only = json.loads((tmp_path / "r2" / "cyc" / "test_latest" / "metrics.json").read_text())
    assert list(only["results"]) == ["BtoA"] and only["results"]["BtoA"] == {"images": 2}
    # without --reconstruct only the translations: no cycles written, no rec_l1 even when L1 is scored
    names = {p.name for p in (tmp_path / "r2" / "cyc" / "test_latest" / "images").iterdir()}
    assert {"0000_real_B.png", "0000_fake_A.png", "0001_fake_A.png"} <= names and not any("rec" in n for n in names)
    assert run_test_command(test_args(runs, tmp_path / "r3", "cyc", "--dataroot", str(tiny_data / "unaligned"),
                                      "--metrics", "l1")) == 0
    plain = json.loads((tmp_path / "r3" / "cyc" / "test_latest" / "metrics.json").read_text())
    assert "rec_l1" not in plain["results"]["AtoB"] and "l1" in plain["results"]["AtoB"]
    assert "<th>rec_A</th>" not in (tmp_path / "r3" / "cyc" / "test_latest" / "index.html").read_text()


@pytest.mark.parametrize("extra, sizes, scale, results_folder", [
    # the runs trained with resize_and_crop 36 -> 32: by default the shorter side goes to 36, aspect ratio kept
    ([], {"wide": (48, 36), "small": (44, 36)}, "training scale: shorter side 36 (trained: resize to 36x36, crop 32)",
     "test_latest"),
    (["--preprocess", "none"], {"wide": (333, 250), "small": (45, 37)}, "native resolution (--preprocess none)",
     "test_latest_none"),
    (["--load_size", "20"], {"wide": (27, 20), "small": (24, 20)}, "shorter side 20 (--load_size 20; trained: ",
     "test_latest_load20"),
    # the reference's test command: every input resized to 24x24
    (["--load_size", "24", "--crop_size", "24"], {"wide": (24, 24), "small": (24, 24)},
     "resize to 24x24 as the reference test.py does", "test_latest_load24_crop24"),
])
def test_outputs_are_written_at_the_test_scale_and_grey_stays_single_channel(runs: Path, tmp_path: Path,
                                                                             extra: list[str], sizes: dict,
                                                                             scale: str, results_folder: str) -> None:
    folder = odd_images(tmp_path / "photos")
    for name, mode in (("cyc", "RGB"), ("grey", "L")):
        args = test_args(runs, tmp_path / "r", name, "--dataroot", str(folder), "--dataset_mode", "single",
                         "--direction", "AtoB", *extra)
        assert run_test_command(args) == 0
        out_dir = tmp_path / "r" / name / results_folder  # each scale has a folder of its own
        if name == "grey" and not extra:  # unet_32 trained at 36: 36 would pad to 64, so the scale snaps to 32
            sizes, scale = {"wide": (43, 32), "small": (39, 32)}, ("training scale: shorter side 32 (trained: "
                                                                  "resize to 36x36, crop 32; 36 rounded to the nearest "
                                                                  "multiple of the generator stride 32")
        for stem, size in sizes.items():
            for role in ("fake_B", "real_A"):  # the input is saved as it was translated
                image = Image.open(out_dir / "images" / f"{stem}_{role}.png")
                assert image.size == size and image.mode == mode, (stem, role, image.size)
        report = json.loads((out_dir / "metrics.json").read_text())
        assert report["results"]["AtoB"]["images"] == 2 and report["scale"].startswith(scale)
        assert any("no input has a true target" in n for n in report["notes"])
        assert f"scale: {report['scale']}" in (out_dir / "index.html").read_text()


def test_sizes_a_scale_does_not_use_are_refused(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for extra, message in ((["--load_size", "8", "--crop_size", "16"], "option --crop_size: 16 is larger than "
                                                                          "--load_size 8"),
                           (["--preprocess", "none", "--load_size", "16"], "option --load_size: --preprocess none "
                                                                           "does not use it")):
        assert run_test_command(test_args(runs, tmp_path / "r", "p2p", *extra)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_missing_inception_weights_skip_fid_with_one_line(runs: Path, tiny_data: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(runner, "find_inception", lambda weights: None)
    assert run_test_command(test_args(runs, tmp_path / "r", "p2p", "--dataroot", str(tiny_data / "aligned"))) == 0
    out = capsys.readouterr().out
    assert out.count("FID/KID skipped") == 1
    report = json.loads((tmp_path / "r" / "p2p" / "test_latest" / "metrics.json").read_text())
    assert "psnr" in report["results"]["AtoB"] and "fid" not in report["results"]["AtoB"]
    assert runner.NO_INCEPTION in report["notes"]


@pytest.mark.parametrize("extra, message", [
    (["--bogus", "1"], "unknown option --bogus"),
    (["--metrics", "psnr,fud"], "option --metrics: unknown metric 'fud'"),
    (["--batch_size", "-1"], "option --batch_size: -1 is below the minimum 0"),
    (["--direction", "BtoA"], "option --direction: model pix2pix was trained AtoB"),
    (["--epoch", "7"], "checkpoint '7' not found"),
    (["--dataroot", "/nonexistent/folder"], "folder not found: /nonexistent/folder"),
])
def test_bad_options_exit_2_with_one_line(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          extra: list[str], message: str) -> None:
    assert run_test_command(test_args(runs, tmp_path / "r", "p2p", *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_script_exit_code_in_a_subprocess(runs: Path, tmp_path: Path) -> None:
    bad = subprocess.run([sys.executable, str(REPO / "test.py"), "--name", "nope", "--checkpoints_dir", str(runs)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: no run found at {runs / 'nope'} (check --name and "
                                               "--checkpoints_dir)"]


# ----------------------------------------------------------------------------------------------------------------------
# Python API, export, validation during training
# ----------------------------------------------------------------------------------------------------------------------


def test_load_translator_scales_any_size_and_channels(runs: Path) -> None:
    t = load_translator(runs / "p2p", device="cpu")
    assert t.scale.startswith("training scale: shorter side 32 (trained: resize to 36x36, crop 32; 36 rounded")
    assert t.options.load_size == 36 and t.options.netG == "unet_32"
    photo = Image.new("RGB", (45, 37), (120, 30, 200))
    out = t(photo)
    assert out.size == t.size_for((45, 37)) == (39, 32) and out.mode == "RGB"
    assert load_translator(runs / "p2p", device="cpu", load_size=36).size_for((45, 37)) == (44, 36)  # as given
    assert np.array_equal(np.asarray(t(photo)), np.asarray(out))  # dropout noise is seeded
    assert t(photo.convert("L")).mode == "RGB"  # a grey picture given to a colour model is converted
    native = load_translator(runs / "grey", device="cpu", eval_mode=True, preprocess="none")
    assert native.scale == "native resolution (--preprocess none)"
    grey = native(photo)
    assert grey.mode == "L" and grey.size == (45, 37)
    cyc = load_translator(find_checkpoint(runs / "cyc"), device="cpu", load_size=20)  # a checkpoint folder too
    assert cyc(photo, direction="BtoA").size == (24, 20)
    with pytest.raises(UserError, match="translates one way only"):
        t(photo, direction="BtoA")


def test_onnx_export_matches_torch(runs: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    for name, net in (("p2p", "G"), ("cyc", "G_B")):
        output = tmp_path / f"{name}.onnx"
        assert main(["export", "--name", name, "--checkpoints_dir", str(runs), "--format", "onnx",
                     "--output", str(output), "--net", net]) == 0
        session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        translator = load_translator(runs / name, device="cpu", eval_mode=True)
        generator = translator.model.nets[net]
        for shape in ((1, 3, 37, 45), (2, 3, 64, 32)):
            x = torch.rand(shape) * 2 - 1
            with torch.no_grad():
                expected = generator(x).numpy()
            got = session.run(None, {"image": x.numpy()})[0]
            assert got.shape == expected.shape
            assert np.abs(got - expected).max() < 1e-4
    assert main(["export", "--name", "p2p", "--checkpoints_dir", str(runs), "--format", "tflite"]) == 2


def test_val_freq_logs_metrics_without_changing_training(tiny_data: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert train_main(tiny_run("pix2pix", tiny_data, tmp_path, "plain", "--max_steps", "4")) == 0
    assert train_main(tiny_run("pix2pix", tiny_data, tmp_path, "val", "--max_steps", "4", "--val_freq", "2")) == 0
    plain, val = (load_file(str(find_checkpoint(tmp_path / n) / "net_G.safetensors")) for n in ("plain", "val"))
    assert all(torch.equal(plain[k], val[k]) for k in plain)  # validation touches no training state
    events = next((tmp_path / "val" / "logs").rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
    acc.Reload()
    for tag in ("val/psnr", "val/ssim", "val/l1"):
        assert [e.step for e in acc.Scalars(tag)] == [2, 4], tag
    assert 0 < acc.Scalars("val/psnr")[0].value < 100


def test_style_model_pairs_every_content_with_every_style(tmp_path: Path) -> None:
    from gan_translate.models import MODELS

    if "adain" not in MODELS:
        pytest.skip("no style-transfer model registered")
    from gan_translate.data.styles import ensure_builtin_styles

    data = ensure_builtin_styles(tmp_path / "styles", size=16, n_content=3, per_class=1)
    assert train_main(["--model", "adain", "--dataroot", str(data), "--checkpoints_dir", str(tmp_path), "--name",
                       "style", "--vgg_weights", "random", "--load_size", "16", "--crop_size", "16", "--batch_size",
                       "2", "--num_threads", "0", "--max_steps", "1"]) == 0
    assert run_test_command(["--name", "style", "--checkpoints_dir", str(tmp_path),
                             "--results_dir", str(tmp_path / "r"), "--dataroot", str(data), "--num_styles", "2"]) == 0
    out_dir = tmp_path / "r" / "style" / "test_latest"
    report = json.loads((out_dir / "metrics.json").read_text())
    assert report["results"]["style"] == {"images": 6}  # 3 contents x 2 styles
    assert any("no true target" in n for n in report["notes"])
    results = sorted((out_dir / "images").glob("*_stylized.png"))
    assert len(results) == 6 and all(Image.open(p).size == (16, 16) for p in results)
    page = (out_dir / "index.html").read_text()
    assert "<th>content</th><th>style</th><th>result</th>" in page
    assert len(re.findall(r'<img src="images/[^"]+_stylized\.png"', page)) == 6


def test_an_unreadable_file_stops_or_is_skipped_while_decoding_runs_ahead(runs: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    folder = odd_images(tmp_path / "photos")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    args = test_args(runs, tmp_path / "r", "grey", "--dataroot", str(folder), "--dataset_mode", "single")
    assert run_test_command(args) == 2  # raised in the prefetch thread, reported by the command as one line
    err = capsys.readouterr().err  # after the progress bar: one line, no traceback
    assert "Traceback" not in err and err.splitlines()[-1] == f"error: cannot read image {folder / 'broken.png'}: " \
        "not an image (unknown or corrupt format)", err
    assert run_test_command([*args, "--skip_bad_images"]) == 0
    report = json.loads((tmp_path / "r" / "grey" / "test_latest" / "metrics.json").read_text())
    assert report["results"]["AtoB"]["images"] == 2
    assert any("skipped 1 unreadable image(s); first: " in n and "broken.png" in n for n in report["notes"])


def test_mixed_precision_translates_under_autocast_close_to_fp32(runs: Path, tiny_data: Path, tmp_path: Path) -> None:
    """``--mixed_precision bf16`` gives the fp32 images to within a few 8-bit levels (not bit-equal: it is bf16), and
    says so in metrics.json."""
    images = {}
    for precision in ("no", "bf16"):
        results = tmp_path / precision
        assert run_test_command(test_args(runs, results, "p2p", "--dataroot", str(tiny_data / "aligned"), "--eval",
                                          "--metrics", "l1", "--mixed_precision", precision)) == 0
        out_dir = results / "p2p" / "test_latest_eval"
        images[precision] = read_png(out_dir / "images" / "0000_fake_B.png")
        report = json.loads((out_dir / "metrics.json").read_text())
        assert report["options"]["mixed_precision"] == precision
        assert any("bf16 autocast" in n for n in report["notes"]) == (precision == "bf16")
    difference = np.abs(images["bf16"] - images["no"])
    assert 0 < difference.mean() < 2 and difference.max() <= 16


def test_tiles_and_precision_from_the_documented_commands(runs: Path, tmp_path: Path) -> None:
    """test.py --tile N --mixed_precision bf16 at native resolution: outputs at the untiled size, noted in metrics.json;
    load_translator takes the same."""
    folder = odd_images(tmp_path / "photos")
    args = test_args(runs, tmp_path / "r", "cyc", "--dataroot", str(folder), "--dataset_mode", "single",
                     "--direction", "AtoB", "--preprocess", "none", "--tile", "64", "--tile_overlap", "16",
                     "--mixed_precision", "bf16")
    assert run_test_command(args) == 0
    out_dir = tmp_path / "r" / "cyc" / "test_latest_none"  # the scale names the folder
    assert Image.open(out_dir / "images" / "wide_fake_B.png").size == (333, 250)
    notes = json.loads((out_dir / "metrics.json").read_text())["notes"]
    assert any("tiles of 64 px (--tile), blended over 16 px" in n for n in notes)
    assert any("bf16 autocast" in n for n in notes)
    photo = Image.open(folder / "wide.png")
    plain = load_translator(runs / "cyc", device="cpu", preprocess="none")(photo)
    tiled = load_translator(runs / "cyc", device="cpu", preprocess="none", tile=64, mixed_precision="bf16")(photo)
    assert tiled.size == plain.size == (333, 250)
    diff = np.abs(np.asarray(tiled, dtype=np.float32) - np.asarray(plain, dtype=np.float32))
    assert 0 < diff.mean() < 20  # bf16 and per-tile instance statistics move values a little, not wholesale
    assert run_test_command(test_args(runs, tmp_path / "r", "cyc", "--tile_overlap", "8")) == 2


def test_default_batch_size_is_one_for_resnet_generators_on_cpu() -> None:
    """--batch_size 0 (the default): ResNet generators translate one image at a time on a CPU (faster there), the
    U-Net in batches of four; any device other than the CPU batches."""
    from gan_translate.config import resolve
    from gan_translate.evaluate.runner import default_batch_size
    from gan_translate.models import create_model, model_class

    cpu = torch.device("cpu")
    cases = (("cyclegan", [], 1), ("pix2pix", [], 4), ("pix2pix", ["--netG", "resnet_6blocks"], 1))
    for name, extra, expected in cases:
        options = resolve(model_class(name).Options, name, ["--dataroot", "unused", "--ngf", "4", "--ndf", "4", *extra])
        model = create_model(options, training=False)
        assert default_batch_size(model, cpu) == expected, (name, extra)
        assert default_batch_size(model, torch.device("meta")) == 4


def test_loaded_generators_translate_with_nhwc_activations_on_a_cpu(runs: Path) -> None:
    model, _, _ = load_model(runs / "cyc", device="cpu", eval_mode=True)
    layouts: list[bool] = []
    model.nets["G_A"].model[1].register_forward_hook(lambda m, args, out: layouts.append(is_channels_last(out)))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        out = model.translate({"A": x})["fake_B"]
    assert layouts == [True] and out.is_contiguous() and out.shape == x.shape

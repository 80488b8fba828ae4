"""Tar shards: datasets/make_shards.py writes them from every dataset layout, --dataroot reads them with the same items
as the folder, bad images and missing shards give one line, training from shards equals training from the folder and
test.py reads them as it reads the folder; the header-scan cache lets later processes skip the scan."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

pytest.importorskip("webdataset")

from gan_translate.cli import train_main  # noqa: E402
from gan_translate.data import create_dataloader, create_dataset, datasets, images  # noqa: E402
from gan_translate.data.shards import index_path  # noqa: E402
from gan_translate.data.styles import ensure_builtin_styles  # noqa: E402
from gan_translate.engine.checkpoint import find_checkpoint  # noqa: E402
from gan_translate.errors import UserError  # noqa: E402
from tests.conftest import REPO, tiny_run  # noqa: E402
from tests.test_train import weights  # noqa: E402

SCRIPT = REPO / "datasets" / "make_shards.py"
pytestmark = pytest.mark.usefixtures("one_thread")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_shards", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_shards = _script().main


def options(dataroot: Path | str, mode: str, **extra) -> SimpleNamespace:
    base = dict(dataroot=str(dataroot), dataset_mode=mode, phase="train", direction="AtoB", input_nc=3, output_nc=3,
                preprocess="resize_and_crop", load_size=36, crop_size=32, no_flip=False, serial_batches=False,
                max_dataset_size=float("inf"), seed=5, skip_bad_images=False)
    return SimpleNamespace(**{**base, **extra})


def assert_same_items(loose, sharded, epoch: int = 1) -> None:
    assert len(loose) == len(sharded)
    for index in range(len(loose)):
        a, b = loose[(epoch, index)], sharded[(epoch, index)]
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), (key, index)
            elif key.endswith("_paths"):  # <folder>/<name>.png vs <shard>.tar/<name>.png
                assert Path(a[key]).name == Path(b[key]).name
            else:
                assert a[key] == b[key]


@pytest.fixture(scope="module")
def styles_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_builtin_styles(tmp_path_factory.mktemp("styles"), size=32, n_content=5, per_class=3)


@pytest.mark.parametrize("mode", ["aligned", "unaligned", "single", "styles"])
def test_every_mode_reads_the_same_items_from_shards(mode: str, tiny_data: Path, styles_data: Path,
                                                      tmp_path: Path) -> None:
    source = {"aligned": tiny_data / "aligned", "unaligned": tiny_data / "unaligned",
              "single": tiny_data / "unaligned" / "trainA", "styles": styles_data}[mode]
    assert make_shards([str(source), str(tmp_path), "--mode", mode, "--per_shard", "3"]) == 0
    sets = {"aligned": {"train", "test"}, "unaligned": {"trainA", "trainB", "testA", "testB"}, "single": {"images"},
            "styles": {"content", "style", "unseen_style"}}[mode]
    assert {p.name.rsplit("-", 1)[0] for p in tmp_path.glob("*.tar")} == sets
    assert all(index_path(tar).is_file() for tar in tmp_path.glob("*.tar"))
    loose = create_dataset(options(source, mode))
    sharded = create_dataset(options(tmp_path, mode))
    assert_same_items(loose, sharded)
    if mode == "styles":
        assert sharded.classes == loose.classes and sharded.style_labels == loose.style_labels
    if mode == "unaligned":  # a brace pattern naming the shards, and BtoA, read the same too
        pattern = str(tmp_path / "{trainA,trainB}-{000000..000002}.tar")
        assert_same_items(create_dataset(options(source, mode, direction="BtoA")),
                          create_dataset(options(pattern, mode, direction="BtoA")))


def test_script_as_documented_and_loader_workers(tiny_data: Path, tmp_path: Path) -> None:
    """The README's command; a DataLoader with two worker processes yields the batches of one without workers."""
    out = tmp_path / "shards"
    done = subprocess.run([sys.executable, str(SCRIPT), str(tiny_data / "aligned"), str(out), "--mode", "aligned",
                           "--per_shard", "3"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "train: 8 images -> 3 shard(s)" in done.stdout
    members = tarfile.open(out / "train-000000.tar").getnames()
    assert members == ["0000.png", "0001.png", "0002.png"]  # webdataset keys: the file names without extension
    dataset = create_dataset(options(out, "aligned"))
    batches = [create_dataloader(dataset, batch_size=3, shuffle=True, seed=1, num_workers=n) for n in (0, 2)]
    for loader in batches:
        loader.sampler.set_epoch(2)
    for plain, forked in zip(*batches):
        assert torch.equal(plain["A"], forked["A"]) and plain["A_paths"] == forked["A_paths"]


def test_bad_images_missing_shards_and_unknown_sets(tiny_data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "src"
    (source / "train").mkdir(parents=True)
    for path in sorted((tiny_data / "aligned" / "train").glob("*.png"))[:3]:
        (source / "train" / path.name).write_bytes(path.read_bytes())
    (source / "train" / "broken.png").write_bytes(b"not a png")
    assert make_shards([str(source), str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.png" in err and "--skip_bad_images" in err
    assert make_shards([str(source), str(tmp_path / "b"), "--skip_bad_images"]) == 0
    assert len(create_dataset(options(tmp_path / "b", "aligned"))) == 3
    assert make_shards([str(source), str(tmp_path / "b")]) == 2  # shards of that set are there already
    assert "already holds shards of set train" in capsys.readouterr().err

    with pytest.raises(UserError, match=r"shard not found: .*train-000001\.tar \(and 8 more\)"):
        create_dataset(options(str(tmp_path / "b" / "train-{000000..000009}.tar"), "aligned"))
    make_shards([str(tiny_data / "aligned"), str(tmp_path / "c"), "--per_shard", "4"])
    with pytest.raises(UserError, match=r"no shards of set 'trainA' \(trainA-\*\.tar\); sets found: test, train"):
        create_dataset(options(tmp_path / "c", "unaligned"))


def _foreign_shard(path: Path, members: dict[str, bytes]) -> None:
    """A tar written without make_shards (no index file), as other tools write webdataset shards."""
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_shards_without_index_corrupt_members_and_stale_indexes(tiny_data: Path, tmp_path: Path) -> None:
    files = sorted((tiny_data / "unaligned" / "trainA").glob("*.png"))
    _foreign_shard(tmp_path / "images-000000.tar", {f.name: f.read_bytes() for f in files[:4]} | {"a.json": b"{}"})
    foreign = create_dataset(options(tmp_path, "single"))
    assert_same_items(create_dataset(options(tiny_data / "unaligned" / "trainA", "single", max_dataset_size=4)),
                      foreign)
    assert make_shards(["--index", str(tmp_path / "images-000000.tar")]) == 0
    index = json.loads(index_path(tmp_path / "images-000000.tar").read_text())
    assert [m[0] for m in index["members"]] == [f.name for f in files[:4]] and index["members"][0][3:] == [32, 32]

    # The shard rewritten with a truncated member: the stale index is noticed (size differs) and the error names it.
    data = files[1].read_bytes()
    _foreign_shard(tmp_path / "images-000000.tar", {files[0].name: files[0].read_bytes(), "bad.png": data[:80]})
    dataset = create_dataset(options(tmp_path, "single"))  # the header of bad.png is intact
    with pytest.raises(UserError, match=r"cannot read image .*images-000000\.tar/bad\.png: "):
        dataset[1]


def test_scan_cache_spares_the_other_processes_the_header_scan(tiny_data: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "run" / "scan_cache.json"
    first = create_dataset(options(tiny_data / "unaligned", "unaligned"), scan_cache=cache)
    assert cache.is_file()

    def no_probe(path, data=None):
        raise AssertionError(f"header of {path} read again")

    monkeypatch.setattr(datasets, "probe_image", no_probe)
    second = create_dataset(options(tiny_data / "unaligned", "unaligned"), scan_cache=cache)
    assert second.a_sizes == first.a_sizes and second.b_paths == first.b_paths
    # A changed listing is scanned afresh.
    with pytest.raises(AssertionError, match="read again"):
        create_dataset(options(tiny_data / "unaligned", "unaligned", max_dataset_size=3), scan_cache=cache)
    monkeypatch.setattr(datasets, "probe_image", images.probe_image)


def test_training_from_shards_equals_training_from_the_folder(tiny_data: Path, tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    assert make_shards([str(tiny_data / "aligned"), str(shards), "--per_shard", "3"]) == 0
    assert train_main(tiny_run("pix2pix", tiny_data, tmp_path, "loose", "--max_steps", "3")) == 0
    sharded = tiny_run("pix2pix", tiny_data, tmp_path, "sharded", "--max_steps", "3")
    sharded[sharded.index("--dataroot") + 1] = str(shards)
    assert train_main(sharded) == 0
    loose_w, shard_w = weights(find_checkpoint(tmp_path / "loose")), weights(find_checkpoint(tmp_path / "sharded"))
    assert loose_w.keys() == shard_w.keys() and all(torch.equal(loose_w[k], shard_w[k]) for k in loose_w)


@pytest.mark.parametrize("model, view", [("pix2pix", "aligned"), ("cyclegan", "unaligned")])
def test_test_py_reads_the_shards_train_py_reads(model: str, view: str, tiny_data: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """test.py on a run trained from shards reads its test split from the same shards (its saved --dataroot), and
    writes what it writes from the folder: the same rows, images and scores (aligned pairs; unaligned targets by
    name, both CycleGAN directions)."""
    from gan_translate.cli import test_main
    from gan_translate.evaluate import inception

    monkeypatch.setenv(inception.NO_DOWNLOAD_ENV, "1")
    shards = tmp_path / "shards"
    assert make_shards([str(tiny_data / view), str(shards), "--per_shard", "3"]) == 0
    argv = tiny_run(model, tiny_data, tmp_path, "sharded", "--max_steps", "1")
    argv[argv.index("--dataroot") + 1] = str(shards)
    assert train_main(argv) == 0
    common = ["--name", "sharded", "--checkpoints_dir", str(tmp_path), "--metrics", "psnr,l1", "--eval"]
    assert test_main([*common, "--results_dir", str(tmp_path / "from_shards")]) == 0
    assert test_main([*common, "--results_dir", str(tmp_path / "from_folder"), "--dataroot",
                      str(tiny_data / view)]) == 0
    out = {k: next((tmp_path / k / "sharded").iterdir()) for k in ("from_shards", "from_folder")}  # one setting
    reports = {k: json.loads((v / "metrics.json").read_text()) for k, v in out.items()}
    assert reports["from_shards"]["dataroot"] == str(shards)
    directions = ["AtoB", "BtoA"] if model == "cyclegan" else ["AtoB"]
    assert list(reports["from_shards"]["results"]) == list(reports["from_folder"]["results"]) == directions
    for direction in directions:
        scores = [reports[k]["results"][direction] for k in out]
        assert scores[0]["images"] == scores[1]["images"] == 2 and scores[0]["paired_images"] == 2
        assert scores[0]["psnr"] == scores[1]["psnr"] and scores[0]["l1"] == scores[1]["l1"]
    names = sorted(p.name for p in (out["from_folder"] / "images").iterdir())
    assert names and names == sorted(p.name for p in (out["from_shards"] / "images").iterdir())
    for name in names:
        shard_png, folder_png = (out[k] / "images" / name for k in ("from_shards", "from_folder"))
        assert shard_png.read_bytes() == folder_png.read_bytes(), name

"""The scripts in datasets/: download (offline: a closed port, a local HTTP server), safe extraction, pairing."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import io
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

DATASETS = Path(__file__).resolve().parents[1] / "datasets"
SCRIPTS = ["download_pix2pix_dataset", "download_cyclegan_dataset"]
CLOSED_PORT_URL = "http://127.0.0.1:9/x.zip"  # the discard port: nothing listens there


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(DATASETS))  # the scripts import their sibling _download.py
    spec = importlib.util.spec_from_file_location(f"datasets_{name}", DATASETS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DATASETS / script), *args], capture_output=True, text=True, timeout=60, check=False
    )


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A local HTTP server over a folder: (folder, base URL). No network beyond this machine."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


# ---------------------------------------------------------------------------------------------------------------------
# download scripts
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_name_exits_2_with_one_line_listing_the_names(script: str, tmp_path: Path) -> None:
    result = _run(f"{script}.py", "nosuchset", "--dest", str(tmp_path / "d"))
    assert result.returncode == 2
    lines = _lines(result.stderr)
    assert len(lines) == 1 and "nosuchset" in lines[0] and "facades" in lines[0] and "maps" in lines[0]
    assert not (tmp_path / "d").exists()


def test_cityscapes_points_to_its_own_site(tmp_path: Path) -> None:
    result = _run("download_pix2pix_dataset.py", "cityscapes", "--dest", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "cityscapes-dataset.com" in result.stderr and len(_lines(result.stderr)) == 1
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_unreachable_host_exits_2_with_one_line_and_leaves_nothing(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = _load(script, monkeypatch)
    monkeypatch.setattr(module, "URL_TEMPLATE", CLOSED_PORT_URL)
    dest = tmp_path / "dest"
    dest.mkdir()
    assert module.main(["facades", "--dest", str(dest)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1
    assert err[0].startswith(f"error: could not download {CLOSED_PORT_URL}: ") and err[0].endswith("(are you online?)")
    assert list(dest.iterdir()) == []


def test_http_error_exits_2_and_removes_a_folder_it_made(
    serve: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, base = serve
    module = _load("download_cyclegan_dataset", monkeypatch)
    monkeypatch.setattr(module, "URL_TEMPLATE", base + "/missing/{name}.zip")
    assert module.main(["horse2zebra", "--dest", str(tmp_path / "new" / "dest")]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and "404" in err[0] and "horse2zebra.zip" in err[0]
    assert not (tmp_path / "new").exists()


def test_download_extracts_the_data_set_into_place(
    serve: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    www, base = serve
    _zip(www / "horse2zebra.zip", {"horse2zebra/trainA/1.jpg": b"a", "horse2zebra/testB/2.jpg": b"bb"})
    module = _load("download_cyclegan_dataset", monkeypatch)
    monkeypatch.setattr(module, "URL_TEMPLATE", base + "/{name}.zip")
    dest = tmp_path / "dest"
    assert module.main(["horse2zebra", "--dest", str(dest)]) == 0
    assert [p.name for p in dest.iterdir()] == ["horse2zebra"]  # no archive, no temporary folder
    assert (dest / "horse2zebra" / "trainA" / "1.jpg").read_bytes() == b"a"
    assert (dest / "horse2zebra" / "testB" / "2.jpg").read_bytes() == b"bb"
    # a second run keeps what is there instead of downloading again
    (www / "horse2zebra.zip").unlink()
    assert module.main(["horse2zebra", "--dest", str(dest)]) == 0
    assert (dest / "horse2zebra" / "trainA" / "1.jpg").is_file()


def test_pix2pix_tarball_is_extracted(serve: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    www, base = serve
    _tar(www / "facades.tar.gz", {"facades/train/1.jpg": b"x", "facades/val/1.jpg": b"y"})
    module = _load("download_pix2pix_dataset", monkeypatch)
    monkeypatch.setattr(module, "URL_TEMPLATE", base + "/{name}.tar.gz")
    assert module.main(["facades", "--dest", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "facades").iterdir()) == ["train", "val"]


# ---------------------------------------------------------------------------------------------------------------------
# safe extraction
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_zip, _tar], ids=["zip", "tar"])
@pytest.mark.parametrize("bad", ["../evil.txt", "data/../../evil.txt", "/abs/evil.txt"])
def test_extraction_refuses_members_outside_the_destination(
    make: object, bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    download = _load("_download", monkeypatch)
    archive = make(tmp_path / ("a.zip" if make is _zip else "a.tar.gz"), {"ok/1.txt": b"1", bad: b"evil"})
    dest = tmp_path / "out" / "inner"
    with pytest.raises(download.UnsafeArchiveError, match="evil"):
        download.safe_extract(archive, dest)
    assert not dest.exists()  # checked before anything is written
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_extraction_refuses_a_symlink_in_a_tar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    download = _load("_download", monkeypatch)
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tf:
        link = tarfile.TarInfo("data/escape")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc"
        tf.addfile(link)
    with pytest.raises(download.UnsafeArchiveError, match="escape"):
        download.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------------
# combine_A_and_B
# ---------------------------------------------------------------------------------------------------------------------

COLOURS = {"1": (255, 0, 0), "2": (0, 255, 0), "3": (0, 0, 255), "4": (255, 255, 0)}


def _solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _halves(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB")).astype(int)
    half = pixels.shape[1] // 2
    return pixels[:, :half], pixels[:, half:]


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "multiprocessing"])
def test_combine_pairs_files_by_name_and_resizes_b(tmp_path: Path, parallel: bool) -> None:
    fold_a, fold_b, fold_ab = tmp_path / "A", tmp_path / "B", tmp_path / "AB"
    for name in ("1", "2", "3"):
        _solid(fold_a / "train" / f"{name}.png", COLOURS[name], (24, 16))
        _solid(fold_b / "train" / f"{name}.png", COLOURS[str(5 - int(name))], (12, 8))  # B: other colour, smaller
    _solid(fold_a / "train" / "9.png", COLOURS["1"], (24, 16))  # no partner in B: skipped
    _solid(fold_a / "val" / "1.png", COLOURS["1"], (24, 16))  # no val/ in B: skipped
    extra = [] if parallel else ["--no_multiprocessing"]
    result = _run("combine_A_and_B.py", "--fold_A", str(fold_a), "--fold_B", str(fold_b), "--fold_AB", str(fold_ab),
                  *extra)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in fold_ab.iterdir()] == ["train"]
    assert sorted(p.name for p in (fold_ab / "train").iterdir()) == ["1.png", "2.png", "3.png"]
    for name in ("1", "2", "3"):
        assert _size(fold_ab / "train" / f"{name}.png") == (48, 16)
        left, right = _halves(fold_ab / "train" / f"{name}.png")
        assert (np.abs(left - COLOURS[name]) <= 1).all()
        assert (np.abs(right - COLOURS[str(5 - int(name))]) <= 2).all()


def test_combine_use_ab_suffixes_and_num_imgs(tmp_path: Path) -> None:
    fold_a, fold_b, fold_ab = tmp_path / "A", tmp_path / "B", tmp_path / "AB"
    for name in ("1", "2"):
        _solid(fold_a / "test" / f"{name}_A.png", COLOURS[name], (8, 8))
        _solid(fold_b / "test" / f"{name}_B.png", COLOURS["4"], (8, 8))
    result = _run("combine_A_and_B.py", "--fold_A", str(fold_a), "--fold_B", str(fold_b), "--fold_AB", str(fold_ab),
                  "--use_AB", "--num_imgs", "1", "--no_multiprocessing")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (fold_ab / "test").iterdir()] == ["1.png"]
    left, right = _halves(fold_ab / "test" / "1.png")
    assert (left == COLOURS["1"]).all() and (right == COLOURS["4"]).all()


def test_combine_missing_folder_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "A" / "train").mkdir(parents=True)
    result = _run("combine_A_and_B.py", "--fold_A", str(tmp_path / "A"), "--fold_B", str(tmp_path / "nowhere"),
                  "--fold_AB", str(tmp_path / "AB"))
    assert result.returncode == 2
    lines = _lines(result.stderr)
    assert len(lines) == 1 and "--fold_B" in lines[0] and "nowhere" in lines[0]
    assert not (tmp_path / "AB").exists()

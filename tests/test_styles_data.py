"""The "styles" dataset mode and the built-in style data: layout, classes, pairing, determinism, errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gan_translate.data import DATASET_MODES, create_dataloader, create_dataset
from gan_translate.data.styles import BUILTIN_STYLES, StylesDataset, ensure_builtin_styles, style_classes
from gan_translate.errors import UserError
from tests.conftest import SHARED_DATA


def _opt(root: Path, **changes) -> SimpleNamespace:
    base = dict(dataroot=str(root), phase="train", dataset_mode="styles", direction="AtoB", input_nc=3, output_nc=3,
                preprocess="resize_and_crop", load_size=36, crop_size=32, no_flip=False, serial_batches=False,
                max_dataset_size=0, seed=0, skip_bad_images=False)
    return SimpleNamespace(**{**base, **changes})


def _write(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture(scope="module")
def builtin_styles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_builtin_styles(tmp_path_factory.mktemp("styles"), size=32, n_content=5, per_class=3)


@pytest.fixture()
def mixed(tmp_path: Path) -> Path:
    """3 photos; style/: two single-image classes (files) and one folder class of two images."""
    for i in range(3):
        _write(tmp_path / "content" / f"p{i}.png", (10 * i, 0, 0))
    _write(tmp_path / "style" / "b_single.png", (0, 200, 0))
    _write(tmp_path / "style" / "a_single.jpg", (0, 0, 200))
    _write(tmp_path / "style" / "c_painter" / "x.png", (200, 200, 0))
    _write(tmp_path / "style" / "c_painter" / "sub" / "y.png", (200, 0, 200))
    return tmp_path


def test_mode_is_registered_and_the_trainer_finds_builtin_styles(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from gan_translate.data.builtin import DATA_ENV_VAR
    from gan_translate.engine.trainer import resolve_dataroot

    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))

    assert DATASET_MODES["styles"] is StylesDataset
    root = Path(resolve_dataroot(SimpleNamespace(dataroot="", dataset_mode="styles")))
    assert root.parent == tmp_path and (root / "content").is_dir()
    assert sorted(p.name for p in (root / "style").iterdir()) == sorted(BUILTIN_STYLES)


def test_classes_are_files_or_subfolders_sorted_by_name(mixed: Path) -> None:
    classes = style_classes(mixed / "style")
    assert [name for name, _ in classes] == ["a_single.jpg", "b_single.png", "c_painter"]
    assert [len(paths) for _, paths in classes] == [1, 1, 2]
    data = create_dataset(_opt(mixed))
    assert data.num_classes == 3 and data.style_labels == [0, 1, 2, 2]
    assert len(data) == 4  # the larger of 3 photos and 4 style images


def test_items_pair_photo_style_and_a_same_class_partner(mixed: Path) -> None:
    data = create_dataset(_opt(mixed))
    seen_labels = set()
    for epoch in range(3):
        for index in range(len(data)):
            item = data[(epoch, index)]
            assert {k: tuple(v.shape) for k, v in item.items() if torch.is_tensor(v)} == {
                "A": (3, 32, 32), "A2": (3, 32, 32), "style": (3, 32, 32), "style2": (3, 32, 32)}
            assert item["A_paths"] == data.content_paths[index % 3]
            assert item["A2_paths"] != item["A_paths"]  # another photo when there is one
            label = item["style_label"]
            seen_labels.add(label)
            assert data.style_labels[data.style_paths.index(item["style_paths"])] == label
            if label == 2:  # the two-image class gives the other image
                assert item["style2_paths"] != item["style_paths"] and "c_painter" in item["style2_paths"]
            else:  # a one-image class gives itself
                assert item["style2_paths"] == item["style_paths"]
            assert item["A"].min() >= -1 and item["A"].max() <= 1
    assert seen_labels == {0, 1, 2}


def test_items_are_a_function_of_seed_epoch_index(builtin_styles: Path) -> None:
    opt = _opt(builtin_styles, scale_jitter=0.1)
    first, again = create_dataset(opt), create_dataset(opt)
    a, b = first[(2, 3)], again[(2, 3)]
    for key in ("A", "A2", "style", "style2"):
        assert torch.equal(a[key], b[key])
    assert a["style_paths"] == b["style_paths"]
    other = [first[(e, 3)] for e in range(4)]
    assert len({torch.sum(o["style"]).item() for o in other}) > 1  # pairing/augmentation change with the epoch


def test_serial_batches_epoch_size_and_fallback_folders(tmp_path: Path) -> None:
    for i in range(2):
        _write(tmp_path / "trainA" / f"{i}.png", (i, 0, 0))
    for i in range(3):
        _write(tmp_path / "trainB" / f"{i}.png", (0, i, 0))
    data = create_dataset(_opt(tmp_path, serial_batches=True, epoch_size=7))
    assert len(data) == 7
    assert [Path(data[i]["style_paths"]).name for i in range(4)] == ["0.png", "1.png", "2.png", "0.png"]
    assert [Path(data[i]["A_paths"]).name for i in range(3)] == ["0.png", "1.png", "0.png"]


def test_dataloader_batches_labels(builtin_styles: Path) -> None:
    data = create_dataset(_opt(builtin_styles))
    batch = next(iter(create_dataloader(data, batch_size=3, shuffle=True, seed=0, num_workers=0)))
    assert batch["A"].shape == (3, 3, 32, 32) and batch["style_label"].dtype == torch.int64
    assert len(batch["style2_paths"]) == 3


@pytest.mark.parametrize("missing", ["content", "style"])
def test_missing_folder_is_a_user_error(mixed: Path, missing: str) -> None:
    import shutil

    shutil.rmtree(mixed / missing)
    with pytest.raises(UserError, match=f"no {missing} folder"):
        create_dataset(_opt(mixed))


def test_builtin_styles_are_deterministic_and_distinct(tmp_path: Path, builtin_styles: Path) -> None:
    again = ensure_builtin_styles(tmp_path, size=32, n_content=5, per_class=3)
    files = sorted(p.relative_to(builtin_styles) for p in builtin_styles.rglob("*.png"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert len(files) == 5 + 3 * len(BUILTIN_STYLES) + 1
    for rel in files:
        assert (builtin_styles / rel).read_bytes() == (again / rel).read_bytes()
    # the classes really differ: mean colours of the classes are far apart
    means = {name: np.mean([np.asarray(Image.open(p), np.float32).mean((0, 1))
                            for p in (builtin_styles / "style" / name).glob("*.png")], 0) for name in BUILTIN_STYLES}
    names = sorted(means)
    gaps = [np.abs(means[a] - means[b]).max() for i, a in enumerate(names) for b in names[i + 1:]]
    assert min(gaps) > 20
    assert (builtin_styles / "unseen_style" / "checker").is_dir()


@pytest.mark.skipif(not (SHARED_DATA / "styles").is_dir(), reason="../shared/data/styles is absent")
def test_shared_styles_each_image_a_class() -> None:
    data = create_dataset(_opt(SHARED_DATA / "styles"))
    assert len(data.content_paths) == 11 and data.num_classes == 14 and len(data) == 14
    item = data[(0, 0)]
    assert item["style2_paths"] == item["style_paths"]

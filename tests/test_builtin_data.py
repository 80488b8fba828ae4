"""The built-in synthetic facades: deterministic, complete, both views consistent, safe under concurrent writers."""

from __future__ import annotations

import functools
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_translate.data import builtin
from gan_translate.data.builtin import CLASSES, MARKER, ensure_builtin_dataset, render_pair
from gan_translate.errors import UserError

SMALL = {"size": 32, "n_train": 6, "n_test": 2}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


# ---------------------------------------------------------------------------------------------------------------------
# one pair
# ---------------------------------------------------------------------------------------------------------------------


def test_render_pair_gives_a_flat_label_map_and_a_textured_rendering() -> None:
    label, photo = render_pair(np.random.default_rng(0), 48)
    assert label.mode == photo.mode == "RGB"
    assert label.size == photo.size == (48, 48)
    a, b = np.asarray(label), np.asarray(photo)
    palette = {tuple(c) for c in CLASSES.values()}
    used = {tuple(c) for c in a.reshape(-1, 3)}
    assert used <= palette
    assert {CLASSES["background"], CLASSES["facade"], CLASSES["window"]} <= used
    assert len({tuple(c) for c in b.reshape(-1, 3)}) > 200  # textures and noise, not flat colours


def test_rendering_follows_the_layout() -> None:
    # windows are dark glass, the sky above the roof is bright: B's classes are told apart by their colours
    rng = np.random.default_rng(5)
    label, photo = render_pair(rng, 64)
    a, b = np.asarray(label), np.asarray(photo).astype(float).mean(-1)
    window = (a == CLASSES["window"]).all(-1)
    sky = (a == CLASSES["background"]).all(-1)
    sky[np.argmax(~sky.all(1)) :] = False  # only the rows above the first building row
    assert window.any() and sky.any()
    assert b[sky].mean() > b[window].mean() + 40


def test_render_pair_varies_with_the_generator_and_repeats_with_its_seed() -> None:
    a0, b0 = render_pair(np.random.default_rng(1), 32)
    a1, b1 = render_pair(np.random.default_rng(1), 32)
    a2, _ = render_pair(np.random.default_rng(2), 32)
    assert np.array_equal(np.asarray(a0), np.asarray(a1)) and np.array_equal(np.asarray(b0), np.asarray(b1))
    assert not np.array_equal(np.asarray(a0), np.asarray(a2))


def test_render_pair_leaves_global_random_state_alone() -> None:
    np.random.seed(7)
    expected = np.random.random()
    np.random.seed(7)
    render_pair(np.random.default_rng(0), 32)
    assert np.random.random() == expected


def test_too_small_size_is_a_user_error() -> None:
    with pytest.raises(UserError, match="size"):
        render_pair(np.random.default_rng(0), 8)


# ---------------------------------------------------------------------------------------------------------------------
# the folder on disk
# ---------------------------------------------------------------------------------------------------------------------


def test_dataset_has_both_views_with_the_right_counts_and_sizes(tmp_path: Path) -> None:
    folder = ensure_builtin_dataset(tmp_path, seed=0, **SMALL)
    assert folder == tmp_path / "builtin_facades_s0_32px_6_2"
    assert (folder / MARKER).is_file()
    for split, n in (("train", 6), ("test", 2)):
        aligned = sorted(p.name for p in (folder / "aligned" / split).iterdir())
        assert len(aligned) == n
        for domain in "AB":
            assert sorted(p.name for p in (folder / "unaligned" / f"{split}{domain}").iterdir()) == aligned
        assert _size(folder / "aligned" / split / aligned[0]) == (64, 32)
        assert _size(folder / "unaligned" / f"{split}A" / aligned[0]) == (32, 32)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folders left


def test_aligned_halves_equal_the_unaligned_files(tmp_path: Path) -> None:
    folder = ensure_builtin_dataset(tmp_path, seed=0, **SMALL)
    for split in ("train", "test"):
        for path in (folder / "aligned" / split).iterdir():
            both = _pixels(path)
            assert np.array_equal(both[:, :32], _pixels(folder / "unaligned" / f"{split}A" / path.name))
            assert np.array_equal(both[:, 32:], _pixels(folder / "unaligned" / f"{split}B" / path.name))


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    first = _files(ensure_builtin_dataset(tmp_path / "one", seed=1, **SMALL))
    again = _files(ensure_builtin_dataset(tmp_path / "two", seed=1, **SMALL))
    other = _files(ensure_builtin_dataset(tmp_path / "three", seed=2, **SMALL))
    assert first == again
    images = [k for k in first if k.endswith(".png")]
    assert len(images) == 3 * 8
    assert all(first[k] != other[k] for k in images)


def test_train_and_test_images_differ(tmp_path: Path) -> None:
    folder = ensure_builtin_dataset(tmp_path, seed=0, **SMALL)
    train = {p.read_bytes() for p in (folder / "unaligned" / "trainA").iterdir()}
    test = {p.read_bytes() for p in (folder / "unaligned" / "testA").iterdir()}
    assert len(train) == 6 and not train & test


def test_a_complete_folder_is_reused_without_drawing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = ensure_builtin_dataset(tmp_path, seed=0, **SMALL)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data set was drawn again")

    monkeypatch.setattr(builtin, "render_pair", refuse)
    assert ensure_builtin_dataset(tmp_path, seed=0, **SMALL) == folder


def test_an_incomplete_folder_is_rebuilt(tmp_path: Path) -> None:
    stale = tmp_path / "builtin_facades_s0_32px_6_2"
    (stale / "aligned" / "train").mkdir(parents=True)
    (stale / "aligned" / "train" / "0000.png").write_bytes(b"half written")
    folder = ensure_builtin_dataset(tmp_path, seed=0, **SMALL)
    assert folder == stale and (folder / MARKER).is_file()
    assert len(list((folder / "aligned" / "train").iterdir())) == 6
    assert _size(folder / "aligned" / "train" / "0000.png") == (64, 32)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_default_root_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_TRANSLATE_DATA", str(tmp_path / "cache"))
    folder = ensure_builtin_dataset(seed=4, **SMALL)
    assert folder.parent == tmp_path / "cache" and (folder / MARKER).is_file()


@pytest.mark.parametrize(
    ("kwargs", "word"), [({"size": 8}, "size"), ({"seed": -1}, "seed"), ({"n_train": 0}, "n_train")]
)
def test_bad_parameters_are_user_errors(tmp_path: Path, kwargs: dict[str, int], word: str) -> None:
    with pytest.raises(UserError, match=word):
        ensure_builtin_dataset(tmp_path, **{**SMALL, **kwargs})
    assert not any(tmp_path.iterdir())


def test_unwritable_root_is_a_user_error_naming_it(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(UserError, match="file"):
        ensure_builtin_dataset(not_a_folder, **SMALL)


# ---------------------------------------------------------------------------------------------------------------------
# concurrent writers (DDP ranks)
# ---------------------------------------------------------------------------------------------------------------------


def test_losing_the_rename_race_keeps_the_winners_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # another process publishes its copy while this one is still drawing: the rename then fails and theirs is used
    write = builtin._write_dataset

    def write_then_lose(folder: Path, **params: int) -> None:
        write(folder, **params)
        winner = tmp_path / builtin.builtin_dataset_name(**params)
        write(winner, **params)
        (winner / MARKER).write_text(builtin._marker_text(**params))
        (winner / "winner").write_text("theirs")

    monkeypatch.setattr(builtin, "_write_dataset", write_then_lose)
    folder = ensure_builtin_dataset(tmp_path, seed=0, **SMALL)
    assert (folder / "winner").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_two_processes_at_once_both_succeed_with_one_folder(tmp_path: Path) -> None:
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    make = functools.partial(ensure_builtin_dataset, seed=9, size=32, n_train=20, n_test=4)
    with multiprocessing.get_context(method).Pool(2) as pool:
        results = pool.map(make, [str(tmp_path), str(tmp_path)])
    assert results[0] == results[1] == tmp_path / "builtin_facades_s9_32px_20_4"
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]
    assert len(list((results[0] / "unaligned" / "trainB").iterdir())) == 20
    assert (results[0] / MARKER).is_file()

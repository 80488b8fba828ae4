"""Transforms, datasets, sampler and loader of the data pipeline, on tiny images made in tmp_path."""

from __future__ import annotations

import random
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gan_translate.data import (
    DATASET_MODES,
    AlignedDataset,
    EpochSampler,
    SingleDataset,
    UnalignedDataset,
    build_transform,
    create_dataloader,
    create_dataset,
    get_params,
    item_rng,
    resolve_test_scale,
)
from gan_translate.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RED, BLUE = (255, 0, 0), (0, 0, 255)


def make_opt(root: Path | str = ".", **overrides) -> SimpleNamespace:
    options = dict(
        dataroot=str(root), phase="train", dataset_mode="aligned", direction="AtoB", input_nc=3, output_nc=3,
        preprocess="resize_and_crop", load_size=24, crop_size=16, no_flip=False, serial_batches=False,
        max_dataset_size=0, seed=7, skip_bad_images=False,
    )
    options.update(overrides)
    return SimpleNamespace(**options)


def noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def write_pair(path: Path, left: Image.Image, right: Image.Image) -> Path:
    pair = Image.new("RGB", (left.width + right.width, left.height))
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    pair.save(path)
    return path


def colour_of(tensor: torch.Tensor) -> tuple[int, ...]:
    """The mean colour of a [-1, 1] tensor as 0..255 integers."""
    return tuple(int(round(v)) for v in ((tensor.mean(dim=(1, 2)) + 1) * 127.5).tolist())


def fill_folder(folder: Path, count: int, size: tuple[int, int] = (20, 20), start_seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        paths.append(folder / f"{i:03d}.png")
        noise(*size, seed=start_seed + i).save(paths[-1])
    return paths


# --- transforms ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preprocess", "size", "expected_hw"),
    [
        ("resize_and_crop", (40, 30), (16, 16)),
        ("crop", (40, 30), (16, 16)),
        ("scale_width", (48, 24), (16, 24)),  # height 12 would be below crop_size 16: kept at 16
        ("scale_width", (40, 60), (36, 24)),
        ("scale_width_and_crop", (40, 60), (16, 16)),
        ("none", (37, 23), (23, 37)),  # no rounding to a multiple of 4
    ],
)
def test_each_preprocess_mode_output_size(preprocess: str, size: tuple[int, int], expected_hw: tuple[int, int]) -> None:
    opt = make_opt(preprocess=preprocess)
    img = noise(*size, seed=1)
    params = get_params(opt, img.size, random.Random(0))
    out = build_transform(opt, params, grayscale=False)(img)
    assert out.shape == (3, *expected_hw)
    assert out.dtype == torch.float32 and -1 <= out.min() and out.max() <= 1


def test_crop_position_and_flip_are_applied_exactly() -> None:
    opt = make_opt(preprocess="crop", crop_size=4)
    img = noise(10, 8, seed=2)
    pixels = np.asarray(img).astype(np.float32) / 127.5 - 1
    out = build_transform(opt, {"crop_pos": (3, 2), "flip": False}, grayscale=False)(img)
    assert np.allclose(out.permute(1, 2, 0).numpy(), pixels[2:6, 3:7], atol=1e-6)
    flipped = build_transform(opt, {"crop_pos": (3, 2), "flip": True}, grayscale=False)(img)
    assert torch.equal(flipped, out.flip(-1))
    no_flip_opt = make_opt(preprocess="crop", crop_size=4, no_flip=True)
    no_flip = build_transform(no_flip_opt, {"crop_pos": (3, 2), "flip": True}, grayscale=False)(img)
    assert torch.equal(no_flip, out)


def test_get_params_depends_only_on_the_rng_passed_in() -> None:
    opt = make_opt(preprocess="crop")
    draws = [get_params(opt, (64, 48), random.Random(42)) for _ in range(2)]
    random.seed(0)
    torch.manual_seed(0)  # global state must not matter
    assert draws[0] == draws[1] == get_params(opt, (64, 48), random.Random(42))
    all_params = [get_params(opt, (64, 48), random.Random(s)) for s in range(40)]
    assert {p["flip"] for p in all_params} == {True, False}
    assert all(0 <= p["crop_pos"][0] <= 48 and 0 <= p["crop_pos"][1] <= 32 for p in all_params)
    assert not any(get_params(make_opt(no_flip=True), (64, 48), random.Random(s))["flip"] for s in range(20))


def test_small_image_is_upscaled_before_cropping() -> None:
    opt = make_opt(preprocess="crop", crop_size=16)
    img = noise(10, 8, seed=3)
    params = get_params(opt, img.size, random.Random(0))
    assert params["crop_pos"][1] == 0 and 0 <= params["crop_pos"][0] <= 4  # upscaled to 20x16
    assert build_transform(opt, params, grayscale=True)(img).shape == (1, 16, 16)


def test_unknown_preprocess_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"unknown preprocess 'zoom'; valid: resize_and_crop, crop"):
        get_params(make_opt(preprocess="zoom"), (8, 8), random.Random(0))


# --- aligned -------------------------------------------------------------------------------------------------------


def test_aligned_splits_halves_and_btoa_swaps(tmp_path: Path) -> None:
    write_pair(tmp_path / "train" / "0.png", Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE))
    item = AlignedDataset(make_opt(tmp_path))[0]
    assert set(item) == {"A", "B", "A_paths", "B_paths"}
    assert item["A"].shape == item["B"].shape == (3, 16, 16)
    assert colour_of(item["A"]) == RED and colour_of(item["B"]) == BLUE
    assert item["A_paths"] == item["B_paths"] == str(tmp_path / "train" / "0.png")
    swapped = AlignedDataset(make_opt(tmp_path, direction="BtoA"))[0]
    assert colour_of(swapped["A"]) == BLUE and colour_of(swapped["B"]) == RED


def test_aligned_applies_the_same_crop_and_flip_to_both_halves(tmp_path: Path) -> None:
    half = noise(24, 24, seed=4)  # identical halves: any difference in crop or flip would show
    write_pair(tmp_path / "train" / "0.png", half, half)
    dataset = AlignedDataset(make_opt(tmp_path, preprocess="crop", crop_size=12))
    items = [dataset[(epoch, 0)] for epoch in range(8)]
    assert all(torch.equal(item["A"], item["B"]) for item in items)
    assert len({item["A"].sum().item() for item in items}) > 1  # the crops really moved between epochs


def test_aligned_grayscale_sides_follow_input_and_output_nc(tmp_path: Path) -> None:
    write_pair(tmp_path / "train" / "0.png", Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE))
    item = AlignedDataset(make_opt(tmp_path, input_nc=1, output_nc=3, preprocess="none"))[0]
    assert item["A"].shape == (1, 16, 16) and item["B"].shape == (3, 16, 16)
    swapped = AlignedDataset(make_opt(tmp_path, input_nc=1, output_nc=3, preprocess="none", direction="BtoA"))[0]
    assert swapped["A"].shape == (1, 16, 16) and colour_of(swapped["B"]) == RED


@pytest.mark.parametrize("size, half", [((520, 264), (260, 264)), ((510, 256), (255, 256)),
                                        ((640, 240), (320, 240)), ((41, 30), (20, 30)), ((2, 5), (1, 5))])
def test_aligned_splits_any_aspect_ratio_at_half_the_width(tmp_path: Path, size: tuple[int, int],
                                                           half: tuple[int, int]) -> None:
    width, height = size
    left, right = Image.new("RGB", (width // 2, height), RED), Image.new("RGB", (width - width // 2, height), BLUE)
    write_pair(tmp_path / "train" / "0.png", left, right)  # an odd width: the last (blue) column is dropped
    native = AlignedDataset(make_opt(tmp_path, preprocess="none"))[0]
    assert native["A"].shape[1:] == native["B"].shape[1:] == (half[1], half[0])
    assert colour_of(native["A"]) == RED and colour_of(native["B"]) == BLUE
    square = AlignedDataset(make_opt(tmp_path))[0]  # resize_and_crop makes non-square halves square
    assert square["A"].shape == square["B"].shape == (3, 16, 16)


def test_aligned_refuses_only_a_file_too_narrow_to_split(tmp_path: Path) -> None:
    fill_folder(tmp_path / "train", 1, size=(1, 20))
    with pytest.raises(UserError, match=r"000\.png is 1x20: aligned images hold A and B side by side, so they need a "
                                        r"width of at least 2$"):
        AlignedDataset(make_opt(tmp_path))


def test_aligned_missing_phase_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^folder not found: .*train$"):
        AlignedDataset(make_opt(tmp_path))


# --- unaligned and single ------------------------------------------------------------------------------------------


def test_unaligned_length_and_serial_b_index(tmp_path: Path) -> None:
    a_paths = fill_folder(tmp_path / "trainA", 3)
    b_paths = fill_folder(tmp_path / "trainB", 5, start_seed=10)
    dataset = UnalignedDataset(make_opt(tmp_path, serial_batches=True))
    assert len(dataset) == 5
    for i in range(5):
        item = dataset[i]
        assert item["A_paths"] == str(a_paths[i % 3]) and item["B_paths"] == str(b_paths[i])
        assert item["A"].shape == item["B"].shape == (3, 16, 16)


def test_unaligned_random_b_index_is_drawn_from_the_item_seed(tmp_path: Path) -> None:
    fill_folder(tmp_path / "trainA", 2)
    fill_folder(tmp_path / "trainB", 6, start_seed=10)
    dataset = UnalignedDataset(make_opt(tmp_path))
    partners = [dataset[(epoch, 0)]["B_paths"] for epoch in range(12)]
    assert len(set(partners)) > 1  # not tied to i % len(B)
    assert partners == [dataset[(epoch, 0)]["B_paths"] for epoch in range(12)]  # but reproducible


def test_unaligned_btoa_swaps_folders(tmp_path: Path) -> None:
    fill_folder(tmp_path / "trainA", 2)
    fill_folder(tmp_path / "trainB", 3, start_seed=10)
    item = UnalignedDataset(make_opt(tmp_path, direction="BtoA", serial_batches=True))[0]
    assert Path(item["A_paths"]).parent.name == "trainB" and Path(item["B_paths"]).parent.name == "trainA"


def test_unaligned_missing_and_empty_folders(tmp_path: Path) -> None:
    fill_folder(tmp_path / "trainA", 2)
    with pytest.raises(UserError, match=r"^folder not found: .*trainB$"):
        UnalignedDataset(make_opt(tmp_path))
    (tmp_path / "trainB").mkdir()
    with pytest.raises(UserError, match=r"^no images in .*trainB"):
        UnalignedDataset(make_opt(tmp_path))


def test_single_dataset_and_max_dataset_size(tmp_path: Path) -> None:
    paths = fill_folder(tmp_path, 5)
    dataset = SingleDataset(make_opt(tmp_path, input_nc=1, max_dataset_size=3))
    assert len(dataset) == 3
    item = dataset[2]
    assert set(item) == {"A", "A_paths"} and item["A_paths"] == str(paths[2]) and item["A"].shape == (1, 16, 16)


def test_create_dataset_modes_and_errors(tmp_path: Path) -> None:
    fill_folder(tmp_path, 2)
    assert isinstance(create_dataset(make_opt(tmp_path, dataset_mode="single")), SingleDataset)
    assert {"aligned", "unaligned", "single"} <= set(DATASET_MODES)  # later modes (styles) register themselves
    with pytest.raises(UserError, match=r"unknown dataset_mode 'paired'; valid: aligned, single, styles, unaligned"):
        create_dataset(make_opt(tmp_path, dataset_mode="paired"))
    with pytest.raises(UserError, match=r"^dataroot not found: .*missing$"):
        create_dataset(make_opt(tmp_path / "missing", dataset_mode="single"))
    with pytest.raises(UserError, match=r"direction must be one of AtoB, BtoA, got 'AB'"):
        create_dataset(make_opt(tmp_path, dataset_mode="single", direction="AB"))


# --- bad images in datasets ----------------------------------------------------------------------------------------


def make_folder_with_bad_files(folder: Path) -> None:
    fill_folder(folder, 3)  # 000.png 001.png 002.png
    (folder / "001_empty.png").write_bytes(b"")
    (folder / "002_text.png").write_text("not an image")


def test_bad_image_stops_construction_naming_the_first_bad_file(tmp_path: Path) -> None:
    make_folder_with_bad_files(tmp_path)
    with pytest.raises(UserError, match=r"001_empty\.png: file is empty$"):
        SingleDataset(make_opt(tmp_path))


def test_skip_bad_images_drops_and_counts_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_folder_with_bad_files(tmp_path)
    dataset = SingleDataset(make_opt(tmp_path, skip_bad_images=True))
    assert len(dataset) == 3
    assert [(Path(p).name, reason) for p, reason in dataset.skipped] == [
        ("001_empty.png", "file is empty"),
        ("002_text.png", "not an image (unknown or corrupt format)"),
    ]
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("skipped 2 unreadable image(s) in ")


def test_skip_bad_images_with_nothing_left(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"no readable images in .* \(1 skipped"):
        SingleDataset(make_opt(tmp_path, skip_bad_images=True))


def truncate_copy(source: Image.Image, path: Path) -> None:
    source.save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_image_found_at_load_time(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fill_folder(tmp_path, 2, size=(32, 32))
    truncate_copy(noise(32, 32, seed=9), tmp_path / "00-cut.jpg")  # sorts first: index 0
    strict = SingleDataset(make_opt(tmp_path))
    assert len(strict) == 3  # the header scan cannot see the missing data
    with pytest.raises(UserError, match=r"00-cut\.jpg: file is truncated$"):
        strict[0]
    tolerant = SingleDataset(make_opt(tmp_path, skip_bad_images=True))
    item = tolerant[(3, 0)]
    assert Path(item["A_paths"]).name == "000.png"  # the next index stands in
    assert torch.equal(item["A"], tolerant[(3, 1)]["A"])  # ... with exactly that item's own augmentation
    assert [Path(p).name for p, _ in tolerant.skipped] == ["00-cut.jpg"]
    tolerant[(4, 0)]
    assert len(tolerant.skipped) == 1  # recorded once
    assert "skipping unreadable image" in capsys.readouterr().err


def test_small_images_warn_once_naming_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fill_folder(tmp_path, 3, size=(10, 12))
    dataset = SingleDataset(make_opt(tmp_path, preprocess="crop", crop_size=16))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 image(s)" in err[0] and "000.png (10x12)" in err[0] and "upscaled" in err[0]
    assert dataset[0]["A"].shape == (3, 16, 16)
    assert capsys.readouterr().err == ""


# --- determinism, sampler and loader -------------------------------------------------------------------------------


def test_sampler_order_is_a_function_of_seed_and_epoch() -> None:
    sampler = EpochSampler(20, shuffle=True, seed=3)
    sampler.set_epoch(5)
    first = list(sampler)
    assert {epoch for epoch, _ in first} == {5} and sorted(i for _, i in first) == list(range(20))
    again = EpochSampler(20, shuffle=True, seed=3)
    again.set_epoch(5)
    assert list(again) == first
    assert sampler.order(6) != sampler.order(5)
    assert EpochSampler(20, shuffle=True, seed=4).order(5) != sampler.order(5)
    assert EpochSampler(4, shuffle=False, seed=3).order(9) == [0, 1, 2, 3]
    assert len(sampler) == 20


def test_items_are_a_function_of_seed_epoch_and_index(tmp_path: Path) -> None:
    fill_folder(tmp_path, 2, size=(32, 32))
    dataset = SingleDataset(make_opt(tmp_path, preprocess="crop", crop_size=12))
    random.seed(1)
    torch.manual_seed(1)
    np.random.seed(1)
    reference = dataset[(2, 1)]["A"]
    random.seed(2)
    torch.manual_seed(2)  # global RNG state changes nothing
    assert torch.equal(SingleDataset(make_opt(tmp_path, preprocess="crop", crop_size=12))[(2, 1)]["A"], reference)
    assert torch.equal(dataset[1]["A"], dataset[(0, 1)]["A"])  # a bare index means epoch 0
    assert any(not torch.equal(dataset[(e, 1)]["A"], reference) for e in range(3, 8))
    assert item_rng(1, 2, 3).random() == item_rng(1, 2, 3).random() != item_rng(1, 3, 2).random()


def test_dataloader_batches_and_epoch_control(tmp_path: Path) -> None:
    fill_folder(tmp_path / "trainA", 5)
    fill_folder(tmp_path / "trainB", 3, start_seed=10)
    dataset = UnalignedDataset(make_opt(tmp_path, input_nc=1))
    loader = create_dataloader(dataset, batch_size=2, shuffle=True, seed=11, num_workers=0)
    assert isinstance(loader.sampler, EpochSampler)
    loader.sampler.set_epoch(1)
    batches = list(loader)
    assert [b["A"].shape[0] for b in batches] == [2, 2, 1]
    assert batches[0]["A"].shape == (2, 1, 16, 16) and batches[0]["B"].shape == (2, 3, 16, 16)
    assert isinstance(batches[0]["A_paths"], list) and len(batches[0]["A_paths"]) == 2
    loader.sampler.set_epoch(1)
    assert all(torch.equal(x["A"], y["A"]) for x, y in zip(batches, loader))
    dropped = create_dataloader(dataset, batch_size=2, shuffle=False, seed=11, num_workers=0, drop_last=True)
    assert len(list(dropped)) == 2
    with pytest.raises(UserError, match="fewer than one batch of 8"):
        create_dataloader(dataset, batch_size=8, shuffle=True, seed=11, num_workers=0, drop_last=True)


def test_dataloader_with_a_worker_matches_the_main_process(tmp_path: Path) -> None:
    fill_folder(tmp_path, 4)
    dataset = SingleDataset(make_opt(tmp_path))
    in_process = create_dataloader(dataset, batch_size=2, shuffle=True, seed=5, num_workers=0)
    with_worker = create_dataloader(dataset, batch_size=2, shuffle=True, seed=5, num_workers=1)
    assert with_worker.persistent_workers
    assert all(torch.equal(x["A"], y["A"]) for x, y in zip(in_process, with_worker))


# --- real data -----------------------------------------------------------------------------------------------------


def test_real_facades_pairs() -> None:
    root = SHARED_DATA / "facades"
    if not (root / "test").is_dir():
        pytest.skip("../shared/data is not present")
    opt = make_opt(root, phase="test", load_size=72, crop_size=64, max_dataset_size=3)
    dataset = create_dataset(opt)
    assert len(dataset) == 3
    item = dataset[(0, 0)]
    assert item["A"].shape == item["B"].shape == (3, 64, 64)
    assert Path(item["A_paths"]).name == "1.jpg"
    swapped = create_dataset(make_opt(root, phase="test", load_size=72, crop_size=64, max_dataset_size=3,
                                      direction="BtoA"))[(0, 0)]
    assert torch.equal(swapped["A"], item["B"]) and torch.equal(swapped["B"], item["A"])
    assert not torch.allclose(item["A"], item["B"], atol=0.1)  # the photo and the label map differ


# --- the test-time scale -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trained, asked, expected, size", [
    (("resize_and_crop", 286, 256), (None, 0, 0), ("scale_shortside", 286), (429, 286)),
    (("scale_width_and_crop", 128, 64), ("", 0, 0), ("scale_width", 128), (128, 85)),
    (("crop", 286, 256), (None, 0, 0), ("none", 286), (600, 400)),
    (("crop", 286, 256), (None, 100, 0), ("scale_shortside", 100), (150, 100)),
    (("resize_and_crop", 286, 256), ("none", 0, 0), ("none", 286), (600, 400)),
    (("resize_and_crop", 286, 256), ("resize_and_crop", 64, 32), ("resize_and_crop", 64), (32, 32)),
])
def test_test_scale_follows_the_training_resize_with_the_aspect_ratio_kept(trained, asked, expected, size) -> None:
    mode, load, crop = trained
    scale = resolve_test_scale(make_opt(preprocess=mode, load_size=load, crop_size=crop), *asked)
    assert (scale.preprocess, scale.load_size) == expected
    assert scale.size_for((600, 400)) == size
    sample = build_transform(make_opt(**scale.as_options(), no_flip=True), {"crop_pos": (0, 0), "flip": False},
                             grayscale=False)(noise(600, 400, seed=0))
    assert tuple(sample.shape[1:]) == (size[1], size[0])


@pytest.mark.parametrize("netG_stride, load, expected", [
    (256, 286, 256),  # unet_256 at the paper's 286: padding to 512 would be 3/4 reflection
    (128, 286, 256),  # unet_128: 384 would pad by a third
    (4, 286, 286),    # ResNets pad 286 -> 288: kept
    (256, 400, 512),  # nearest, also upwards
    (1, 37, 37),
])
def test_training_scale_snaps_to_a_large_stride(netG_stride: int, load: int, expected: int) -> None:
    scale = resolve_test_scale(make_opt(preprocess="resize_and_crop", load_size=load, crop_size=32),
                               stride=netG_stride)
    assert (scale.preprocess, scale.load_size) == ("scale_shortside", expected)
    assert (f"{load} rounded to the nearest multiple" in scale.description) == (expected != load)
    # a size the user gives is kept as given
    assert resolve_test_scale(make_opt(load_size=load, crop_size=32), None, load, stride=netG_stride).load_size == load


def test_reference_test_sizes_resize_to_a_square_as_its_test_does() -> None:
    """The reference's test sets load_size = crop_size: ``--load_size N --crop_size N`` (or ``--crop_size N``) resizes
    every input to N x N, aspect ratio not kept."""
    for asked in ((None, 256, 256), (None, 0, 256)):
        scale = resolve_test_scale(make_opt(load_size=286, crop_size=256), *asked, stride=256)
        assert (scale.preprocess, scale.load_size, scale.crop_size) == ("resize_and_crop", 256, 256)
        assert scale.size_for((600, 400)) == (256, 256) and "as the reference test.py does" in scale.description


@pytest.mark.parametrize("asked, message", [
    ((None, 8, 16), "option --crop_size: 16 is larger than --load_size 8"),
    (("none", 64, 0), "option --load_size: --preprocess none does not use it (native resolution)"),
    (("crop", 64, 0), "option --load_size: --preprocess crop does not use it"),
    (("resize_and_crop", 32, 64), "option --crop_size: 64 is larger than --load_size 32"),
])
def test_test_scale_refuses_sizes_it_would_ignore(asked, message) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        resolve_test_scale(make_opt(), *asked)

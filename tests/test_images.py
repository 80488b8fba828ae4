"""Image I/O: listing, safe decoding of awkward and broken files, tensor conversion, atomic saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from gan_translate.data.images import (
    ImageReadError,
    list_images,
    load_image,
    pil_to_tensor,
    probe_image,
    save_image,
    tensor_to_pil,
)
from gan_translate.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def header(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and size as stored in the file (before any of load_image's conversions)."""
    with Image.open(path) as img:
        return img.mode, img.size


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def truncated_jpeg(path: Path) -> Path:
    """A JPEG whose header is intact but whose entropy-coded data stops half way."""
    full = path.with_name("full_" + path.name)
    noise_image(64, 64).save(full, quality=95)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# --- listing -------------------------------------------------------------------------------------------------------


def test_list_images_is_recursive_sorted_and_filters_extensions(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ["b.PNG", "a.jpg", "sub/c.webp", "notes.txt", "sub/d.JPEG"]:
        (tmp_path / name).write_bytes(b"x")
    found = [Path(p).relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.jpg", "b.PNG", "sub/c.webp", "sub/d.JPEG"]


def test_list_images_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^folder not found: .*nowhere$"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"^no images in " + str(tmp_path)):
        list_images(tmp_path)


# --- broken files --------------------------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(b"")
    with pytest.raises(UserError, match=r"^cannot read image .*x\.png: file is empty$"):
        load_image(path, 3)
    with pytest.raises(UserError, match="file is empty"):
        probe_image(path)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "fake.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageReadError, match=r"^cannot read image .*fake\.png: not an image") as info:
        load_image(path, 3)
    assert info.value.path == str(path)
    assert "\n" not in str(info.value)


def test_truncated_jpeg_is_detected_even_if_pillow_was_set_tolerant(tmp_path: Path) -> None:
    path = truncated_jpeg(tmp_path / "cut.jpg")
    assert probe_image(path) == (64, 64)  # the header alone looks fine
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as some other library might do process-wide
    try:
        with pytest.raises(UserError, match=r"^cannot read image .*cut\.jpg: file is truncated$"):
            load_image(path, 3)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is put back
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"gone\.png: file not found"):
        load_image(tmp_path / "gone.png", 3)


# --- awkward pixel formats -----------------------------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=100)  # pure red in CMYK
    img = load_image(path, 3)
    assert img.mode == "RGB" and img.size == (16, 16)
    red, green, blue = img.getpixel((8, 8))
    assert red > 240 and green < 15 and blue < 15


def test_rgba_png_is_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    rgba = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (255, 0, 0, 255))
    rgba.putpixel((2, 0), (0, 0, 0, 128))
    rgba.save(path)
    img = load_image(path, 3)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not black
    assert img.getpixel((1, 0)) == (255, 0, 0)
    assert all(120 <= v <= 135 for v in img.getpixel((2, 0)))  # half-transparent black over white -> mid grey


def test_la_png_is_composited_on_white_in_grayscale(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.new("LA", (3, 3), (0, 0)).save(path)
    img = load_image(path, 1)
    assert img.mode == "L" and img.getpixel((1, 1)) == 255


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    img = Image.new("P", (4, 4), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.save(path, transparency=1)  # palette entry 1 (green) is fully transparent
    loaded = load_image(path, 3)
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 0, 0)
    assert loaded.getpixel((1, 1)) == (255, 255, 255)


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    assert header(path)[0].startswith("I")
    gray = load_image(path, 1)
    assert gray.mode == "L"
    assert np.asarray(gray).ravel().tolist() == [0, 64, 128, 255]
    rgb = load_image(path, 3)
    assert rgb.mode == "RGB" and rgb.getpixel((2, 0)) == (128, 128, 128)


def test_float_image_in_unit_range_is_scaled(tmp_path: Path) -> None:
    path = tmp_path / "float.tiff"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(path)
    assert np.asarray(load_image(path, 1)).ravel().tolist() == [0, 128, 255]


def test_exif_rotated_jpeg_is_upright(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.new("RGB", (40, 20), (0, 0, 255)).save(path, exif=exif)
    assert header(path)[1] == (40, 20)
    assert load_image(path, 3).size == (20, 40)
    assert probe_image(path) == (20, 40)  # the header scan reports the displayed size too


def test_rgb_to_grayscale_and_bad_channel_count(tmp_path: Path) -> None:
    path = tmp_path / "rgb.png"
    noise_image(8, 6).save(path)
    gray = load_image(path, 1)
    assert gray.mode == "L" and gray.size == (8, 6)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        load_image(path, 2)


# --- tensors and saving --------------------------------------------------------------------------------------------


def test_pil_tensor_round_trip_is_exact() -> None:
    img = noise_image(7, 5)
    tensor = pil_to_tensor(img)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 5, 7)
    assert tensor.min() >= -1 and tensor.max() <= 1
    assert np.array_equal(np.asarray(tensor_to_pil(tensor)), np.asarray(img))


def test_tensor_to_pil_clips_out_of_range_values() -> None:
    img = tensor_to_pil(torch.tensor([[[-3.0, 0.0, 3.0]]]))
    assert img.mode == "L" and np.asarray(img).ravel().tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match="1 or 3 channels"):
        tensor_to_pil(torch.zeros(2, 4, 4))


def test_save_image_single_channel_round_trip(tmp_path: Path) -> None:
    tensor = torch.linspace(-1, 1, 48).reshape(1, 6, 8)
    path = tmp_path / "out" / "gray.png"
    save_image(tensor, path)
    assert header(path)[0] == "L"
    back = pil_to_tensor(load_image(path, 1))
    assert back.shape == (1, 6, 8)
    assert torch.allclose(back, tensor, atol=1 / 127.5)
    assert sorted(p.name for p in path.parent.iterdir()) == ["gray.png"]  # no temporary file left behind


def test_save_image_jpeg_rgb_and_unknown_extension(tmp_path: Path) -> None:
    tensor = pil_to_tensor(Image.new("RGB", (8, 8), (200, 30, 60)))
    save_image(tensor, tmp_path / "c.jpg")
    with Image.open(tmp_path / "c.jpg") as img:
        assert img.format == "JPEG" and img.mode == "RGB"
        assert all(abs(a - b) <= 6 for a, b in zip(img.getpixel((4, 4)), (200, 30, 60)))
    with pytest.raises(UserError, match=r"unknown extension '\.xyz'"):
        save_image(tensor, tmp_path / "c.xyz")


def test_save_image_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    save_image(torch.full((3, 4, 4), -1.0), path)
    save_image(torch.full((3, 4, 4), 1.0), path)
    assert load_image(path, 3).getpixel((0, 0)) == (255, 255, 255)


def test_real_facades_file_loads() -> None:
    path = SHARED_DATA / "facades" / "test" / "1.jpg"
    if not path.is_file():
        pytest.skip("../shared/data is not present")
    img = load_image(path, 3)
    assert img.size == (512, 256) and img.mode == "RGB"
    assert probe_image(path) == (512, 256)

"""Safe image I/O: listing, decoding into plain "RGB"/"L" images, tensor conversion and atomic saving.

Every decode failure a user can cause (an empty file, a truncated JPEG, a text file named ``.png``) becomes a one-line
``UserError`` naming the file, so a bad image stops a run with a clear message instead of a traceback from deep inside a
DataLoader worker. Odd pixel formats (CMYK, alpha, palettes with transparency, 16-bit and float images) are normalised
here so the rest of the pipeline only ever sees 8-bit "RGB" or "L".
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from gan_translate.errors import UserError
from gan_translate.file_modes import share_like_umask

IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")

_CHANNEL_MODES = {1: "L", 3: "RGB"}
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # orientations that swap width and height
_WHITE = {"RGB": (255, 255, 255), "L": 255}


class ImageReadError(UserError):
    """An image file that cannot be read; ``path`` and ``reason`` let a dataset skip it and report why."""

    def __init__(self, path: str | os.PathLike, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"cannot read image {path}: {reason}")
        self.path = str(path)
        self.reason = reason


# --- listing -------------------------------------------------------------------------------------------------------


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name ends in one of ``IMG_EXTENSIONS`` (any case)."""
    return str(path).lower().endswith(IMG_EXTENSIONS)


def list_images(folder: str | os.PathLike) -> list[str]:
    """All image files under ``folder`` (recursive, following links), as paths in plain sorted order.

    Raises:
        UserError: the folder does not exist, or holds no image file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"folder not found: {root}")
    paths = [
        os.path.join(dirpath, name)
        for dirpath, _, names in os.walk(root, followlinks=True)
        for name in names
        if is_image_file(name)
    ]
    if not paths:
        raise UserError(f"no images in {root} (looked for {', '.join(IMG_EXTENSIONS)})")
    return sorted(paths)


# --- opening and decoding ------------------------------------------------------------------------------------------


def _fail(path: str | os.PathLike, reason: str) -> ImageReadError:
    return ImageReadError(path, reason)


def _open(path: str | os.PathLike, data: bytes | None = None) -> Image.Image:
    """Open the header only (cheap); map every failure to a ``UserError`` naming the file.

    ``data``: the file's bytes when they do not live in a file of their own (a member of a tar shard); ``path`` then
    only names the image in messages.
    """
    try:
        if data is not None:
            if not data:
                raise _fail(path, "file is empty")
            return Image.open(io.BytesIO(data))
        if os.path.getsize(path) == 0:
            raise _fail(path, "file is empty")
        return Image.open(path)
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except PermissionError:
        raise _fail(path, "permission denied") from None
    except UnidentifiedImageError:
        raise _fail(path, "not an image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as err:
        raise _fail(path, f"too large ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise _fail(path, f"corrupt header ({err})") from None


def probe_image(path: str | os.PathLike, data: bytes | None = None) -> tuple[int, int]:
    """The (width, height) an image will have once loaded, read from its header without decoding the pixels.

    The EXIF orientation is taken into account so the size matches what ``load_image`` returns. ``data``: the image's
    bytes, when it is not a file of its own (``path`` then names it in messages).

    Raises:
        ImageReadError: (a ``UserError``) the file is empty, missing or not an image.
    """
    with _open(path, data) as img:
        width, height = img.size
        try:
            orientation = img.getexif().get(_EXIF_ORIENTATION)
        except (OSError, SyntaxError, ValueError, KeyError, TypeError):
            orientation = None  # an unreadable EXIF block only loses the rotation, as in load_image
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return height, width
    return width, height


def _decode(path: str | os.PathLike, img: Image.Image) -> None:
    """Force a full decode so truncated or corrupt pixel data is found now, not as grey pixels in a batch."""
    # Another library may have switched truncation tolerance on process-wide; a silently half-grey image is worse than
    # an error, so decode with it off and put the caller's setting back afterwards.
    tolerant = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        message = str(err)
        if "truncated" in message or isinstance(err, EOFError):
            raise _fail(path, "file is truncated") from None
        raise _fail(path, f"corrupt image data ({message})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = tolerant


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite an image with transparency onto white (transparent areas of a photo are background, not black)."""
    base = "L" if img.mode in ("1", "L", "LA", "La") else "RGB"
    rgba = img.convert(base + "A")
    background = Image.new(base, img.size, _WHITE[base])
    background.paste(rgba.convert(base), mask=rgba.getchannel("A"))
    return background


def _to_uint8_gray(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _from_16bit(img: Image.Image) -> Image.Image:
    """Scale a 16-bit image into 8 bits (65535 -> 255) instead of clipping it to white, as ``convert("L")`` would."""
    return _to_uint8_gray(np.asarray(img, dtype=np.float64) / 257.0)


def _from_int32(img: Image.Image) -> Image.Image:
    """Scale a 32-bit integer image: 16-bit data (older Pillow opens 16-bit PNGs as "I") by 1/257, else min-max."""
    values = np.asarray(img, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 65535:
        return _to_uint8_gray(values / 257.0)
    return _to_uint8_gray((values - low) / max(high - low, 1e-12) * 255.0)


def _from_float(img: Image.Image) -> Image.Image:
    """Scale a float image: [0, 1] data to [0, 255], [0, 255] data as is, any other range min-max."""
    values = np.nan_to_num(np.asarray(img, dtype=np.float64))
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 1:
        return _to_uint8_gray(values * 255.0)
    if low >= 0 and high <= 255:
        return _to_uint8_gray(values)
    return _to_uint8_gray((values - low) / max(high - low, 1e-12) * 255.0)


_HIGH_DEPTH: dict[str, Callable[[Image.Image], Image.Image]] = {
    "I;16": _from_16bit,
    "I;16L": _from_16bit,
    "I;16B": _from_16bit,
    "I;16N": _from_16bit,
    "I": _from_int32,
    "F": _from_float,
}


def _normalise_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert any decoded Pillow image to 8-bit ``mode`` ("RGB" or "L")."""
    if img.mode in _HIGH_DEPTH:
        img = _HIGH_DEPTH[img.mode](img)
    has_alpha = img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info
    if has_alpha:
        img = _flatten_alpha(img)
    return img if img.mode == mode else img.convert(mode)


def load_image(path: str | os.PathLike, channels: int, data: bytes | None = None) -> Image.Image:
    """Load an image fully decoded, upright (EXIF orientation applied), as "RGB" (channels 3) or "L" (channels 1).

    CMYK, alpha (composited on white), palettes with transparency, 16-bit, 32-bit integer and float images are all
    converted to 8 bits per channel. ``data``: the image's bytes, when it is not a file of its own (a member of a tar
    shard; ``path`` then names it in messages).

    Raises:
        ImageReadError: (a ``UserError``) the file is empty, truncated, corrupt or not an image; the message names it.
    """
    if channels not in _CHANNEL_MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    with _open(path, data) as img:
        _decode(path, img)
        try:
            upright = ImageOps.exif_transpose(img)
        except (OSError, SyntaxError, ValueError, KeyError, TypeError):
            upright = img.copy()  # a broken EXIF block should cost the rotation, not the image
        try:
            result = _normalise_mode(upright, _CHANNEL_MODES[channels])
        except (OSError, ValueError) as err:
            raise _fail(path, f"unsupported pixel format {img.mode} ({err})") from None
        result.load()
    return result


# --- tensors -------------------------------------------------------------------------------------------------------


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """An "L" or "RGB" image (other modes are converted to RGB) as a float32 CHW tensor in [-1, 1]."""
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32)
    return tensor / 127.5 - 1.0


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    """A CHW (C = 1 or 3) or HW tensor in [-1, 1] as an 8-bit "L" or "RGB" image (values outside are clipped)."""
    t = tensor.detach().to("cpu", torch.float32)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or t.shape[0] not in _CHANNEL_MODES:
        raise ValueError(f"expected a CHW tensor with 1 or 3 channels, got shape {tuple(tensor.shape)}")
    t = torch.nan_to_num(t).clamp(-1.0, 1.0)
    array = ((t + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0])
    return Image.fromarray(array)


# --- saving --------------------------------------------------------------------------------------------------------


def _format_for(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"cannot save image {path}: unknown extension {path.suffix!r} (use .png or .jpg)")
    return fmt


def save_image(tensor: torch.Tensor, path: str | os.PathLike, png_level: int = 6) -> None:
    """Write a CHW tensor in [-1, 1] as PNG/JPEG/... (chosen by extension); 1-channel tensors become "L" images.
    ``png_level``: zlib level of PNGs (lossless at any level; 1 encodes several times faster, files ~20% larger).

    The file appears atomically: it is written under a temporary name in the same folder and then renamed, so a crash
    never leaves a half-written image where a finished one is expected.
    """
    target = Path(path)
    fmt = _format_for(target)
    img = tensor_to_pil(tensor)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            extra = {"quality": 95} if fmt == "JPEG" else {"compress_level": png_level} if fmt == "PNG" else {}
            img.save(stream, format=fmt, **extra)
        share_like_umask(temp_name)  # mkstemp made it private
        os.replace(temp_name, target)
    except BaseException:
        if os.path.exists(temp_name):
            os.remove(temp_name)
        raise

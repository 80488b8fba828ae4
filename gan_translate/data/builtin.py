"""Built-in synthetic facades: a paired data set the package draws itself, so training works with no download.

Domain A is a label map in the colours of the CMP Facade Database (Tylecek and Sara, 2013, the set pix2pix uses):
a wall, a grid of windows with sills, heads, shutters and balconies, moulding bands, a door and shop fronts. Domain B
is a cheap "rendering" of the same layout: sky above the roof line, brick or stucco wall, glass with gradients and
reflections, wooden doors, lit shop signs, shading and a colour cast per image. Learning A -> B is a real but easy task:
a tiny pix2pix or CycleGAN visibly learns it in a few hundred steps at 64 px.

Everything is drawn from an explicit ``numpy.random.Generator``: no global random state is touched, and one seed gives
byte-identical files on every machine.

Layout on disk (``ensure_builtin_dataset``)::

    builtin_facades_s0_64px_200_20/
        aligned/train/0000.png ...      A|B side by side (pix2pix format), width 2*size
        aligned/test/0000.png ...
        unaligned/trainA, trainB, testA, testB/0000.png ...   the same images split per domain, same file names
        DONE                            marker with the parameters; present only in a complete folder
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gan_translate.errors import UserError

BUILTIN_NAME = "builtin"  # `--dataroot builtin` selects this data set
DATA_ENV_VAR = "GAN_TRANSLATE_DATA"  # overrides the default cache folder
GENERATOR_VERSION = 1  # bump when the drawing changes, so stale caches are rebuilt
MIN_SIZE = 16  # below this a window is smaller than a pixel
MARKER = "DONE"

Box = tuple[int, int, int, int]  # x0, y0, x1, y1, half-open, in pixels

# ---------------------------------------------------------------------------------------------------------------------
# label palette: the CMP facade classes with the colours of the pix2pix "facades" label maps
# ---------------------------------------------------------------------------------------------------------------------

CLASSES: dict[str, tuple[int, int, int]] = {
    "background": (0, 6, 217),
    "facade": (13, 61, 251),
    "window": (0, 117, 255),
    "door": (0, 201, 255),
    "cornice": (29, 255, 221),
    "sill": (104, 248, 152),
    "balcony": (184, 255, 56),
    "blind": (238, 237, 40),
    "deco": (255, 146, 4),
    "molding": (255, 68, 1),
    "pillar": (246, 1, 0),
    "shop": (165, 0, 0),
}
CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}
_PALETTE = np.array(list(CLASSES.values()), dtype=np.uint8)

# ---------------------------------------------------------------------------------------------------------------------
# layout: a list of labelled rectangles, drawn in order (later ones cover earlier ones)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _Layout:
    size: int
    roof: int  # first row of the building; sky above it
    elements: list[tuple[str, Box]]


class _Builder:
    """Collects rectangles given in float pixels, rounded and clipped to the image."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.elements: list[tuple[str, Box]] = []

    def add(self, cls: str, x0: float, y0: float, x1: float, y1: float) -> None:
        s = self.size
        box = (max(0, round(x0)), max(0, round(y0)), min(s, round(x1)), min(s, round(y1)))
        if box[2] > box[0] and box[3] > box[1]:
            self.elements.append((cls, box))


def _make_layout(rng: np.random.Generator, s: int) -> _Layout:
    """Draws one random facade layout: storeys of windows over a ground floor with a door and maybe shops."""
    b = _Builder(s)
    b.add("background", 0, 0, s, s)
    roof = s * rng.uniform(0.05, 0.2)
    # a neighbouring gap on either side shows background, as in many CMP photos
    left = s * rng.uniform(0.03, 0.12) if rng.random() < 0.4 else 0.0
    right = s - (s * rng.uniform(0.03, 0.12) if rng.random() < 0.4 else 0.0)
    b.add("facade", left, roof, right, s)
    width = right - left
    ground = s - s * rng.uniform(0.17, 0.26)  # top of the ground floor

    top = roof
    if rng.random() < 0.75:  # cornice band along the roof line
        h = max(1.5, s * rng.uniform(0.025, 0.055))
        b.add("molding", left, roof, right, roof + h)
        top = roof + h
    bottom = ground
    if rng.random() < 0.6:  # band between ground floor and storeys
        h = max(1.5, s * rng.uniform(0.02, 0.04))
        b.add("molding", left, ground - h, right, ground)
        bottom = ground - h

    # window grid, its pitch no smaller than ~6 px so every window stays visible
    n_cols = int(rng.integers(2, 7))
    n_cols = max(1, min(n_cols, int(width // 6)))
    n_rows = int(rng.integers(2, 6))
    n_rows = max(1, min(n_rows, int((bottom - top) // 6)))
    pitch_x, pitch_y = width / n_cols, (bottom - top) / n_rows

    if rng.random() < 0.2:  # pilasters between the columns
        pw = max(1.0, pitch_x * rng.uniform(0.08, 0.14))
        for c in range(1, n_cols):
            x = left + c * pitch_x
            b.add("pillar", x - pw / 2, top, x + pw / 2, bottom)

    win_w = max(2.0, pitch_x * rng.uniform(0.35, 0.6))
    win_h = max(2.0, pitch_y * rng.uniform(0.5, 0.72))
    has_head, has_sill = rng.random() < 0.4, rng.random() < 0.65
    has_blind, has_deco = rng.random() < 0.25, rng.random() < 0.2
    balcony_rows = {r for r in range(n_rows) if rng.random() < 0.35} if rng.random() < 0.45 else set()
    balcony_span = rng.random() < 0.4  # one long balcony per storey instead of one per window
    for r in range(n_rows):
        y0 = top + r * pitch_y + (pitch_y - win_h) * 0.6  # windows sit a bit low, leaving room for the head
        y1 = y0 + win_h
        for c in range(n_cols):
            cx = left + (c + 0.5) * pitch_x
            x0, x1 = cx - win_w / 2, cx + win_w / 2
            if has_blind:
                bw = max(1.0, win_w * 0.35)
                b.add("blind", x0 - bw, y0, x0, y1)
                b.add("blind", x1, y0, x1 + bw, y1)
            b.add("window", x0, y0, x1, y1)
            if has_head:
                b.add("cornice", x0 - 0.5, y0 - max(1.0, win_h * 0.14), x1 + 0.5, y0)
            if has_sill:
                b.add("sill", x0 - 0.7, y1, x1 + 0.7, y1 + max(1.0, win_h * 0.1))
            if has_deco and r == 0:
                d = max(1.0, s / 32)
                b.add("deco", cx - d, top + 0.3, cx + d, top + 0.3 + 2 * d)
            if r in balcony_rows and not balcony_span:
                b.add("balcony", x0 - win_w * 0.2, y1 - win_h * 0.35, x1 + win_w * 0.2, y1 + 1)
        if r in balcony_rows and balcony_span:
            b.add("balcony", left + pitch_x * 0.15, y1 - win_h * 0.35, right - pitch_x * 0.15, y1 + 1)

    # ground floor: a door in one column, shop fronts or small windows in the others
    door_col = int(rng.integers(n_cols))
    gh = s - ground
    shops = rng.random() < 0.5
    shop_w, shop_h = pitch_x * rng.uniform(0.6, 0.85), gh * rng.uniform(0.55, 0.8)
    for c in range(n_cols):
        cx = left + (c + 0.5) * pitch_x
        if c == door_col:
            dw = max(2.0, pitch_x * rng.uniform(0.35, 0.6))
            b.add("door", cx - dw / 2, s - gh * rng.uniform(0.7, 0.9), cx + dw / 2, s)
        elif shops:
            b.add("shop", cx - shop_w / 2, s - shop_h - gh * 0.05, cx + shop_w / 2, s - gh * 0.05)
        else:
            b.add("window", cx - win_w / 2, ground + gh * 0.25, cx + win_w / 2, ground + gh * 0.25 + win_h * 0.8)
    return _Layout(size=s, roof=round(roof), elements=b.elements)


def _draw_labels(layout: _Layout) -> Image.Image:
    """The label map: each class in its flat CMP colour, drawn with Pillow as class indices, then coloured."""
    index = Image.new("L", (layout.size, layout.size), 0)
    draw = ImageDraw.Draw(index)
    for cls, (x0, y0, x1, y1) in layout.elements:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=CLASS_INDEX[cls])  # Pillow's boxes include the far edge
    return Image.fromarray(_PALETTE[np.asarray(index)])


# ---------------------------------------------------------------------------------------------------------------------
# rendering: each element painted with a texture of its class into a float RGB canvas (0..255)
# ---------------------------------------------------------------------------------------------------------------------

_WALLS = np.array(  # stucco and brick tones, picked per image and jittered
    [(208, 192, 160), (226, 216, 192), (150, 72, 56), (166, 164, 156), (202, 162, 96), (214, 180, 168), (120, 96, 80)],
    dtype=np.float32,
)
_SHUTTERS = np.array([(62, 104, 64), (112, 72, 42), (200, 200, 190), (70, 84, 110)], dtype=np.float32)
_SIGNS = np.array([(190, 40, 40), (230, 200, 60), (40, 90, 160), (30, 30, 30), (220, 220, 220)], dtype=np.float32)


@dataclass
class _Style:
    """The random choices that hold for a whole image (materials, light), plus the full-size wall texture."""

    rng: np.random.Generator
    unit: int  # texture period scale: 1 up to 64 px, so bricks and bars keep their look at larger sizes
    wall: np.ndarray  # (s, s, 3) wall texture
    stone: np.ndarray  # (3,) colour of sills, mouldings and pillars
    glass: np.ndarray  # (3,) dark tint of the windows
    frame: np.ndarray  # (3,) window frames
    shutter: np.ndarray
    wood: np.ndarray
    sign: np.ndarray


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(colour + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


def _make_style(rng: np.random.Generator, s: int) -> _Style:
    base = _jitter(rng, _WALLS[rng.integers(len(_WALLS))], 14)
    yy = np.arange(s, dtype=np.float32)[:, None]
    xx = np.arange(s, dtype=np.float32)[None, :]
    unit = max(1, s // 64)
    grain = rng.normal(0.0, 6.0, (s, s)).astype(np.float32)
    if rng.random() < 0.45:  # brick: darker mortar every few rows, offset joints every other course
        course = int(rng.integers(2, 4)) * unit
        mortar = (yy % course < unit).astype(np.float32)
        joints = ((xx + (yy // course % 2) * 3 * unit) % (6 * unit) < unit).astype(np.float32) * 0.6
        pattern = -22.0 * np.maximum(mortar, joints)
    else:  # stucco: faint horizontal streaks
        pattern = np.broadcast_to(5.0 * np.sin(yy / unit * rng.uniform(0.8, 1.6) + rng.uniform(0, 6.3)), (s, s))
    wall = base[None, None, :] + (grain + pattern)[..., None]
    return _Style(
        rng=rng,
        unit=unit,
        wall=wall,
        stone=np.clip(base * 1.12 + 22, 0, 255),
        glass=_jitter(rng, np.array([46, 56, 70], np.float32), 12),
        frame=_jitter(rng, np.array([228, 226, 218], np.float32), 20),
        shutter=_jitter(rng, _SHUTTERS[rng.integers(len(_SHUTTERS))], 12),
        wood=_jitter(rng, np.array([84, 54, 34], np.float32), 14),
        sign=_jitter(rng, _SIGNS[rng.integers(len(_SIGNS))], 10),
    )


def _ramp(n: int) -> np.ndarray:
    """0..1 across n pixels (a column vector), for gradients inside a box."""
    return np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None] if n > 1 else np.zeros((1, 1), np.float32)


def _paint_background(out: np.ndarray, box: Box, st: _Style, roof: int) -> None:
    # sky above the roof line (lighter towards the horizon), hazy grey neighbours below it
    s = out.shape[0]
    top = _jitter(st.rng, np.array([96, 140, 200], np.float32), 20)
    horizon = _jitter(st.rng, np.array([200, 214, 228], np.float32), 15)
    t = _ramp(max(roof, 1))[..., None]
    out[:roof] = top * (1 - t[:roof]) + horizon * t[:roof]
    out[roof:] = _jitter(st.rng, np.array([118, 118, 122], np.float32), 15) + st.rng.normal(0, 5, (s - roof, s, 1))


def _paint_facade(out: np.ndarray, box: Box, st: _Style, roof: int) -> None:
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = st.wall[y0:y1, x0:x1]


def _paint_band(out: np.ndarray, box: Box, st: _Style, roof: int) -> None:
    # sills, heads and mouldings: pale stone, lit from above, with a shadow line underneath
    x0, y0, x1, y1 = box
    h = y1 - y0
    shade = 1.08 - 0.22 * _ramp(h)
    out[y0:y1, x0:x1] = st.stone * shade[..., None]
    out[y1 : y1 + st.unit, x0:x1] *= 0.72


def _paint_window(out: np.ndarray, box: Box, st: _Style, roof: int) -> None:
    # glass: lighter sky reflection at the top, a diagonal glare, a pale frame and a mullion when there is room
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    t = _ramp(h)[..., None]
    glass = st.glass * (0.75 + 0.5 * t) + (1 - t) * 40.0
    yy, xx = np.mgrid[0:h, 0:w]
    u = st.unit
    glare = ((xx + yy + int(st.rng.integers(0, 4)) * u) % (7 * u) < 2 * u).astype(np.float32)[..., None]
    region = np.broadcast_to(glass, (h, w, 3)) + glare * 28.0
    if w >= 4 * u and h >= 4 * u:
        region[:u] = region[-u:] = region[:, :u] = region[:, -u:] = st.frame
        if w >= 6 * u:
            region[:, w // 2 - u // 2 : w // 2 - u // 2 + u] = st.frame
    region[:u] *= 0.8  # the lintel shades the top row
    out[y0:y1, x0:x1] = region


def _paint_door(out: np.ndarray, box: Box, st: _Style, roof: int) -> None:
    x0, y0, x1, y1 = box
    planks = np.where(np.arange(x1 - x0) // st.unit % 2 == 0, 1.0, 0.8).astype(np.float32)[None, :, None]
    out[y0:y1, x0:x1] = st.wood * planks * (1.1 - 0.3 * _ramp(y1 - y0))[..., None]
    out[y0 : y0 + st.unit, x0:x1] *= 0.6


def _paint_shop(out: np.ndarray, box: Box, st: _Style, roof: int) -> None:
    # a lit sign over a dark shop window
    x0, y0, x1, y1 = box
    sign_h = max(1, (y1 - y0) // 4)
    out[y0 : y0 + sign_h, x0:x1] = st.sign
    _paint_window(out, (x0, y0 + sign_h, x1, y1), st, roof)
    out[y0 + sign_h : y1, x0:x1] *= 0.7


def _paint_blind(out: np.ndarray, box: Box, st: _Style, roof: int) -> None:
    x0, y0, x1, y1 = box
    slats = np.where(np.arange(y1 - y0) // st.unit % 2 == 0, 1.0, 0.78).astype(np.float32)[:, None, None]
    out[y0:y1, x0:x1] = st.shutter * slats


def _paint_balcony(out: np.ndarray, box: Box, st: _Style, roof: int) -> None:
    # an iron railing: a top rail, bars every other column, what is behind shows darkened between them
    x0, y0, x1, y1 = box
    metal = np.array([44, 44, 48], np.float32)
    behind = out[y0:y1, x0:x1] * 0.6
    bars = (np.arange(x1 - x0) // st.unit % 2 == 0)[None, :, None]
    out[y0:y1, x0:x1] = np.where(bars, metal, behind)
    out[y0 : y0 + st.unit, x0:x1] = metal
    out[max(y0, y1 - st.unit) : y1, x0:x1] = st.stone * 0.8  # the slab


def _paint_pillar(out: np.ndarray, box: Box, st: _Style, roof: int) -> None:
    x0, y0, x1, y1 = box
    across = np.linspace(-1.0, 1.0, x1 - x0, dtype=np.float32) if x1 - x0 > 1 else np.zeros(1, np.float32)
    out[y0:y1, x0:x1] = st.stone * (1.05 - 0.2 * across**2)[None, :, None]


def _paint_deco(out: np.ndarray, box: Box, st: _Style, roof: int) -> None:
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = st.stone * 0.85 + st.rng.normal(0, 8, (y1 - y0, x1 - x0, 1))


_PAINTERS: dict[str, Callable[[np.ndarray, Box, _Style, int], None]] = {
    "background": _paint_background,
    "facade": _paint_facade,
    "window": _paint_window,
    "door": _paint_door,
    "cornice": _paint_band,
    "sill": _paint_band,
    "balcony": _paint_balcony,
    "blind": _paint_blind,
    "deco": _paint_deco,
    "molding": _paint_band,
    "pillar": _paint_pillar,
    "shop": _paint_shop,
}


def _render(layout: _Layout, rng: np.random.Generator) -> Image.Image:
    s = layout.size
    st = _make_style(rng, s)
    out = np.zeros((s, s, 3), np.float32)
    for cls, box in layout.elements:
        _PAINTERS[cls](out, box, st, layout.roof)
    # light from one side, a colour cast and sensor noise, so no two renderings share exact colours
    light = 1.0 + rng.uniform(-0.12, 0.12) * np.linspace(-1.0, 1.0, s, dtype=np.float32)[None, :, None]
    gain = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    out = out * light * gain + rng.normal(0, 3.0, (s, s, 3))
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def render_pair(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image]:
    """Draws one random facade: ``(label map A, rendered photo B)``, both RGB ``size`` x ``size``.

    Args:
        rng: the only source of randomness; the same generator state gives the same pair.
        size: side in pixels, at least ``MIN_SIZE``.
    """
    if size < MIN_SIZE:
        raise UserError(f"built-in data size must be at least {MIN_SIZE} px, got {size}")
    layout = _make_layout(rng, size)
    return _draw_labels(layout), _render(layout, rng)


# ---------------------------------------------------------------------------------------------------------------------
# the data set on disk
# ---------------------------------------------------------------------------------------------------------------------

_SPLITS = {"train": 0, "test": 1}  # the split's code keeps train and test draws independent


def default_data_root() -> Path:
    """``$GAN_TRANSLATE_DATA`` if set, else ``~/.cache/gan_translate``."""
    env = os.environ.get(DATA_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gan_translate"


def builtin_dataset_name(*, seed: int, size: int, n_train: int, n_test: int) -> str:
    return f"builtin_facades_s{seed}_{size}px_{n_train}_{n_test}"


def _marker_text(**params: int) -> str:
    return json.dumps({"generator_version": GENERATOR_VERSION, **params}, sort_keys=True)


def _is_complete(folder: Path, marker: str) -> bool:
    try:
        return (folder / MARKER).read_text() == marker
    except OSError:
        return False


def _write_dataset(folder: Path, *, seed: int, size: int, n_train: int, n_test: int) -> None:
    counts = {"train": n_train, "test": n_test}
    for split, n in counts.items():
        aligned = folder / "aligned" / split
        dir_a, dir_b = folder / "unaligned" / f"{split}A", folder / "unaligned" / f"{split}B"
        for d in (aligned, dir_a, dir_b):
            d.mkdir(parents=True)
        digits = max(4, len(str(n - 1)))
        for i in range(n):
            # one generator per image: image i is the same whatever the counts, and nothing global is touched
            rng = np.random.default_rng([seed, _SPLITS[split], i])
            img_a, img_b = render_pair(rng, size)
            both = Image.new("RGB", (2 * size, size))
            both.paste(img_a, (0, 0))
            both.paste(img_b, (size, 0))
            name = f"{i:0{digits}d}.png"
            both.save(aligned / name)
            img_a.save(dir_a / name)
            img_b.save(dir_b / name)


def _move_aside(folder: Path, marker: str) -> None:
    """Renames an incomplete or outdated folder out of the way (atomic), then deletes it."""
    if _is_complete(folder, marker):  # another process may have just replaced it
        return
    trash = folder.with_name(f".{folder.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _publish(tmp: Path, final: Path, marker: str) -> None:
    """Moves a complete ``tmp`` folder to ``final``; if another process got there first, keeps theirs."""
    for attempt in range(2):
        try:
            os.rename(tmp, final)
            return
        except OSError:
            if _is_complete(final, marker):
                return
            if attempt == 0:
                _move_aside(final, marker)
    raise UserError(f"could not create the built-in data set at {final}; delete that folder and try again")


def ensure_builtin_dataset(
    root: str | Path | None = None, *, seed: int = 0, size: int = 64, n_train: int = 200, n_test: int = 20
) -> Path:
    """Writes the built-in facades data set unless a complete copy exists, and returns its folder.

    Safe when several processes (DDP ranks) call it at once: each builds in a temporary sibling folder and renames it
    into place; the loser of the race keeps the winner's copy.

    Args:
        root: parent folder; default ``$GAN_TRANSLATE_DATA`` or ``~/.cache/gan_translate``.
        seed: seed of every drawing (non-negative).
        size: image side in pixels.
        n_train: training pairs.
        n_test: test pairs.
    """
    if seed < 0:
        raise UserError(f"built-in data seed must be >= 0, got {seed}")
    if size < MIN_SIZE:
        raise UserError(f"built-in data size must be at least {MIN_SIZE} px, got {size}")
    if n_train < 1 or n_test < 0:
        raise UserError(f"built-in data needs n_train >= 1 and n_test >= 0, got {n_train} and {n_test}")
    params = {"seed": seed, "size": size, "n_train": n_train, "n_test": n_test}
    root = default_data_root() if root is None else Path(root).expanduser()
    return build_once(root / builtin_dataset_name(**params), _marker_text(**params),
                      lambda tmp: _write_dataset(tmp, **params), what="the built-in data set")


def build_once(final: Path, marker: str, write: Callable[[Path], None], *, what: str) -> Path:
    """Reuses ``final`` when it carries ``marker``; otherwise ``write``s a temporary sibling folder and renames it into
    place, so that several processes (DDP ranks) may race and all end up with one complete folder."""
    if _is_complete(final, marker):
        return final
    root = final.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    except OSError as err:
        reason = err.strerror or err
        raise UserError(f"cannot write {what} under {root}: {reason} "
                        f"(set {DATA_ENV_VAR} to a writable folder)") from None
    try:
        write(tmp)
        (tmp / MARKER).write_text(marker)  # last: only a complete folder carries the marker
        _publish(tmp, final, marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final

"""Defensive image loading for training and evaluation data.

A single unreadable, truncated or hostile image must never stop a long training run.
:func:`open_image` accepts every form a dataset hands us (path, raw bytes, the undecoded
Hugging Face ``Image`` feature dict, or an already-open PIL image), decodes it fully inside a
guard, and either returns a plain 8-bit RGB image or raises :class:`BadImage` with a short
machine-friendly ``reason`` that callers can count and skip on.

:func:`to_rgb` is the colour half on its own: it applies EXIF orientation and converts every
Pillow mode to RGB the way a document should look (transparent areas become white paper,
16-bit and float scans are stretched to 8 bit instead of clipped).

Only raster formats are decoded (see ``ALLOWED_FORMATS``); in particular EPS is refused,
because Pillow renders it by running Ghostscript in a subprocess.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
import stat
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 100_000_000
MAX_SIDE = 20_000

# Probed in this order; each must be a pure decoder (no external programs, no code execution).
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "JPEG2000", "AVIF", "PPM")

_WHITE = (255, 255, 255, 255)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HIGH_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


class BadImage(Exception):
    """An image that cannot be used; ``reason`` is one of a small fixed vocabulary.

    Reasons: ``missing`` (no such file), ``unreadable`` (exists but cannot be read, e.g. no
    permission), ``not_a_regular_file`` (a directory, a named pipe, a device), ``empty_file``,
    ``remote`` (a URL: pages are read from local files only), ``corrupt`` (truncated or malformed data), ``unsupported``
    (not a recognised raster format, or a source type we cannot open), ``too_large`` /
    ``too_small`` (dimensions outside the limits) and ``decompression_bomb`` (Pillow's own
    pixel-count guard fired).
    """

    def __init__(self, reason: str, message: str = "") -> None:
        # Both values go to Exception so the error survives pickling (e.g. across worker processes).
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason


# --- colour conversion -------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """Return a new RGB image, upright per EXIF, with any transparency composited onto white."""
    # Decode first, so broken pixel data raises here rather than being mistaken for bad EXIF.
    image.load()
    image = _apply_exif_orientation(image)
    if image.mode in _HIGH_DEPTH_MODES:
        return _scale_to_8bit(image).convert("RGB")
    if image.has_transparency_data:
        return _flatten_on_white(image)
    # Covers RGB (copied), L, 1, CMYK, YCbCr, RGBX, HSV, LAB and opaque P.
    return image.convert("RGB")


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # EXIF is advisory metadata: a malformed block should cost us the rotation, not the pixels.
        return image.copy()


def _flatten_on_white(image: Image.Image) -> Image.Image:
    if image.mode == "La":
        # Pillow cannot go from premultiplied La straight to RGBA.
        image = image.convert("LA")
    rgba = image.convert("RGBA")
    paper = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(paper, rgba).convert("RGB")


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """Stretch 16-bit / 32-bit / float grey to 0..255 over the values actually present.

    Pillow's own conversion clips (every 16-bit value above 255 turns white), which destroys
    scans stored with 12 or 16 significant bits.
    """
    # "F" first: getextrema() is not implemented for the I;16 byte-order variants.
    floats = image.convert("F")
    low, high = floats.getextrema()
    if not (math.isfinite(low) and math.isfinite(high)):
        # NaN or infinity in float data leaves no usable range; Pillow's clipping at least
        # produces pixels instead of an exception.
        return floats.convert("L")
    if high == low:
        return Image.new("L", image.size, _flat_level(image.mode, low))
    scale = 255.0 / (high - low)
    # +0.5 because Pillow truncates when going from F to L, and we want rounding.
    offset = 0.5 - low * scale
    return floats.point(lambda value: value * scale + offset).convert("L")


def _flat_level(mode: str, value: float) -> int:
    # A flat image has no range to stretch; fall back to the storage type's nominal range so a
    # blank 16-bit white page stays white rather than turning black.
    if mode.startswith("I;16"):
        return round(value * 255 / 65535)
    return int(min(max(round(value), 0), 255))


# --- loading -----------------------------------------------------------------------------


def open_image(source: Any, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE,
               draft: int | None = None) -> Image.Image:
    """Fully decode ``source`` into a new RGB image, or raise :class:`BadImage`.

    ``source`` may be a path (``str`` or ``os.PathLike``), ``bytes``-like data, a mapping with
    ``"bytes"`` and/or ``"path"`` (the undecoded Hugging Face ``Image`` feature), or a PIL image
    (which is left open and unchanged; the result is always a copy).

    ``draft``: let libjpeg decode a big JPEG at 1/2..1/8 scale, to no less than ``draft`` pixels a
    side (the page cache's fast build); ``info["full_size"]`` then keeps the page's size as stored,
    upright, which is what boxes are measured on.
    """
    if isinstance(source, Image.Image):
        with _decode_guard("<PIL image>"):
            _check_size(source.size, max_pixels, max_side, "<PIL image>")
            source.load()
            return to_rgb(source)
    with _binary_stream(source) as (stream, label):
        return _decode(stream, label, max_pixels, max_side, draft)


def _decode(stream: BinaryIO, label: str, max_pixels: int, max_side: int, draft: int | None = None) -> Image.Image:
    with _decode_guard(label):
        with Image.open(stream, formats=_allowed_formats()) as image:
            # The header size is known before any pixel is decoded: refuse absurd images cheaply.
            _check_size(image.size, max_pixels, max_side, label)
            full = image.size
            if draft:
                image.draft("RGB", (draft, draft))  # square request: an EXIF rotation may swap the sides
            # Decode now, inside the guard, so truncated data fails here and not in a worker later.
            image.load()
            if not draft:  # some formats (ICO-like containers) only settle their size on load
                _check_size(image.size, max_pixels, max_side, label)
            page = to_rgb(image)
    if draft:
        if (page.width > page.height) != (full[0] > full[1]):  # turned upright by its EXIF orientation
            full = full[::-1]
        page.info["full_size"] = tuple(full)
    return page


def image_size(source: Any) -> tuple[int, int]:
    """(width, height) of an image as ``open_image`` would return it (EXIF rotation applied), from its header
    only: nothing is decoded. Raises :class:`BadImage` like ``open_image``."""
    with _binary_stream(source) as (stream, label), _decode_guard(label):
        with Image.open(stream, formats=_allowed_formats()) as image:
            _check_size(image.size, MAX_PIXELS, MAX_SIDE, label)
            width, height = image.size
            try:  # Orientation 5-8: a quarter turn either way; a malformed EXIF block turns nothing (to_rgb)
                turned = image.getexif().get(0x0112) in (5, 6, 7, 8)
            except Exception:
                turned = False
    return (height, width) if turned else (width, height)


@contextlib.contextmanager
def _binary_stream(source: Any) -> Iterator[tuple[BinaryIO, str]]:
    """Yield a readable binary stream and a label for messages; we own and close the stream."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise BadImage("empty_file", "0 bytes")
        yield io.BytesIO(data), f"<{len(data)} bytes>"
    elif isinstance(source, (str, os.PathLike)):
        with _open_path(source) as stream:
            yield stream, os.fspath(source)
    elif isinstance(source, Mapping):
        data, path = source.get("bytes"), source.get("path")
        if data is not None:
            with _binary_stream(data) as (stream, label):
                yield stream, f"{path} {label}" if path else label
        elif path:
            with _open_path(path) as stream:
                yield stream, os.fspath(path)
        else:
            raise BadImage("unsupported", "image mapping has neither 'bytes' nor 'path'")
    else:
        raise BadImage("unsupported", f"cannot open an image from a {type(source).__name__}")


@contextlib.contextmanager
def _open_path(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    name = os.fspath(path)
    if not name:
        raise BadImage("missing", "empty path")
    if is_url(name):
        raise BadImage("remote", f"{name}: a URL; download the images and point to the local files")
    try:
        # stat first: opening a named pipe would wait for a writer forever
        status = os.stat(name)
        if not stat.S_ISREG(status.st_mode):
            raise BadImage("not_a_regular_file", f"{name}: not a regular file")
        if status.st_size == 0:
            raise BadImage("empty_file", f"{name}: 0 bytes")
        stream = Path(name).open("rb")
    except FileNotFoundError as exc:
        raise BadImage("missing", f"{name}: no such file") from exc
    except OSError as exc:
        raise BadImage("unreadable", f"{name}: {exc.strerror or exc}") from exc
    with stream:
        yield stream


def is_url(name: str) -> bool:
    """Whether an image path is a URL (``https://...``, ``s3://...``) rather than a file."""
    return _URL.match(name) is not None


@contextlib.contextmanager
def _decode_guard(label: str) -> Iterator[None]:
    """Turn every failure of Pillow on hostile input into a :class:`BadImage`."""
    # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; make it an error here without
    # touching the process-wide filters. (catch_warnings is not thread-safe: decode in worker
    # processes, not threads, if that matters.)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except BadImage:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImage("decompression_bomb", f"{label}: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise BadImage("unsupported", f"{label}: not a recognised image format") from exc
        except Exception as exc:
            # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, IndexError,
            # EOFError, MemoryError... on malformed data; all of them mean "skip this sample".
            raise BadImage("corrupt", f"{label}: {type(exc).__name__}: {exc}") from exc


def _check_size(size: tuple[int, int], max_pixels: int, max_side: int, label: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise BadImage("too_small", f"{label}: zero-size image {width}x{height}")
    if max(width, height) > max_side:
        raise BadImage("too_large", f"{label}: {width}x{height} has a side over {max_side}")
    if width * height > max_pixels:
        raise BadImage("too_large", f"{label}: {width}x{height} is over {max_pixels} pixels")


@functools.cache
def _allowed_formats() -> tuple[str, ...]:
    # Image.open raises KeyError for a format name whose plugin is absent from this Pillow build.
    Image.init()
    return tuple(name for name in ALLOWED_FORMATS if name in Image.OPEN)


# --- several images as one ---------------------------------------------------------------


def tile(images: list[Image.Image], max_side: int = 2048) -> Image.Image:
    """Lay several RGB images out on one white sheet, in a near-square grid, left to right.

    Florence-2 sees one image per sample; a multi-page document becomes one sheet of its pages.
    Each page is shrunk to fit its cell (never enlarged), so the sheet stays under ``max_side``
    pixels a side whatever the input sizes.
    """
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    cell_w = min(max(im.width for im in images), max_side // columns)
    cell_h = min(max(im.height for im in images), max_side // rows)
    sheet = Image.new("RGB", (cell_w * columns, cell_h * rows), _WHITE[:3])
    for index, image in enumerate(images):
        page = image.copy()
        page.thumbnail((cell_w, cell_h))
        x = (index % columns) * cell_w + (cell_w - page.width) // 2
        y = (index // columns) * cell_h + (cell_h - page.height) // 2
        sheet.paste(page, (x, y))
    return sheet

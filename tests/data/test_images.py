"""Tests for defensive image loading and RGB conversion."""

from __future__ import annotations

import io
import pickle
import random
import struct
import warnings
import zlib
from pathlib import Path

import PIL.Image
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from florence_tune.data.images import MAX_PIXELS, MAX_SIDE, BadImage, open_image, to_rgb

WHITE = (255, 255, 255)


def _save(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _write(tmp_path: Path, name: str, image: Image.Image, **params) -> Path:
    path = tmp_path / name
    image.save(path, **params)
    return path


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    # Incompressible pixels so that cutting the file in half really cuts into the image data.
    data = random.Random(seed).randbytes(size[0] * size[1] * 3)
    return Image.frombytes("RGB", size, data)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header that claims the given size, with one row of real data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    pixels = zlib.compress(b"\x00" * (width + 1))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


def _reason(source, **kwargs) -> str:
    with pytest.raises(BadImage) as info:
        open_image(source, **kwargs)
    return info.value.reason


# --- mode conversion, through real files ---------------------------------------------------


def test_rgb_png_round_trip(tmp_path):
    path = _write(tmp_path, "rgb.png", Image.new("RGB", (3, 2), (10, 20, 30)))
    image = open_image(path)
    assert image.mode == "RGB"
    assert image.size == (3, 2)
    assert image.getpixel((2, 1)) == (10, 20, 30)


def test_l_becomes_grey_rgb(tmp_path):
    path = _write(tmp_path, "l.png", Image.new("L", (2, 2), 77))
    assert open_image(path).getpixel((0, 0)) == (77, 77, 77)


def test_la_transparency_composites_onto_white(tmp_path):
    image = Image.new("LA", (3, 1))
    image.putpixel((0, 0), (50, 0))  # fully transparent -> paper
    image.putpixel((1, 0), (50, 255))  # opaque -> itself
    image.putpixel((2, 0), (0, 128))  # half black over white: 255 * (1 - 128/255) = 127
    result = open_image(_write(tmp_path, "la.png", image))
    assert result.getpixel((0, 0)) == WHITE
    assert result.getpixel((1, 0)) == (50, 50, 50)
    assert result.getpixel((2, 0)) == pytest.approx((127, 127, 127), abs=1)


def test_rgba_transparent_pixel_becomes_white_not_black(tmp_path):
    image = Image.new("RGBA", (2, 1), (10, 20, 30, 0))
    image.putpixel((1, 0), (10, 20, 30, 255))
    result = open_image(_write(tmp_path, "rgba.png", image))
    assert result.getpixel((0, 0)) == WHITE
    assert result.getpixel((1, 0)) == (10, 20, 30)


def test_palette_with_transparent_index_becomes_white(tmp_path):
    image = Image.new("P", (2, 1), 0)
    image.putpalette([200, 0, 0, 0, 0, 200] + [0] * (256 * 3 - 6))  # 0 = red, 1 = blue
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 1
    path = _write(tmp_path, "p.png", image, transparency=1)
    assert Image.open(path).mode == "P"  # really a palette file with a tRNS entry
    result = open_image(path)
    assert result.getpixel((0, 0)) == (200, 0, 0)
    assert result.getpixel((1, 0)) == WHITE


def test_palette_with_alpha_palette_becomes_white():
    image = Image.new("P", (1, 1), 0)
    image.putpalette([9, 9, 9, 0] * 256, rawmode="RGBA")
    assert to_rgb(image).getpixel((0, 0)) == WHITE


def test_grey_with_transparent_value_becomes_white(tmp_path):
    image = Image.new("L", (2, 1), 7)
    image.putpixel((1, 0), 8)
    path = _write(tmp_path, "l_trns.png", image, transparency=7)
    result = open_image(path)
    assert result.getpixel((0, 0)) == WHITE
    assert result.getpixel((1, 0)) == (8, 8, 8)


def test_cmyk_to_rgb(tmp_path):
    image = Image.new("CMYK", (3, 1), (0, 0, 0, 0))  # no ink -> white
    image.putpixel((1, 0), (255, 0, 0, 0))  # full cyan -> (0, 255, 255)
    image.putpixel((2, 0), (0, 0, 0, 255))  # full black -> black
    result = open_image(_write(tmp_path, "cmyk.tif", image))
    assert result.getpixel((0, 0)) == WHITE
    assert result.getpixel((1, 0)) == (0, 255, 255)
    assert result.getpixel((2, 0)) == (0, 0, 0)


def test_i16_full_range_maps_to_full_8_bit(tmp_path):
    image = Image.new("I;16", (3, 1))
    for x, value in enumerate((0, 32768, 65535)):
        image.putpixel((x, 0), value)
    path = _write(tmp_path, "i16.png", image)
    assert Image.open(path).mode == "I;16"
    result = open_image(path)
    assert result.getpixel((0, 0)) == (0, 0, 0)
    # 32768 * 255 / 65535 = 127.50... -> 128 (rounded, not truncated)
    assert result.getpixel((1, 0)) == (128, 128, 128)
    assert result.getpixel((2, 0)) == WHITE


def test_i16_is_stretched_not_clipped():
    # 12-bit scan: Pillow's own convert("L") clips 300 and 4095 both to 255.
    image = Image.new("I;16", (3, 1))
    for x, value in enumerate((0, 300, 4095)):
        image.putpixel((x, 0), value)
    assert image.convert("L").getpixel((1, 0)) == 255  # the behaviour we avoid
    result = to_rgb(image)
    assert result.getpixel((1, 0))[0] == round(300 * 255 / 4095)  # 18.68 -> 19
    assert result.getpixel((2, 0)) == WHITE


def test_i16_big_endian_variant():
    image = Image.frombytes("I;16B", (2, 1), b"\x00\x00\xff\xff")
    result = to_rgb(image)
    assert (result.getpixel((0, 0)), result.getpixel((1, 0))) == ((0, 0, 0), WHITE)


def test_flat_i16_keeps_its_nominal_level():
    assert to_rgb(Image.new("I;16", (2, 2), 65535)).getpixel((0, 0)) == WHITE
    assert to_rgb(Image.new("I;16", (2, 2), 0)).getpixel((0, 0)) == (0, 0, 0)


def test_int32_and_float_are_stretched(tmp_path):
    ints = Image.new("I", (2, 1), -1000)
    ints.putpixel((1, 0), 1_000_000)
    result = open_image(_write(tmp_path, "i32.tif", ints))
    assert (result.getpixel((0, 0)), result.getpixel((1, 0))) == ((0, 0, 0), WHITE)

    floats = Image.new("F", (3, 1), 0.0)
    floats.putpixel((1, 0), 0.5)
    floats.putpixel((2, 0), 1.0)
    result = open_image(_write(tmp_path, "f.tif", floats))
    assert [result.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_with_nan_does_not_raise():
    image = Image.new("F", (2, 1), float("nan"))
    image.putpixel((1, 0), 3.0)
    assert to_rgb(image).mode == "RGB"


def test_bilevel_to_rgb(tmp_path):
    image = Image.new("1", (2, 1), 0)
    image.putpixel((1, 0), 1)
    result = open_image(_write(tmp_path, "bw.png", image))
    assert result.getpixel((0, 0)) == (0, 0, 0)
    assert result.getpixel((1, 0)) == WHITE


def test_premultiplied_la_is_supported():
    # Pillow cannot convert "La" to RGBA directly; to_rgb must route around that.
    assert to_rgb(Image.new("La", (1, 1), (0, 0))).getpixel((0, 0)) == WHITE


def test_to_rgb_returns_a_new_image_and_leaves_input_alone():
    original = Image.new("RGB", (2, 2), (1, 2, 3))
    converted = to_rgb(original)
    assert converted is not original
    converted.putpixel((0, 0), (9, 9, 9))
    assert original.getpixel((0, 0)) == (1, 2, 3)


# --- EXIF orientation ----------------------------------------------------------------------


def _oriented_jpeg(tmp_path: Path, orientation: int) -> Path:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))  # red marker in the stored top-left corner
    exif = image.getexif()
    exif[0x0112] = orientation
    return _write(tmp_path, f"o{orientation}.jpg", image, exif=exif.tobytes(), quality=95)


def _is_red(pixel) -> bool:
    red, green, blue = pixel
    return red > 200 and green < 60 and blue < 60


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    path = _oriented_jpeg(tmp_path, 6)
    assert Image.open(path).size == (40, 20)
    result = open_image(path)
    assert result.size == (20, 40)
    # Rotating 90 degrees clockwise moves the stored top-left corner to the top-right.
    assert _is_red(result.getpixel((15, 4)))
    assert not _is_red(result.getpixel((4, 4)))


def test_exif_orientation_8_rotates_counter_clockwise(tmp_path):
    result = open_image(_oriented_jpeg(tmp_path, 8))
    assert result.size == (20, 40)
    # Rotating 90 degrees counter-clockwise moves the stored top-left corner to the bottom-left.
    assert _is_red(result.getpixel((4, 35)))


def test_malformed_exif_is_ignored_not_fatal(tmp_path):
    path = tmp_path / "bad_exif.jpg"
    Image.new("RGB", (8, 4), (0, 200, 0)).save(path, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    assert open_image(path).size == (8, 4)


# --- sources -------------------------------------------------------------------------------


def test_sources_path_str_bytes_and_bytearray(tmp_path):
    path = _write(tmp_path, "x.png", Image.new("RGB", (4, 3), (5, 6, 7)))
    data = path.read_bytes()
    for source in (path, str(path), data, bytearray(data), memoryview(data)):
        image = open_image(source)
        assert image.size == (4, 3)
        assert image.getpixel((0, 0)) == (5, 6, 7)


def test_hf_image_feature_dict_with_bytes():
    data = _save(Image.new("RGB", (4, 3), (5, 6, 7)))
    assert open_image({"bytes": data, "path": "page_001.png"}).size == (4, 3)
    assert open_image({"bytes": data, "path": None}).size == (4, 3)


def test_hf_image_feature_dict_with_path_only(tmp_path):
    path = _write(tmp_path, "y.png", Image.new("RGB", (2, 5)))
    assert open_image({"bytes": None, "path": str(path)}).size == (2, 5)


def test_dict_with_nothing_is_unsupported():
    assert _reason({"bytes": None, "path": None}) == "unsupported"
    assert _reason({}) == "unsupported"


def test_dict_with_bad_bytes_names_the_path_in_the_message():
    with pytest.raises(BadImage, match="page_9.png"):
        open_image({"bytes": b"not an image", "path": "page_9.png"})


def test_unknown_source_type_is_unsupported():
    assert _reason(12345) == "unsupported"
    assert _reason(None) == "unsupported"


def test_open_pil_image_is_converted_and_left_open():
    original = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    result = open_image(original)
    assert result is not original
    assert result.getpixel((0, 0)) == WHITE
    assert original.getpixel((0, 0)) == (0, 0, 0, 0)  # still usable


def test_open_pil_image_size_limits_apply():
    assert _reason(Image.new("RGB", (0, 3))) == "too_small"
    assert _reason(Image.new("L", (50, 50)), max_pixels=100) == "too_large"


# --- failures ------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    assert _reason(tmp_path / "nope.png") == "missing"
    assert _reason(str(tmp_path / "nope.png")) == "missing"
    assert _reason({"bytes": None, "path": str(tmp_path / "nope.png")}) == "missing"
    assert _reason("") == "missing"


def test_directory_is_not_a_regular_file(tmp_path):
    assert _reason(tmp_path) == "not_a_regular_file"


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_truncated_png_is_corrupt(fraction):
    data = _save(_noise((64, 64)), "PNG")
    assert _reason(data[: int(len(data) * fraction)]) == "corrupt"


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_truncated_jpeg_is_corrupt(fraction):
    data = _save(_noise((64, 64)), "JPEG", quality=95)
    assert _reason(data[: int(len(data) * fraction)]) == "corrupt"


def test_truncated_file_on_disk_is_corrupt(tmp_path):
    data = _save(_noise((64, 64)), "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    assert _reason(path) == "corrupt"


def test_random_bytes_are_rejected():
    assert _reason(random.Random(1).randbytes(2048)) in {"unsupported", "corrupt"}


def test_empty_bytes_are_rejected():
    assert _reason(b"") == "empty_file"


def test_eps_is_refused_without_running_ghostscript():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n%%EOF\n"
    assert Image.open(io.BytesIO(eps)).format == "EPS"  # Pillow alone would accept it
    assert _reason(eps) == "unsupported"


def test_decompression_bomb_error_from_pillow(monkeypatch):
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)
    # 400 pixels > 2 * 100: Pillow raises DecompressionBombError itself.
    assert _reason(_save(Image.new("RGB", (20, 20)))) == "decompression_bomb"


def test_decompression_bomb_warning_is_escalated(monkeypatch):
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)
    data = _save(Image.new("RGB", (11, 10)))  # 110 pixels: Pillow merely warns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Image.open(io.BytesIO(data)).load()  # without our guard this would "succeed"
    assert _reason(data) == "decompression_bomb"


def test_warning_filters_are_restored():
    before = list(warnings.filters)
    with pytest.raises(BadImage):
        open_image(b"garbage")
    open_image(_save(Image.new("RGB", (2, 2))))
    assert warnings.filters == before


def test_crafted_header_claiming_huge_dimensions():
    # 100000 x 100000 = 1e10 pixels, rejected from the header alone without allocating anything.
    assert _reason(_png_claiming(100_000, 100_000)) == "decompression_bomb"


def test_side_over_the_limit_is_too_large():
    # 30000 x 10 is only 300k pixels (no bomb) but an absurd page shape.
    assert MAX_SIDE < 30_000
    assert _reason(_png_claiming(30_000, 10)) == "too_large"


def test_pixel_count_over_the_limit_is_too_large():
    assert MAX_PIXELS >= 10**7
    assert _reason(_save(Image.new("L", (200, 200))), max_pixels=39_999) == "too_large"
    assert open_image(_save(Image.new("L", (200, 200))), max_pixels=40_000).size == (200, 200)


def test_bad_image_carries_reason_message_and_pickles():
    error = BadImage("corrupt", "page.png: truncated")
    assert error.reason == "corrupt"
    assert str(error) == "corrupt: page.png: truncated"
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.reason, clone.message) == ("corrupt", "page.png: truncated")
    assert str(BadImage("missing")) == "missing"


# --- fuzzing -------------------------------------------------------------------------------

_SEEDS = [
    _save(_noise((12, 9), seed=2), "PNG"),
    _save(_noise((12, 9), seed=3), "JPEG"),
    _save(_noise((12, 9), seed=4).convert("P"), "GIF"),
    _save(_noise((12, 9), seed=5), "BMP"),
    _save(_noise((12, 9), seed=6), "TIFF"),
    _save(_noise((12, 9), seed=7), "WEBP"),
    _save(_noise((12, 9), seed=8).convert("L"), "PPM"),
    _save(Image.new("I;16", (12, 9), 999), "PNG"),
    _save(Image.new("RGBA", (12, 9), (1, 2, 3, 4)), "PNG"),
]


def _assert_rgb_or_bad_image(data: bytes) -> None:
    # Small limits keep the fuzzer from decoding headers that were mutated into big images.
    try:
        image = open_image(data, max_pixels=1_000_000, max_side=4_000)
    except BadImage as error:
        assert error.reason in {"corrupt", "unsupported", "too_large", "too_small", "decompression_bomb",
                                "empty_file"}
    else:
        assert image.mode == "RGB"
        assert image.width > 0 and image.height > 0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_never_escape_as_other_errors(data):
    _assert_rgb_or_bad_image(data)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(_SEEDS),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
    keep=st.floats(min_value=0.0, max_value=1.0),
)
def test_mutated_real_images_never_escape_as_other_errors(seed, edits, keep):
    data = bytearray(seed)
    for position, value in edits:
        data[position % len(data)] = value
    _assert_rgb_or_bad_image(bytes(data[: max(1, int(len(data) * keep))]))

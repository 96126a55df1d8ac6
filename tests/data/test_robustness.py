"""One bad sample never stops a run: every bad input is skipped or altered, and counted by reason —
by the loader, by ``data inspect`` and in the training summary."""

import collections
import io
import json
import os
import random
import struct
import zlib

import builders
import datasets
import pytest
from PIL import Image

from florence_tune import data
from florence_tune.cli import main
from florence_tune.data import Sample, Skipped

NON_ASCII_QUESTION, NON_ASCII_ANSWER = "Qu'est-ce que ça coûte — 東京?", "12,50 € ✓"
EXPECTED_SKIPS = {"image_decompression_bomb": 1, "image_too_large": 1, "image_corrupt": 1, "image_unsupported": 1,
                  "image_missing": 1, "path_outside_dataset": 2, "no_answer": 5, "no_question": 2,
                  "bad_json_line": 2, "no_image": 1}
USABLE = 11


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header claiming a size, with one row of pixels (no memory needed to make it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
            + chunk(b"IEND", b""))


def truncated_png() -> bytes:
    noise = Image.frombytes("RGB", (64, 64), random.Random(0).randbytes(64 * 64 * 3))  # incompressible
    return encoded(noise, "PNG")[:3000]


def image_files() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: a 40x20 file is a 20x40 page
    return {
        "rgb.png": builders.png(), "p.png": encoded(Image.new("P", (30, 20), 3), "PNG"),
        "la.png": encoded(Image.new("LA", (30, 20), (90, 0)), "PNG"),
        "rgba.png": encoded(Image.new("RGBA", (30, 20), (255, 0, 0, 0)), "PNG"),
        "cmyk.jpg": encoded(Image.new("CMYK", (30, 20), (0, 50, 50, 0)), "JPEG"),
        "i16.png": encoded(Image.new("I;16", (30, 20), 4000), "PNG"),
        "one.png": encoded(Image.new("1", (30, 20), 1), "PNG"),
        "exif.jpg": encoded(Image.new("RGB", (40, 20), "white"), "JPEG", exif=exif.tobytes()),
        "bomb.png": png_claiming(100_000, 100_000), "wide.png": png_claiming(30_000, 10),
        "truncated.png": truncated_png(), "garbage.png": random.Random(1).randbytes(500),
    }


def good(name: str, **extra) -> dict:
    return {"image": f"images/{name}", "question": f"what is on {name}", "answers": [f"{name} answer"], **extra}


@pytest.fixture(scope="module")
def bad_jsonl(tmp_path_factory):
    """28 lines: 11 usable (every image mode, EXIF, non-ASCII, an overlong answer), 17 bad ones."""
    root = tmp_path_factory.mktemp("bad") / "dataset"
    (root / "images").mkdir(parents=True)
    for name, content in image_files().items():
        (root / "images" / name).write_bytes(content)
    (root.parent / "outside.png").write_bytes(builders.png())  # exists, but outside the dataset folder
    lines = [
        good("rgb.png", question=NON_ASCII_QUESTION, answers=[NON_ASCII_ANSWER]),
        *(good(name) for name in ("p.png", "la.png", "rgba.png", "cmyk.jpg", "i16.png", "one.png", "exif.jpg")),
        *(good(name) for name in ("bomb.png", "wide.png", "truncated.png", "garbage.png", "missing.png")),
        good("x", image="../outside.png"), good("x", image="/etc/hostname"),
        good("rgb.png", answers=[]), {"image": "images/rgb.png", "question": "no answers key"},
        good("rgb.png", answers=None), good("rgb.png", answers=[None, "  "]),
        {"image": "images/rgb.png", "prefix": "<VQA>an empty suffix", "suffix": ""},
        good("rgb.png", question=None), good("rgb.png", question=""),
        "this is not json", "[1, 2]", {"question": "where is the image", "answers": ["nowhere"]},
        good("rgb.png", answers=["word " * 300]), good("rgb.png"), good("p.png"),
    ]
    builders.write_jsonl(root / "train.jsonl", lines)
    return root


def reasons(items) -> collections.Counter:
    return collections.Counter(item.reason for item in items if isinstance(item, Skipped))


@pytest.mark.parametrize("streaming", [False, True])
def test_every_bad_input_is_skipped_and_counted(bad_jsonl, streaming):
    dataset = data.load(str(bad_jsonl), "train", streaming=streaming, holdout_rows=0)
    items = list(dataset) if streaming else [dataset[i] for i in range(len(dataset))]
    assert reasons(items) == EXPECTED_SKIPS
    usable = [item for item in items if isinstance(item, Sample)]
    assert len(usable) == USABLE and all(s.image.mode == "RGB" for s in usable)
    assert (usable[0].prompt, usable[0].target) == ("<VQA>" + NON_ASCII_QUESTION, NON_ASCII_ANSWER)
    assert usable[7].image.size == (20, 40), "EXIF orientation applied"


@pytest.fixture(scope="module")
def bad_cauldron(tmp_path_factory):
    """Cauldron-shaped rows: 4 usable turns (one on two tiled pages) and 7 bad ones."""
    page, broken = {"bytes": builders.png(), "path": None}, {"bytes": truncated_png(), "path": None}

    def turns(*pairs):
        return [{"user": user, "assistant": assistant, "source": "test"} for user, assistant in pairs]

    rows = [
        {"images": [page], "texts": turns(("q1", "a1"), ("q2", "a2"))},
        {"images": [page, page], "texts": turns(("two pages?", "yes"))},
        {"images": [page], "texts": []}, {"images": [page], "texts": None},
        {"images": [page], "texts": turns(("q", None), ("q3", "a3"))},
        {"images": [page], "texts": turns(("", "a"))},
        {"images": [], "texts": turns(("q", "a"))},
        {"images": [broken, page], "texts": turns(("q", "a"), ("q", "b"))},
    ]
    folder = tmp_path_factory.mktemp("bad_cauldron") / "saved"
    datasets.Dataset.from_list(rows, features=builders.CAULDRON_FEATURES).save_to_disk(str(folder))
    return folder


def test_bad_cauldron_rows_are_counted(bad_cauldron):
    items = [*data.load(str(bad_cauldron), "train", holdout_rows=0, streaming=True)]
    assert reasons(items) == {"no_turns": 2, "no_answer": 1, "no_question": 1, "no_image": 1, "image_corrupt": 2}
    usable = [item for item in items if isinstance(item, Sample)]
    assert [s.meta["altered"] for s in usable] == [[], [], ["tiled_images"], []]
    skipping = [*data.load(str(bad_cauldron), "train", holdout_rows=0, multi_image="skip", streaming=True)]
    assert reasons(skipping)["multi_image"] == 3, "both multi-image rows, their pages never opened"
    assert "image_corrupt" not in reasons(skipping)


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_data_inspect_reports_the_bad_samples(bad_jsonl, bad_cauldron, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert main(["data", "inspect", str(bad_jsonl), "--holdout-rows", "0", "--sheet", str(sheet)]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["skipped"] == EXPECTED_SKIPS and summary["usable"] == USABLE
    assert summary["altered"] == {"truncated_answers": 1}
    assert summary["answer_tokens"]["max"] > 128 and summary["question_tokens"]["p50"] > 0
    with Image.open(sheet) as image:
        assert image.size[0] > 300 and image.size[1] > 300
    assert main(["data", "inspect", str(bad_cauldron), "--holdout-rows", "0", "--streaming",
                 "--sheet", str(sheet)]) == 0
    assert last_json(capsys.readouterr().out)["altered"] == {"tiled_images": 1}


def test_training_reports_the_counts_at_the_end(bad_jsonl, tmp_path, capsys, caplog):
    # 28 items, batches of 14: two steps are exactly one pass over the stream
    assert main(["train", "--dataset", str(bad_jsonl), "--streaming", "--holdout-rows", "0", "--eval-split", "none",
                 "--max-steps", "2", "--batch-size", "14", "--output-dir", str(tmp_path / "run"), "--report-to", "none",
                 "--logging-steps", "1"]) == 0
    output = capsys.readouterr().out
    summary = last_json(output)
    assert summary["data"] == {**{f"skipped_{k}": v for k, v in EXPECTED_SKIPS.items()}, "truncated_answers": 1}
    assert "skipped_image_missing 1" in output
    assert f"most samples read were unusable: {sum(EXPECTED_SKIPS.values())} skipped (no_answer 5" in caplog.text


@pytest.fixture()
def awkward_files(tmp_path):
    """Lines whose trouble is in the bytes of the file or in what the image path names."""
    root = tmp_path / "dataset"
    (root / "images").mkdir(parents=True)
    (root / "images" / "p.png").write_bytes(builders.png())
    (root / "images" / "empty.png").write_bytes(b"")
    os.mkfifo(root / "images" / "pipe.png")  # opening it would wait for a writer forever
    file = builders.write_jsonl(root / "train.jsonl", [
        good("p.png", answers=None, answer=42), good("p.png", answers=[3.5, "three and a half"]),
        {"image": "images/p.png", "prefix": "<VQA>how many", "suffix": 7},
        good("empty.png"), good("x", image="https://example.com/page.png"), good("pipe.png"),
    ])
    with file.open("ab") as handle:
        handle.write(b'{"image": "images/p.png", "question": "caf\xe9?", "answers": ["x"]}\n')
    return root


@pytest.mark.parametrize("streaming", [False, True])
def test_bytes_and_paths_that_are_not_what_they_seem(awkward_files, streaming):
    dataset = data.load(str(awkward_files), "train", streaming=streaming, holdout_rows=0)
    items = list(dataset) if streaming else [dataset[i] for i in range(len(dataset))]
    usable = [item for item in items if isinstance(item, Sample)]
    assert [(s.target, s.references) for s in usable] == [
        ("42", ["42"]), ("3.5", ["3.5", "three and a half"]), ("7", ["7"])], "numbers are answers, as text"
    assert reasons(items) == {"image_empty_file": 1, "image_remote": 1, "image_not_a_regular_file": 1,
                              "not_utf8": 1}

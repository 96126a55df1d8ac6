"""Data held in memory becomes one save_to_disk folder per content, read back through the one data stack."""

import io

import datasets
import numpy as np
import pandas as pd
import pytest
from builders import png
from PIL import Image

from florence_tune import data
from florence_tune.data import Sample, Skipped, in_memory
from florence_tune.errors import UsageError


def page(index: int, size=(48, 32)) -> Image.Image:
    return Image.new("RGB", size, (index * 37 % 256, 90, 160))


def rows(count: int, start: int = 0) -> list[dict]:
    return [{"image": page(i), "question": f"what is in box {i}", "answers": [f"value {i}"]}
            for i in range(start, start + count)]


def samples(dataset) -> list:
    return [dataset[i] for i in range(len(dataset))]


def test_the_same_rows_reuse_their_folder_and_other_rows_get_another(tmp_path):
    first = in_memory.save(rows(4), root=tmp_path)
    written = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    assert in_memory.save(rows(4), root=tmp_path) == first
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == written, "not written again"
    changed_text = rows(4)
    changed_text[2]["answers"] = ["another value"]
    changed_pixels = rows(4)
    changed_pixels[3]["image"] = page(3, size=(48, 33))
    others = {in_memory.save(changed_text, root=tmp_path), in_memory.save(changed_pixels, root=tmp_path),
              in_memory.save(rows(4, start=1), root=tmp_path),
              in_memory.save(rows(4), split="validation", root=tmp_path)}
    assert first not in others and len(others) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({first.name, *(o.name for o in others)}), \
        "nothing left behind but the folders"


def test_rows_read_back_as_samples_with_their_pixels_and_a_held_out_validation_split(tmp_path):
    folder = in_memory.save(rows(20), root=tmp_path)
    train, validation = data.load(str(folder), "train"), data.load(str(folder), "validation")
    assert (len(train), len(validation)) == (18, 2), "a set smaller than --holdout-rows lends a tenth"
    got = samples(validation) + samples(train)
    assert [s.target for s in got] == [f"value {i}" for i in range(20)]
    assert [s.prompt for s in got[:2]] == ["<VQA>what is in box 0", "<VQA>what is in box 1"]
    assert all(np.array_equal(np.asarray(s.image), np.asarray(page(i))) for i, s in enumerate(got)), "lossless"


def test_a_pil_image_its_file_and_its_bytes_are_the_same_data(tmp_path):
    path = tmp_path / "page.jpg"
    page(5, size=(64, 40)).save(path, format="JPEG")
    forms = [Image.open(path), path, str(path), path.read_bytes(), {"bytes": path.read_bytes(), "path": None}]
    folders = {in_memory.save([{"image": image, "question": "q", "answers": ["a"]}], root=tmp_path / "cache")
               for image in forms}
    assert len(folders) == 1, "a PIL image opened from a file is stored as that file's bytes, not re-encoded"
    stored = datasets.load_from_disk(str(folders.pop()))["train"].cast_column("image", datasets.Image(decode=False))
    assert stored[0]["image"] == {"bytes": path.read_bytes(), "path": None}


def test_a_dataframe_is_the_same_data_as_its_rows_and_missing_values_are_none(tmp_path):
    listed = [{"image": png(), "prefix": "<VQA>What colour?", "suffix": "red"},
              {"image": png((0, 200, 0)), "prefix": "<VQA>What colour?"}]
    frame = pd.DataFrame(listed)
    assert frame["suffix"].isna().iloc[1]
    assert in_memory.save(frame, root=tmp_path) == in_memory.save(
        [listed[0], {**listed[1], "suffix": None}], root=tmp_path)
    found = samples(data.load(str(in_memory.save(frame, root=tmp_path)), "train", holdout_rows=0))
    assert isinstance(found[0], Sample) and found[0].target == "red"
    assert found[1] == Skipped("no_answer"), "a missing answer is a counted bad row, as in a JSON-lines file"


def test_splits_are_kept_and_a_dataset_with_image_paths_is_stored_with_their_bytes(tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"p{i}.png")
        page(i).save(files[-1])
    given = datasets.Dataset.from_dict({"image": [str(f) for f in files], "question": ["q0", "q1", "q2"],
                                        "answers": [["a0"], ["a1"], ["a2"]]}).cast_column("image", datasets.Image())
    splits = datasets.DatasetDict({"train": given.select([0, 1]), "test": given.select([2])})
    folder = in_memory.save(splits, root=tmp_path / "cache")
    assert in_memory.save(splits, root=tmp_path / "cache") == folder, "a Dataset is named by its own fingerprint"
    for file in files:
        file.unlink()  # the folder stands alone
    assert [s.target for s in samples(data.load(str(folder), "test"))] == ["a2"]
    got = samples(data.load(str(folder), "train", holdout_rows=0))
    assert [s.target for s in got] == ["a0", "a1"]
    assert np.array_equal(np.asarray(got[1].image), np.asarray(page(1)))


def test_cauldron_shaped_rows_keep_every_turn_and_every_page(tmp_path):
    row = {"images": [page(1), page(2)], "texts": [{"user": "first?", "assistant": "one", "source": "mine"},
                                                   {"user": "second?", "assistant": "two", "source": "mine"}]}
    got = samples(data.load(str(in_memory.save([row], root=tmp_path)), "train", holdout_rows=0))
    assert [s.target for s in got] == ["one", "two"]
    assert got[0].image.size != page(1).size, "the two pages are tiled into one sheet"


def test_an_image_that_cannot_be_read_is_a_counted_bad_row(tmp_path):
    written = [{"image": tmp_path / "missing.png", "question": "q", "answers": ["a"]},
               {"image": png(), "question": "q", "answers": ["b"]}]
    got = samples(data.load(str(in_memory.save(written, root=tmp_path / "cache")), "train", holdout_rows=0))
    assert got[0] == Skipped("no_image") and got[1].target == "b"


@pytest.mark.parametrize(("given", "message"), [
    (42, "must be a datasets.Dataset"),
    ([], "at least one row"),
    (["a.png"], "a list of str"),
    ({}, "has no splits"),
    ([{"picture": png(), "question": "q"}], "expected DocVQA's"),
    ([{"image": 3.5j, "question": "q"}], "an image is a complex"),
    ([{"image": png(), "question": "q", "answers": ["a"]}, {"image": png(), "question": "q", "answers": "a"}],
     "each column needs one type"),
])
def test_data_that_is_not_rows_of_a_known_shape_is_one_line_and_writes_nothing(given, message, tmp_path):
    with pytest.raises(UsageError, match=message) as caught:
        in_memory.save(given, root=tmp_path / "cache")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "cache").exists()


def test_a_stream_is_refused_with_what_to_do(tmp_path):
    stream = datasets.Dataset.from_dict({"image": [png()], "question": ["q"]}).to_iterable_dataset()
    with pytest.raises(UsageError, match="streaming=True"):
        in_memory.save(stream, root=tmp_path)


def test_a_spec_or_path_is_left_as_it_is(tmp_path):
    assert in_memory.spec_of("docvqa") == "docvqa"
    assert in_memory.spec_of(tmp_path / "x.jsonl") == str(tmp_path / "x.jsonl")
    assert in_memory.spec_of(rows(1), root=tmp_path) == str(in_memory.save(rows(1), root=tmp_path))


def test_an_image_held_in_memory_is_stored_losslessly_in_its_own_mode(tmp_path):
    for mode in ("RGB", "L", "RGBA", "CMYK", "I;16"):
        image = Image.new(mode, (6, 4))
        stored = Image.open(io.BytesIO(in_memory.encode(image)))
        assert stored.mode == mode and stored.tobytes() == image.tobytes()

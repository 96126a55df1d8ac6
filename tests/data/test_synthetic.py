"""Tests for the synthetic document generator and its parquet export."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from florence_tune.data import synthetic  # noqa: E402
from florence_tune.data.synthetic import (  # noqa: E402
    COLOURS,
    DOCUMENT_TYPES,
    FAMILIES,
    FEATURES,
    generate_documents,
    generate_split,
    write_dataset,
)

SMALL_SIZES = {"train": 6, "validation": 4, "test": 3}


@pytest.fixture(scope="module")
def train_records():
    return generate_split("train", 80, seed=0)


@pytest.fixture(scope="module")
def train_documents():
    return generate_documents("train", 80, seed=0)


def _signature(records):
    return [
        (r["questionId"], r["question"], r["question_types"], r["answers"], r["image"].tobytes())
        for r in records
    ]


def test_same_seed_gives_identical_records(train_records):
    again = generate_split("train", 80, seed=0)
    assert _signature(again) == _signature(train_records)


def test_different_seed_gives_different_documents(train_records):
    other = generate_split("train", 80, seed=1)
    assert [r["image"].tobytes() for r in other[:20]] != [r["image"].tobytes() for r in train_records[:20]]
    assert [r["answers"] for r in other] != [r["answers"] for r in train_records]


def test_document_does_not_depend_on_split_length(train_records):
    # Each page has its own random stream, so asking for fewer pages yields a prefix.
    prefix = generate_split("train", 5, seed=0)
    assert _signature(prefix) == _signature(train_records[: len(prefix)])


def test_splits_share_no_ids_or_pages():
    splits = {name: generate_split(name, 20, seed=0) for name in ("train", "validation", "test")}
    for key in ("docId", "questionId"):
        seen = [{r[key] for r in records} for records in splits.values()]
        assert sum(len(ids) for ids in seen) == len(set().union(*seen))
    images = [{r["image"].tobytes() for r in records} for records in splits.values()]
    assert sum(len(found) for found in images) == len(set().union(*images))


def test_question_ids_are_unique_within_a_split(train_records):
    assert len({r["questionId"] for r in train_records}) == len(train_records)


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError):
        generate_split("dev", 3)


def test_record_schema(train_records):
    for record in train_records:
        assert list(record) == list(FEATURES)
        assert isinstance(record["questionId"], int) and isinstance(record["docId"], int)
        assert isinstance(record["question"], str) and record["question"].endswith("?")
        assert len(record["question_types"]) == 1 and record["question_types"][0] in FAMILIES
        assert isinstance(record["image"], Image.Image) and record["image"].mode == "RGB"
        assert record["image"].size == (384, 512)
        assert record["answers"] and all(isinstance(a, str) and a for a in record["answers"])


def test_custom_image_size():
    record = generate_split("test", 1, image_size=(192, 256))[0]
    assert record["image"].size == (192, 256)


def test_each_page_has_colour_type_and_text_questions(train_records):
    by_doc = {}
    for record in train_records:
        by_doc.setdefault(record["docId"], []).append(record["question_types"][0])
    assert len(by_doc) == 80
    for families in by_doc.values():
        assert families[:2] == ["page_colour", "document_type"]
        assert 3 <= len(families) <= 4 and len(set(families)) == len(families)


def test_every_family_and_answer_class_appears(train_records):
    assert {r["question_types"][0] for r in train_records} == set(FAMILIES)
    types = {r["answers"][0] for r in train_records if r["question_types"] == ["document_type"]}
    colours = {r["answers"][0] for r in train_records if r["question_types"] == ["page_colour"]}
    assert types == set(DOCUMENT_TYPES)
    assert colours == set(COLOURS)


def test_page_colour_dominates_the_page(train_records):
    # The page_colour family must be learnable from a 128x128 thumbnail: the median pixel of the
    # thumbnail must be nearest to the tint named in the answer, and the six medians must differ.
    medians = {}
    for record in train_records:
        if record["question_types"] != ["page_colour"]:
            continue
        thumbnail = np.asarray(record["image"].resize((128, 128), Image.BILINEAR)).reshape(-1, 3)
        median = np.median(thumbnail, axis=0)
        nearest = min(COLOURS, key=lambda name: np.abs(np.array(COLOURS[name]) - median).sum())
        assert nearest == record["answers"][0]
        # A global average pool sees the mean, which ink pulls towards grey; it must still be nearest.
        mean = thumbnail.mean(axis=0)
        assert min(COLOURS, key=lambda name: np.abs(np.array(COLOURS[name]) - mean).sum()) == nearest
        dark = (np.abs(thumbnail - median).sum(axis=1) > 100).mean()
        assert dark < 0.15
        medians.setdefault(record["answers"][0], median)
    names = sorted(medians)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert np.abs(medians[first] - medians[second]).sum() > 60


def test_text_answers_are_drawn_verbatim(train_records, train_documents):
    documents = {document.doc_id: document for document in train_documents}
    checked = set()
    for record in train_records:
        family = record["question_types"][0]
        if family in ("page_colour", "document_type"):
            continue
        document = documents[record["docId"]]
        assert record["answers"][0] == document.fields[family]
        assert record["answers"][0] in document.drawn_text
        checked.add(family)
    assert checked == {"total", "date", "name", "number"}


def test_totals_are_money_strings(train_records):
    totals = [r["answers"] for r in train_records if r["question_types"] == ["total"]]
    assert totals
    for drawn, bare in totals:
        assert drawn.startswith("$") and drawn[1:] == bare and bare[-3] == "."


def test_generate_split_matches_documents(train_records, train_documents):
    flattened = [(d.doc_id, question) for d in train_documents for _, question, _ in d.questions]
    assert flattened == [(r["docId"], r["question"]) for r in train_records]


def test_write_dataset_round_trip(tmp_path):
    root = write_dataset(tmp_path / "synthetic", sizes=SMALL_SIZES, seed=3)
    for split in SMALL_SIZES:
        assert (root / "data" / f"{split}-00000-of-00001.parquet").is_file()
    loaded = datasets.load_dataset(str(root), split="validation", cache_dir=str(tmp_path / "cache"))
    expected = generate_split("validation", SMALL_SIZES["validation"], seed=3)
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected, strict=True):
        assert isinstance(got["image"], Image.Image)
        assert got["image"].convert("RGB").tobytes() == want["image"].tobytes()
        assert {k: got[k] for k in got if k != "image"} == {k: want[k] for k in want if k != "image"}


def test_ready_marker_prevents_rebuild(tmp_path, monkeypatch):
    root = tmp_path / "synthetic"
    write_dataset(root, sizes=SMALL_SIZES)
    marker = (root / "READY").read_text()
    assert '"seed": 0' in marker

    def fail(*args, **kwargs):
        raise AssertionError("dataset was rebuilt")

    monkeypatch.setattr(synthetic, "_write_splits", fail)
    assert write_dataset(root, sizes=SMALL_SIZES) == root
    with pytest.raises(AssertionError, match="rebuilt"):
        write_dataset(root, sizes=SMALL_SIZES, seed=1)


def test_changed_request_replaces_previous_build(tmp_path):
    root = tmp_path / "synthetic"
    write_dataset(root, sizes={"train": 2})
    write_dataset(root, sizes={"validation": 2}, seed=5)
    assert sorted(p.name for p in (root / "data").iterdir()) == ["validation-00000-of-00001.parquet"]
    assert '"seed": 5' in (root / "READY").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def crash(folder, sizes, seed):
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "train-00000-of-00001.parquet").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_write_splits", crash)
    with pytest.raises(RuntimeError):
        write_dataset(tmp_path / "synthetic", sizes={"train": 2})
    assert list(tmp_path.iterdir()) == []


def test_foreign_folder_is_not_replaced(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_dataset(root, sizes={"train": 1})
    assert (root / "notes.txt").read_text() == "keep me"

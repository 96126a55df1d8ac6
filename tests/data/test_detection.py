"""Task datasets: COCO detection JSON, JSON lines with boxes (and OCR / caption / grounding rows), the
synthetic pages' regions — each row a Sample with the Florence-2 target and reference boxes in pixels."""

import json

import pytest
from PIL import Image

from florence_tune import data, tasks
from florence_tune.data import Skipped, synthetic
from florence_tune.data.adapters import local
from florence_tune.data.sample import ALTERED
from florence_tune.errors import UsageError


def save_page(path, size=(200, 100), colour=(240, 240, 240)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture()
def coco_folder(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        save_page(tmp_path / "images" / name)
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 200, "height": 100},
                   {"id": 2, "file_name": "b.png", "width": 200, "height": 100},
                   {"id": 3, "file_name": "c.png", "width": 640, "height": 480}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [100, 50, 100, 50], "area": 5000, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 40, 20], "area": 800, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [10, 10, 5, 5], "area": 25, "iscrowd": 1},
            {"id": 4, "image_id": 3, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        ],
        "categories": [{"id": 3, "name": "stamp"}, {"id": 7, "name": "signature"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    return tmp_path


def test_coco_json_gives_od_samples_with_pixel_boxes(coco_folder):
    for spec in (str(coco_folder / "annotations.json"), str(coco_folder)):
        dataset = data.load(spec, "train", holdout_rows=0)
        assert len(dataset) == 3
        sample = dataset[0]
        assert sample.prompt == "<OD>" and sample.meta["task"] == "<OD>"
        # reading order (top first); crowd boxes are left out; [x, y, w, h] became [x1, y1, x2, y2]
        assert sample.meta["labels"] == ["stamp", "signature"]
        assert sample.meta["boxes"] == [[0.0, 0.0, 40.0, 20.0], [100.0, 50.0, 200.0, 100.0]]
        assert sample.meta["image_size"] == [200, 100]
        assert sample.target == ("stamp<loc_0><loc_0><loc_200><loc_200>"
                                 "signature<loc_500><loc_500><loc_999><loc_999>")
        assert sample.references == [sample.target]
        assert dataset[1] == Skipped("no_boxes")
        assert dataset[2] == Skipped("image_size_mismatch")  # annotated for 640x480, file is 200x100


def test_jsonl_rows_for_every_task(tmp_path):
    save_page(tmp_path / "pages" / "p.png")
    rows = [
        {"image": "pages/p.png", "boxes": [[10, 10, 90, 60]], "labels": ["table"]},
        {"image": "pages/p.png", "objects": [{"label": "stamp", "bbox": [150, 20, 190, 60]}], "id": "mine"},
        {"image": "pages/p.png", "task": "<CAPTION_TO_PHRASE_GROUNDING>", "caption": "a table and a stamp",
         "boxes": [[10, 10, 90, 60], [150, 20, 190, 60]], "labels": ["a table", "a stamp"]},
        {"image": "pages/p.png", "task": "<OCR>", "text": "TOTAL 12.50"},
        {"image": "pages/p.png", "task": "<CAPTION>", "caption": "a grey page"},
        {"image": "pages/missing.png", "boxes": [[0, 0, 5, 5]], "labels": ["x"]},
        {"image": "pages/p.png", "boxes": [[300, 300, 400, 400]], "labels": ["outside"]},
    ]
    (tmp_path / "boxes.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dataset = data.load(str(tmp_path / "boxes.jsonl"), "train", holdout_rows=0)
    table, stamp, grounding, ocr, caption, missing, outside = (dataset[i] for i in range(len(rows)))
    assert table.target == "table<loc_50><loc_100><loc_450><loc_600>" and table.id == "boxes-1"
    assert stamp.meta["labels"] == ["stamp"] and stamp.id == "mine"
    assert grounding.prompt == "<CAPTION_TO_PHRASE_GROUNDING>a table and a stamp"
    assert grounding.meta["task"] == tasks.GROUNDING and grounding.target.startswith("a table<loc_50>")
    assert (ocr.prompt, ocr.target, ocr.meta["task"]) == ("<OCR>", "TOTAL 12.50", "<OCR>")
    assert (caption.prompt, caption.target) == ("<CAPTION>", "a grey page")
    assert missing.reason.startswith("image_") and outside == Skipped("no_boxes")


def test_folder_splits_and_split_field(tmp_path):
    save_page(tmp_path / "p.png")
    row = {"image": "p.png", "boxes": [[0, 0, 50, 50]], "labels": ["a"]}
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    (tmp_path / "validation.jsonl").write_text(json.dumps(row) + "\n")
    assert (len(data.load(str(tmp_path), "train")), len(data.load(str(tmp_path), "validation"))) == (2, 1)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(json.dumps({**row, "split": s}) for s in ("train", "train", "test")) + "\n")
    assert len(data.load(str(mixed), "train", holdout_rows=0)) == 2
    assert len(data.load(str(mixed), "test", holdout_rows=0)) == 1
    with pytest.raises(UsageError, match="has no split 'validation'"):
        data.load(str(mixed), "validation", holdout_rows=0)
    assert len(data.load(str(mixed), "validation", holdout_rows=1)) == 1, "held out from train, as VQA data is"


def test_question_answer_jsonl_is_left_to_the_vqa_reader(tmp_path):
    (tmp_path / "qa.jsonl").write_text(json.dumps({"image": "p.png", "question": "q?", "answers": ["a"]}) + "\n")
    (tmp_path / "od.jsonl").write_text(json.dumps({"image": "p.png", "boxes": [[0, 0, 1, 1]], "labels": ["a"]}))
    assert local.kind_of(tmp_path / "qa.jsonl") == "jsonl" and local.kind_of(tmp_path / "od.jsonl") == "tasks"


def test_synthetic_detection_caption_and_ocr_specs():
    detected = data.load("synthetic:detection", "validation", limit=8)
    assert len(detected) == 8
    documents = synthetic.generate_documents("validation", 8)
    for index, document in enumerate(documents):
        sample = detected[index]
        assert sample.prompt == "<OD>" and sample.meta["task"] == "<OD>"
        assert sorted(sample.meta["labels"]) == sorted(label for label, _ in document.objects)
        assert set(sample.meta["labels"]) <= set(synthetic.OBJECT_LABELS)
        width, height = document.image.size
        for x1, y1, x2, y2 in sample.meta["boxes"]:
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert "<loc_1000>" not in sample.target
    caption = data.load("synthetic:caption", "validation", limit=1)[0]
    assert caption.prompt == "<CAPTION>" and caption.target == documents[0].caption
    ocr = data.load("synthetic:ocr", "validation", limit=1)[0]
    assert ocr.prompt == "<OCR>" and ocr.target.split()[:2] == " ".join(documents[0].drawn_text).split()[:2]
    with pytest.raises(UsageError, match="has no configuration 'segmentation'"):
        data.load("synthetic:segmentation", "validation")


def test_task_data_streams_mixes_holds_out_and_limits_as_vqa_data_does(tmp_path):
    """Task rows go through the one data stack: held-out validation, streaming, limits, mixtures."""
    save_page(tmp_path / "p.png")
    rows = [{"image": "p.png", "boxes": [[0, 0, 10 + i, 10 + i]], "labels": ["box"], "id": f"r{i}"} for i in range(6)]
    file = tmp_path / "boxes.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    train = data.load(str(file), "train", holdout_rows=2)
    validation = data.load(str(file), "validation", holdout_rows=2)
    assert [s.id for s in validation] == ["r0", "r1"] and [s.id for s in train] == ["r2", "r3", "r4", "r5"]
    streamed = data.load(str(file), "train", holdout_rows=2, streaming=True)
    assert not streamed.random_access and [s.id for s in streamed] == [s.id for s in train]
    assert len(data.load(str(file), "train", holdout_rows=0, limit=3)) == 3
    mixture = data.load(f"{file},synthetic:ocr", "validation", holdout_rows=2)
    assert {s.meta["task"] for s in mixture} == {"<OD>", "<OCR>"}
    weighted = data.load(f"{file}=0.5,synthetic:ocr=0.5", "validation", holdout_rows=2, limit=4)
    assert not weighted.random_access and len(list(weighted)) == 4


def test_each_row_is_checked_against_its_own_declared_size_even_when_rows_share_a_page(tmp_path, tiny):
    """Two rows on one 100x80 page: the <OD> row drawn for 200x160 is skipped on the plain and the page path."""
    from florence_tune.batch.pages import PagePixels, PixelSpec, index_pages

    save_page(tmp_path / "p.png", size=(100, 80))
    rows = [{"image": "p.png", "task": "<CAPTION>", "caption": "a grey page"},
            {"image": "p.png", "width": 200, "height": 160, "boxes": [[0, 0, 100, 100]], "labels": ["x"]}]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dataset = data.load(str(tmp_path / "rows.jsonl"), "train", holdout_rows=0)
    pages = PagePixels(dataset, index_pages(dataset), PixelSpec.from_processor(tiny[1]))
    for view in (dataset, pages):
        assert view[0].target == "a grey page" and view[1] == Skipped("image_size_mismatch")


def test_an_object_without_a_box_is_dropped_alone_and_answer_is_read(tmp_path):
    save_page(tmp_path / "p.png")
    rows = [{"image": "p.png", "objects": [{"label": "stamp"}, {"label": "table", "bbox": [10, 10, 90, 60]}]},
            {"image": "p.png", "task": "<OCR>", "answer": "TOTAL 12"}]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dataset = data.load(str(tmp_path / "rows.jsonl"), "train", holdout_rows=0)
    assert dataset[0].meta["labels"] == ["table"] and dataset[1].target == "TOTAL 12"


def test_coco_split_files_named_as_coco_names_them(tmp_path):
    save_page(tmp_path / "images" / "a.png")
    for name in ("instances_train2017.json", "instances_val2017.json"):
        coco = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "x"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9]}]}
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / name).write_text(json.dumps(coco))
    assert len(data.load(str(tmp_path / "annotations"), "validation", holdout_rows=5)) == 1
    assert len(data.load(str(tmp_path / "annotations"), "train", holdout_rows=5)) == 1


def test_one_bad_annotation_costs_its_own_image_only_and_is_counted(tmp_path):
    names = ("ok.png", "short.png", "nan.png", "negative.png", "unknown.png", "nobox.png")
    for name in names:
        save_page(tmp_path / "images" / name)
    boxes = {"ok.png": [10, 10, 50, 20], "short.png": [10, 10, 50], "nan.png": [10, float("nan"), 50, 20],
             "negative.png": [100, 50, -40, 20], "unknown.png": [10, 10, 50, 20]}
    coco = {"images": [{"id": i, "file_name": name} for i, name in enumerate(names)],
            "categories": [{"id": 1, "name": "stamp"}],
            "annotations": [{"id": i, "image_id": i, "category_id": 9 if name == "unknown.png" else 1,
                             **({"bbox": boxes[name]} if name in boxes else {})} for i, name in enumerate(names)]}
    (tmp_path / "annotations.json").write_text(json.dumps(coco))  # NaN written as JSON's common extension
    dataset = data.load(str(tmp_path / "annotations.json"), "train", holdout_rows=0)
    items = [dataset[i] for i in range(len(dataset))]
    assert items[0].meta["boxes"] == [[10.0, 10.0, 60.0, 30.0]] and items[0].meta["labels"] == ["stamp"]
    assert items[1:] == [Skipped("bad_box"), Skipped("bad_box"), Skipped("bad_box"), Skipped("unknown_category"),
                         Skipped("bad_box")]


def test_box_lines_with_impossible_boxes_or_bytes_are_counted(tmp_path):
    save_page(tmp_path / "p.png")
    lines = [{"image": "p.png", "boxes": [[10, 10, 90, 60]], "labels": ["table"]},
             {"image": "p.png", "boxes": [[90, 10, 10, 60]], "labels": ["far corner first"]},
             {"image": "p.png", "boxes": [[10, 10, float("inf"), 60]], "labels": ["infinite"]}]
    with (tmp_path / "rows.jsonl").open("wb") as handle:
        handle.write("".join(json.dumps(line) + "\n" for line in lines).encode())
        handle.write(b'{"image": "p.png", "boxes": [[1, 1, 9, 9]], "labels": ["caf\xe9"]}\n')
    dataset = data.load(str(tmp_path / "rows.jsonl"), "train", holdout_rows=0)
    assert [dataset[i] if isinstance(dataset[i], Skipped) else "ok" for i in range(len(dataset))] == [
        "ok", Skipped("bad_box"), Skipped("bad_box"), Skipped("not_utf8")]


def test_location_tokens_outside_the_vocabulary_are_clamped_and_counted_wherever_user_text_enters(tmp_path, tiny):
    """maestro writes <loc_1000> for the far edge; it and other spellings that are not tokens become tokens."""
    _, processor = tiny
    save_page(tmp_path / "p.png")
    lines = [{"image": "p.png", "prefix": "<OD>", "suffix": "table<loc_10><loc_20><loc_1000><loc_1000>"},
             {"image": "p.png", "prefix": "<REGION_TO_CATEGORY><loc_0><loc_007><loc_1000><loc_999>",
              "suffix": "stamp"},
             {"image": "p.png", "prefix": "<OD>", "suffix": "table<loc_10><loc_20><loc_999><loc_999>"}]
    rows = [{"image": "p.png", "task": "<OCR_WITH_REGION>", "text": "TOTAL<loc_1><loc_2><loc_1200><loc_2>"
             "<loc_1200><loc_40><loc_1><loc_+40>"},
            {"image": "p.png", "boxes": [[0, 0, 200, 100]], "labels": ["page"]}]
    (tmp_path / "maestro.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    maestro = data.load(str(tmp_path / "maestro.jsonl"), "train", holdout_rows=0)
    task_rows = data.load(str(tmp_path / "rows.jsonl"), "train", holdout_rows=0)
    drafts = [maestro.text_item(i) for i in range(3)] + [task_rows.text_item(i) for i in range(2)]
    assert [d.target for d in drafts] == ["table<loc_10><loc_20><loc_999><loc_999>", "stamp",
                                          "table<loc_10><loc_20><loc_999><loc_999>",
                                          "TOTAL<loc_1><loc_2><loc_999><loc_2><loc_999><loc_40><loc_1><loc_40>",
                                          "page<loc_0><loc_0><loc_999><loc_999>"]
    assert drafts[1].prompt == "<REGION_TO_CATEGORY><loc_0><loc_7><loc_999><loc_999>"
    assert drafts[0].references == [drafts[0].target] and drafts[3].references == [drafts[3].target]
    assert [d.meta.get(ALTERED, []) for d in drafts] == [["clamped_locations"], ["clamped_locations"], [],
                                                          ["clamped_locations"], []]
    for draft in drafts:  # every <loc_N> left is one token of the vocabulary
        ids = processor.tokenizer(draft.prompt + draft.target, add_special_tokens=False)["input_ids"]
        tokens = processor.tokenizer.convert_ids_to_tokens(ids)
        assert draft.target.count("<loc_") + draft.prompt.count("<loc_") == sum(t.startswith("<loc_") for t in tokens)


def test_clamped_locations_reach_the_counters_on_the_plain_and_the_page_path(tmp_path, tiny):
    from florence_tune.batch.pages import PagePixels, PixelSpec, index_pages
    from florence_tune.reporting.inspection import Inspection

    save_page(tmp_path / "p.png")
    lines = [{"image": "p.png", "prefix": "<OD>", "suffix": "table<loc_10><loc_20><loc_1000><loc_1000>"},
             {"image": "p.png", "prefix": "<OD>", "suffix": "table<loc_10><loc_20><loc_999><loc_999>"}]
    (tmp_path / "maestro.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    dataset = data.load(str(tmp_path / "maestro.jsonl"), "train", holdout_rows=0)
    pages = PagePixels(dataset, index_pages(dataset), PixelSpec.from_processor(tiny[1]))
    for view in (dataset, pages):
        assert [view[i].meta.get(ALTERED) for i in range(2)] == [["clamped_locations"], []]
    inspection = Inspection(tiny[1].tokenizer, max_target_tokens=1024, sheet_samples=0)
    for item in dataset:
        inspection.add(item)
    assert inspection.summary()["altered"] == {"clamped_locations": 1}

"""The synthetic pages' regions: every layout records its objects, tight around what it drew."""

import numpy as np

from florence_tune.data import synthetic

EXPECTED = {
    "invoice": {"header", "table", "total"},
    "receipt": {"header", "table", "total"},
    "form": {"header", "field", "signature"},
    "table": {"header", "table"},
}


def test_every_layout_records_its_regions_inside_the_page():
    documents = synthetic.generate_documents("train", 40)
    assert {d.doc_type for d in documents} == set(EXPECTED)
    for document in documents:
        assert {label for label, _ in document.objects} == EXPECTED[document.doc_type]
        width, height = document.image.size
        for _, (x1, y1, x2, y2) in document.objects:
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_region_boxes_hold_ink_and_scale_with_the_page():
    document = synthetic.generate_documents("test", 1)[0]
    page = np.asarray(document.image).astype(int)
    background = np.median(page.reshape(-1, 3), axis=0)
    for _, (x1, y1, x2, y2) in document.objects:
        crop = page[y1:y2, x1:x2]
        assert (np.abs(crop - background).sum(axis=2) > 100).any(), "a region must contain something drawn"
    half = synthetic.generate_documents("test", 1, image_size=(192, 256))[0]
    for (label, box), (half_label, half_box) in zip(document.objects, half.objects, strict=True):
        assert label == half_label
        assert all(abs(a / 2 - b) <= 6 for a, b in zip(box, half_box, strict=True))


def test_documents_file_holds_one_row_per_page(tmp_path):
    import datasets

    root = synthetic.write_dataset(tmp_path / "synthetic", sizes={"validation": 3})
    rows = datasets.load_dataset("parquet", data_files=str(synthetic.documents_file(root, "validation")),
                                 split="train", cache_dir=str(tmp_path / "cache"))
    documents = synthetic.generate_documents("validation", 3)
    assert [r["docId"] for r in rows] == [d.doc_id for d in documents]
    assert [r["labels"] for r in rows] == [[label for label, _ in d.objects] for d in documents]
    assert rows[0]["boxes"] == [list(map(float, box)) for _, box in documents[0].objects]
    assert rows[0]["caption"] == documents[0].caption
    assert f'"version": "{synthetic.GENERATOR_VERSION}"' in (root / "READY").read_text()

"""The uint8 page path: same pixels and ids as the processor, every question once, bad pages skipped."""

import io

import datasets
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from florence_tune import data
from florence_tune.batch.collate import Collator, PixelCollator, encoder_positions
from florence_tune.batch.page_cache import build_cache
from florence_tune.batch.pages import PagePixels, PixelSpec, index_pages
from florence_tune.batch.samplers import PageBatchSampler, length_sorted_batches
from florence_tune.data import synthetic
from florence_tune.data.sample import Sample


def jpeg(image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return {"bytes": buffer.getvalue(), "path": None}


@pytest.fixture(scope="module")
def page_folder(tmp_path_factory):
    """Four 600x800 JPEG pages (3-4 questions each); the questions of page 2 point at a corrupt file."""
    records = []
    for document in synthetic.generate_documents("train", 4, seed=5, image_size=(600, 800)):
        image = jpeg(document.image)
        if document.doc_id % 4 == 2:
            image = {"bytes": image["bytes"][: len(image["bytes"]) // 3], "path": None}
        records += [{"questionId": document.doc_id * 10 + n, "question": q, "question_types": [family],
                     "image": image, "docId": document.doc_id, "answers": list(answers)}
                    for n, (family, q, answers) in enumerate(document.questions)]
    folder = tmp_path_factory.mktemp("pages")
    split = datasets.Dataset.from_list(records, features=synthetic.FEATURES)
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def pages(page_folder, tiny, tmp_path_factory):
    dataset = data.load(str(page_folder), "train")
    spec = PixelSpec.from_processor(tiny[1])
    index = index_pages(dataset)
    cache = build_cache(dataset, index, spec, tmp_path_factory.mktemp("cache"), workers=2)
    return dataset, spec, index, cache


def test_pages_are_grouped_by_content(pages):
    dataset, _, index, _ = pages
    doc_of = [s.meta["doc_id"] for s in dataset.text_samples()]
    assert index.n_pages == 4 and len(index.page_of) == len(dataset) == len(doc_of)
    assert all((index.page_of[i] == index.page_of[j]) == (doc_of[i] == doc_of[j])
               for i in range(len(doc_of)) for j in range(len(doc_of)))


def test_cached_and_decoded_pages_give_the_processors_pixels(pages, tiny):
    """The same Pillow resize on the same RGB page: identical uint8; float32 normalisation then differs from
    the processor's float64 rescale by a few ulps, hence 1e-5."""
    dataset, spec, index, cache = pages
    collator = Collator(tiny[1], max_positions=encoder_positions(tiny[0]))
    compared = 0
    for view in (PagePixels(dataset, index, spec, cache), PagePixels(dataset, index, spec)):
        for i in range(len(dataset)):
            plain = dataset[i]
            if not isinstance(plain, Sample):
                assert view[i].reason == plain.reason == "image_corrupt"
                continue
            expected = collator.encode([plain])["pixel_values"]
            assert (spec.normalise(view[i].pixels[None]) - expected).abs().max() < 1e-5
            compared += 1
    assert compared >= 2 * (len(dataset) - 4)


def test_draft_decoding_stays_within_a_grey_level_on_average(pages, tmp_path):
    """libjpeg's reduced-scale decoding filters differently: on average within 2 grey levels (documented)."""
    dataset, spec, index, cache = pages
    drafted = build_cache(dataset, index, spec, tmp_path, workers=1, draft=True)
    usable = [p for p in range(index.n_pages) if not cache.status[p]]
    diffs = [(drafted.pixels(p).float() - cache.pixels(p).float()).abs().mean().item() for p in usable]
    assert drafted.sizes == cache.sizes and max(diffs) < 2.0 and any(d > 0 for d in diffs)


def test_pixel_collator_gives_the_processors_ids_and_labels(tiny, page_image):
    model, processor = tiny
    spec = PixelSpec.from_processor(processor)
    pixels = torch.from_numpy(np.array(page_image.resize((spec.width, spec.height), resample=spec.resample)))
    samples = [Sample("1", page_image, "<VQA>What is the total?", "12.50"), Sample("2", page_image, "<OD>", "x"),
               Sample("3", page_image, "<VQA>" + "a long question " * 8, "a much longer answer")]
    plain = Collator(processor, max_positions=encoder_positions(model)).encode(samples)
    from florence_tune.batch.pages import PageSample

    paged = [PageSample(s.id, None, s.prompt, s.target, pixels=pixels.permute(2, 0, 1), page=7) for s in samples]
    fast = PixelCollator(processor, max_positions=encoder_positions(model)).encode(paged)
    for name in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(fast[name], plain[name]), name
    assert fast["pixel_values"].shape[0] == 1 and fast["page_index"].tolist() == [0, 0, 0]
    assert fast["page_ids"].tolist() == [7]


@settings(max_examples=60, deadline=None)
@given(pages=st.lists(st.integers(0, 12), min_size=1, max_size=80), batch_size=st.integers(1, 9),
       shuffle=st.booleans(), epoch=st.integers(0, 3))
def test_grouping_never_drops_or_repeats_a_question(pages, batch_size, shuffle, epoch):
    page_of = np.unique(np.array(pages), return_inverse=True)[1]  # page numbers 0..n-1, as index_pages gives
    sampler = PageBatchSampler(page_of, batch_size, shuffle=shuffle, seed=3)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(page_of))) and len(batches) == len(sampler)
    assert all(len(b) == batch_size for b in batches[:-1])
    runs = [page_of[i] for k, i in enumerate(flat) if k == 0 or page_of[flat[k - 1]] != page_of[i]]
    assert len(runs) == len(set(runs)), "a page's questions come together"


def test_length_sorted_batches_cover_everything_once():
    page_of = np.array([0, 1, 0, 2, 1, 2, 3])
    lengths = np.array([5, 40, 7, 20, 42, 21, 3])
    batches = length_sorted_batches(page_of, lengths, 3)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert batches[0][0] == 6  # the page with the shortest questions first


def test_a_page_file_changed_in_place_gets_a_new_key(tmp_path):
    """Pages given as file paths (JSON lines) are keyed by what the file is now, not by its name alone."""
    import builders

    builders.write_jsonl(tmp_path / "d.jsonl", [{"image": "1.png", "question": "q", "answers": ["a"]}])
    (tmp_path / "1.png").write_bytes(builders.png((200, 30, 30)))
    before = index_pages(data.load(str(tmp_path / "d.jsonl"), "train", holdout_rows=0)).keys
    (tmp_path / "1.png").write_bytes(builders.png((10, 200, 10), size=(50, 32)))
    assert index_pages(data.load(str(tmp_path / "d.jsonl"), "train", holdout_rows=0)).keys != before

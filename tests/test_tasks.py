"""Boxes → Florence-2 location tokens → the processor's post-processing → boxes, within one bin."""

import random

import pytest
import torch

from florence_tune import tasks

SIZES = [(384, 512), (1000, 1000), (37, 1999), (768, 768), (1, 1)]


def random_boxes(rng: random.Random, width: int, height: int, n: int) -> list[list[float]]:
    boxes = [[0, 0, width, height], [0, 0, 0, 0], [width, height, width, height]]  # the edges
    for _ in range(n):
        x1, x2 = sorted(rng.uniform(0, width) for _ in range(2))
        y1, y2 = sorted(rng.uniform(0, height) for _ in range(2))
        boxes.append([x1, y1, x2, y2])
    return boxes


@pytest.mark.parametrize("size", SIZES)
def test_our_quantiser_is_the_processors(tiny, size):
    _, processor = tiny
    boxes = random_boxes(random.Random(str(size)), *size, n=500)
    theirs = processor.post_processor.quantize(torch.tensor(boxes, dtype=torch.float64), size).tolist()
    ours = [[tasks.quantize(b[0], size[0]), tasks.quantize(b[1], size[1]), tasks.quantize(b[2], size[0]),
             tasks.quantize(b[3], size[1])] for b in boxes]
    assert ours == theirs


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_through_tokens_and_post_processing(tiny, size):
    _, processor = tiny
    width, height = size
    boxes = random_boxes(random.Random(size[0] * 7 + size[1]), width, height, n=40)
    labels = [f"thing {i % 3}" for i in range(len(boxes))]
    target = tasks.encode_objects(labels, boxes, size)
    assert "<loc_1000>" not in target
    # What the model would generate: decoder start, <s>, the target, </s>, then padding.
    ids = processor.tokenizer("<s>" + target + "</s>", add_special_tokens=False)["input_ids"]
    assert processor.tokenizer.unk_token_id not in ids, "every location token must be in the vocabulary"
    raw = processor.batch_decode([[processor.tokenizer.eos_token_id, *ids, processor.tokenizer.pad_token_id]],
                                 skip_special_tokens=False)[0]
    parsed = tasks.parse_boxes(processor, tasks.strip_markers(raw), tasks.OD, size)
    assert parsed["labels"] == labels
    # Half a bin from the bin centre, plus the processor's truncation to whole pixels.
    tolerance = [width / 1000 / 2 + 1, height / 1000 / 2 + 1] * 2
    for box, back in zip(boxes, parsed["boxes"], strict=True):
        for value, decoded, allowed in zip(box, back, tolerance, strict=True):
            assert abs(value - decoded) <= allowed + 1e-9, (box, back)


def test_edges_land_in_the_first_and_last_bin():
    assert tasks.box_tokens([0, 0, 384, 512], (384, 512)) == "<loc_0><loc_0><loc_999><loc_999>"
    assert tasks.quantize(-5, 100) == 0 and tasks.quantize(1e9, 100) == 999


def test_bare_token_prompts_are_what_the_processor_accepts(tiny):
    _, processor = tiny
    assert tasks.prompt_for(tasks.OD, "ignored") == "<OD>"
    assert tasks.prompt_for(tasks.GROUNDING, "a red table") == "<CAPTION_TO_PHRASE_GROUNDING>a red table"
    assert tasks.prompt_for(tasks.VQA, "What?") == "<VQA>What?"
    assert processor._construct_prompts(["<OD>"]) == ["Locate the objects with category name in the image."]
    with pytest.raises(ValueError):  # why <OD> prompts must be exactly the token
        processor._construct_prompts(["<OD>tables"])


def test_labels_and_boxes_are_cleaned():
    assert tasks.clean_label("  a <b>  table ") == "a b table"
    assert tasks.clip_box([-10, 5, 500, 600], (384, 512)) == [0.0, 5.0, 384.0, 512.0]
    assert tasks.clip_box([30, 40, 10, 20], (100, 100)) == [10.0, 20.0, 30.0, 40.0]
    assert tasks.clip_box([500, 5, 600, 50], (384, 512)) is None


def test_grounding_answers_parse_per_phrase(tiny):
    _, processor = tiny
    boxes = [[10, 20, 110, 80], [200, 40, 380, 500]]
    target = tasks.encode_objects(["a red stamp", "the total"], boxes, (384, 512))
    parsed = tasks.parse_boxes(processor, target, tasks.GROUNDING, (384, 512))
    assert parsed["labels"] == ["a red stamp", "the total"]
    assert all(abs(a - b) <= 1.5 for box, back in zip(boxes, parsed["boxes"], strict=True)
               for a, b in zip(box, back, strict=True))

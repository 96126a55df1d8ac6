"""Boxes → Florence-2 location tokens → the processor's post-processing → boxes, within one bin."""

import random
import re

import numpy as np
import pytest
import torch

from florence_tune import data, tasks
from florence_tune.data.adapters.tasks import TASK_NAMES
from florence_tune.data.sample import Sample
from florence_tune.evaluation import records, task_metrics

SIZES = [(384, 512), (1000, 1000), (37, 1999), (768, 768), (1, 1)]
SIDES = [1, 7, 37, 384, 480, 512, 640, 768, 999, 1000, 1001, 1700, 1999, 2200, 3000, 4000]


def exact_bin(value, size: int) -> int:
    """floor(value * 1000 / size) in integers, from the value's exact binary fraction, clamped to 0..999."""
    numerator, denominator = float(value).as_integer_ratio()
    return min(max(numerator * tasks.BINS // (denominator * size), 0), tasks.BINS - 1)


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


def test_the_quantiser_is_exact_on_integer_coordinates():
    for size in SIDES:
        assert [tasks.quantize(v, size) for v in range(size + 1)] == [min(v * 1000 // size, 999)
                                                                      for v in range(size + 1)], size


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_quantiser_is_exact_on_floats_at_and_beside_every_bin_edge(dtype):
    for size in SIDES:
        edges = np.array([k * size / tasks.BINS for k in range(tasks.BINS + 1)], dtype=dtype)
        values = np.concatenate([edges, np.nextafter(edges, dtype(-np.inf)), np.nextafter(edges, dtype(np.inf))])
        assert [tasks.quantize(v, size) for v in values] == [exact_bin(v, size) for v in values], size


def test_boxes_given_as_float32_tensors_are_quantised_exactly():
    size = (1700, 2200)
    edges = torch.tensor([[k * 1.7, k * 2.2, k * 1.7, k * 2.2] for k in range(1000)], dtype=torch.float32)
    for box in torch.cat([edges, torch.nextafter(edges, torch.tensor(0.0))]):
        expected = [exact_bin(box[0], 1700), exact_bin(box[1], 2200), exact_bin(box[2], 1700),
                    exact_bin(box[3], 2200)]
        assert tasks.box_tokens(box, size) == "".join(f"<loc_{b}>" for b in expected), box.tolist()


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
    parsed = tasks.parse_answer(processor, tasks.strip_markers(raw), tasks.OD, size)
    assert parsed["labels"] == labels
    # Each coordinate comes back at the centre of its bin: within half a bin of where it was.
    tolerance = [width / 1000 / 2, height / 1000 / 2] * 2
    for box, back in zip(boxes, parsed["boxes"], strict=True):
        for value, decoded, allowed in zip(box, back, tolerance, strict=True):
            assert abs(value - decoded) <= allowed + 1e-9, (box, back)


@pytest.mark.parametrize("task", [tasks.OD, tasks.GROUNDING, tasks.DENSE_REGION_CAPTION])
def test_labels_keep_every_character_through_tokens_and_post_processing(tiny, task):
    _, processor = tiny
    labels = ["café", "straße", "日本語の表", "a \\ b", "\\00e9 literal", "table"]
    target = tasks.encode_objects(labels, [[10, 10, 50, 40]] * len(labels), (384, 512))
    ids = processor.tokenizer("<s>" + target + "</s>", add_special_tokens=False)["input_ids"]
    raw = processor.batch_decode([ids], skip_special_tokens=False)[0]
    assert tasks.parse_answer(processor, tasks.strip_markers(raw), task, (384, 512))["labels"] == labels
    spaced = "\u00a0café\u3000<loc_1><loc_2><loc_3><loc_4>"  # the processor strips Unicode spaces, we keep that
    assert tasks.parse_answer(processor, spaced, task, (384, 512))["labels"] == ["café"]


def test_edges_land_in_the_first_and_last_bin():
    assert tasks.box_tokens([0, 0, 384, 512], (384, 512)) == "<loc_0><loc_0><loc_999><loc_999>"
    assert tasks.quantize(-5, 100) == 0 and tasks.quantize(1e9, 100) == 999
    assert tasks.dequantize(0, 100) == 0.05 and tasks.dequantize(1000, 100) == tasks.dequantize(999, 100) == 99.95


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
    parsed = tasks.parse_answer(processor, target, tasks.GROUNDING, (384, 512))
    assert parsed["labels"] == ["a red stamp", "the total"]
    assert all(abs(a - b) <= 512 / 1000 / 2 for box, back in zip(boxes, parsed["boxes"], strict=True)
               for a, b in zip(box, back, strict=True))


# --- every task: target → processor → score ---------------------------------------------------------------

# Each task once, under its own name (synthetic:<name>), with the number a perfect answer scores by each metric.
EVERY_TASK = sorted({task for task in TASK_NAMES.values()})
PERFECT = {"cer": 0.0, "wer": 0.0, "region_cer": 0.0}


def _shift_locations(text: str, by: int = 120) -> str:
    return re.sub(r"<loc_(\d+)>", lambda m: f"<loc_{min(int(m.group(1)) + by, 999)}>", text)


def _wrong(task: str, target: str) -> str:
    """A known wrong answer: every location moved 120 bins (answers with locations), else half the text."""
    if tasks.TASKS[task].answer in ("boxes", "polygons", "quads"):
        return _shift_locations(target)
    return target[: len(target) // 2]


@pytest.mark.parametrize("task", EVERY_TASK)
def test_every_task_parses_its_own_target_back_and_scores_it_perfect_and_a_wrong_answer_worse(task, tiny):
    """The synthetic pages' targets in the checkpoints' format, read back by the processor's post-processing:
    the target as a prediction scores perfectly by every metric of its task, a wrong one worse by the first."""
    _, processor = tiny
    name = next(n for n, t in TASK_NAMES.items() if t == task and n == t.strip("<>").lower())
    dataset = data.load(f"synthetic:{name}", "validation", limit=6)
    samples = [dataset.text_item(i) for i in range(len(dataset))]
    assert samples and all(isinstance(s, Sample) for s in samples)
    kind = tasks.TASKS[task].answer
    for sample in samples:
        parsed = tasks.parse_answer(processor, sample.target, task, tuple(sample.meta.get("image_size") or (384, 512)))
        if kind in ("boxes", "polygons", "quads"):  # the processor finds every region the target holds
            found = parsed[{"boxes": "boxes", "polygons": "polygons", "quads": "quads"}[kind]]
            assert found and len(found) == len(parsed["labels"])
        else:
            assert parsed == tasks.answer_text(task, sample.target) and "<loc_" not in parsed
    exact = records.summarise([records.score_record(s, s.target, processor) for s in samples])
    names = task_metrics.defaults_for(task)
    for metric in names:
        assert exact[metric] == pytest.approx(PERFECT.get(metric, 1.0)), metric
    wrong = records.summarise([records.score_record(s, _wrong(task, s.target), processor) for s in samples])
    first = names[0]
    if first in task_metrics.LOWER_IS_BETTER:
        assert wrong[first] > exact[first]
    else:
        assert wrong[first] < exact[first] and wrong[first] < 1.0

"""Metrics chosen by task: CER/WER for OCR, BLEU for captions, COCO mAP over the whole set for boxes."""

import json
import random

import pytest
from PIL import Image

from florence_tune import data, tasks
from florence_tune.errors import UsageError
from florence_tune.evaluation import records, region_metrics, task_metrics

# (page size, box sides in pixels): small boxes on pages of every shape, each side at least one bin wide
SMALL_BOXES = [((1700, 2200), (8, 20)), ((640, 480), (10, 30)), ((4000, 3000), (12, 40)), ((37, 1999), (5, 30))]


def text(task, prediction, *references, group="all"):
    return {"task": task, "prediction": prediction, "references": list(references), "group": group}


def boxes(gt, predicted, size=(100, 100)):
    return {"task": "<OD>", "prediction": "", "references": [""], "group": "<OD>", "image_size": list(size),
            "reference_boxes": [b for _, b in gt], "reference_labels": [label for label, _ in gt],
            "predicted_boxes": [b for _, b in predicted], "predicted_labels": [label for label, _ in predicted]}


def test_character_and_word_error_rates_on_hand_made_pages():
    one = text("<OCR>", "TOTAL 12.5O", "TOTAL 12.50")  # one substituted character, one wrong word
    two = text("<OCR>", "Paid in full", "Paid in full")
    assert task_metrics.character_error_rate([one]) == pytest.approx(1 / 11)
    assert task_metrics.word_error_rate([one]) == pytest.approx(1 / 2)
    # corpus rates: all edits over all reference characters / words, not a mean of per-page rates
    assert task_metrics.character_error_rate([one, two]) == pytest.approx(1 / 23)
    assert task_metrics.word_error_rate([one, two]) == pytest.approx(1 / 5)
    assert task_metrics.character_error_rate([text("<OCR>", "abc", "")]) is None  # nothing to score


def test_bleu_rewards_closer_captions():
    reference = "a receipt on blue paper with a table"
    perfect = task_metrics.bleu([text("<CAPTION>", reference, reference)])
    close = task_metrics.bleu([text("<CAPTION>", "a receipt on blue paper with a list", reference)])
    far = task_metrics.bleu([text("<CAPTION>", "an invoice on red paper", reference)])
    assert perfect == pytest.approx(1.0) and 0.0 <= far < close < 1.0
    # several references: matching any of them is enough
    assert task_metrics.bleu([text("<CAPTION>", reference, "something else entirely", reference)]) == \
        pytest.approx(1.0)


def test_map_is_one_coco_evaluation_over_the_whole_set():
    a = boxes([("x", [0, 0, 50, 50])], [("x", [60, 60, 90, 90]), ("x", [0, 0, 50, 50])])
    b = boxes([("x", [0, 0, 50, 50]), ("x", [50, 50, 100, 100])], [("x", [0, 0, 50, 50])])
    whole = region_metrics.detection_map([a, b])
    per_batch = (region_metrics.detection_map([a])["map_50"] + region_metrics.detection_map([b])["map_50"]) / 2
    assert whole["map_50"] == pytest.approx(0.4422, abs=1e-3) and abs(whole["map_50"] - per_batch) > 0.05
    assert records.summarise([a, b])["map_50"] == whole["map_50"]
    perfect = boxes([("x", [0, 0, 50, 50]), ("y", [10, 60, 90, 95])], [("y", [10, 60, 90, 95]), ("x", [0, 0, 50, 50])])
    assert region_metrics.detection_map([perfect]) == {"map": pytest.approx(1.0), "map_50": pytest.approx(1.0)}
    assert region_metrics.detection_map([boxes([("x", [0, 0, 50, 50])], [])]) == {"map": 0.0, "map_50": 0.0}
    wrong_label = boxes([("x", [0, 0, 50, 50])], [("y", [0, 0, 50, 50])])
    assert region_metrics.detection_map([wrong_label])["map_50"] == 0.0


def test_metrics_follow_the_task_and_vqa_output_is_unchanged():
    vqa = [text("<VQA>", "red", "red", group="page_colour"), text("<VQA>", "blu", "blue", group="page_colour")]
    summary = records.summarise(vqa)
    assert set(summary) == {"anls", "exact_match", "n", "anls_by_group"}
    assert summary["exact_match"] == 0.5 and summary["n"] == 2
    assert set(records.summarise([text("<OCR>", "ab", "ab")])) == {"cer", "wer", "n"}
    assert set(records.summarise([text("<CAPTION>", "a b c d", "a b c d")])) == {"bleu", "n"}
    assert set(records.summarise([boxes([("x", [0, 0, 5, 5])], [])])) == {"map", "map_50", "n"}
    # a mixed set scores each task with its own metrics, over its own records only
    mixed = records.summarise([*vqa, text("<OCR>", "zzz", "TOTAL"), boxes([("x", [0, 0, 5, 5])], [])])
    assert mixed["anls"] == summary["anls"] and mixed["n"] == 4 and {"cer", "wer", "map", "map_50"} <= set(mixed)


def test_an_explicit_list_replaces_the_choice():
    found = [text("<VQA>", "red", "red"), text("<OCR>", "TOTAL", "TOTAL 1")]
    summary = records.summarise(found, task_metrics.parse_names("cer, anls"))
    assert set(summary) == {"cer", "anls", "n", "anls_by_group"}
    assert summary["anls"] == pytest.approx((1.0 + task_metrics.anls([found[1]])) / 2)  # over every record
    assert records.summarise([], None) == {"anls": 0.0, "exact_match": 0.0, "n": 0, "anls_by_group": {}}
    assert task_metrics.parse_names("") is None
    with pytest.raises(UsageError, match="did you mean 'map_50'"):
        task_metrics.parse_names("anls,map50")


def test_box_answers_spelt_in_the_prompt_and_target_are_scored_too(tiny, page_image):
    """Rows that carry <OD> only in their prompt and target (maestro's JSON lines) still get mAP."""
    from florence_tune.data.sample import Sample

    _, processor = tiny
    target = "stamp<loc_100><loc_100><loc_500><loc_400>"
    sample = Sample("7", page_image, "<OD>", target, [target], {})
    record = records.score_record(sample, target, processor)
    assert record["task"] == "<OD>" and record["reference_labels"] == ["stamp"]
    assert record["predicted_boxes"] == record["reference_boxes"]
    assert records.summarise([record])["map_50"] == pytest.approx(1.0)
    question = Sample("8", page_image, "<VQA>What is it?", "a", ["a"], {})
    assert records.score_record(question, "a", processor)["task"] == "<VQA>"


def test_labels_outside_ascii_are_told_apart(tiny):
    """A perfect answer keeps its labels; labels that differ only outside ASCII are different classes."""
    from florence_tune.data.sample import Sample

    _, processor = tiny
    labels, found = ["café", "straße", "東京", "大阪"], [[10, 10, 60, 40], [100, 50, 180, 120], [5, 200, 90, 260],
                                                       [200, 300, 300, 400]]
    target = tasks.encode_objects(labels, found, (384, 512))
    sample = Sample("u", None, "<OD>", target, [target], {"task": "<OD>", "image_size": [384, 512]})
    perfect = records.score_record(sample, target, processor)
    assert perfect["predicted_labels"] == perfect["reference_labels"] == labels
    assert records.summarise([perfect])["map"] == pytest.approx(1.0)
    swapped = tasks.encode_objects(["café", "straße", "大阪", "東京"], found, (384, 512))
    assert records.summarise([records.score_record(sample, swapped, processor)])["map"] == pytest.approx(0.5)


def small_box_rows(size, sides, seed, pages=4, per_page=12):
    rng = random.Random(seed)
    width, height = size
    for _ in range(pages):
        found = []
        for _ in range(per_page):
            w, h = rng.uniform(*sides), rng.uniform(*sides)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            found.append((rng.choice(["header", "table", "stamp"]), [x, y, x + w, y + h]))
        yield [label for label, _ in found], [box for _, box in found]


@pytest.mark.parametrize(("size", "sides"), SMALL_BOXES)
def test_the_training_target_as_prediction_scores_one_from_pixel_boxes_and_from_location_tokens(
        tiny, tmp_path, size, sides):
    """Pixel boxes (JSON lines, COCO) and maestro's <loc_N> targets give the same records, and the target scores 1."""
    _, processor = tiny
    Image.new("1", size).save(tmp_path / "page.png")
    pixel_rows = [{"image": "page.png", "boxes": found, "labels": labels}
                  for labels, found in small_box_rows(size, sides, seed=str(size))]
    (tmp_path / "pixels.jsonl").write_text("".join(json.dumps(row) + "\n" for row in pixel_rows))
    pixels = data.load(str(tmp_path / "pixels.jsonl"), "train", holdout_rows=0)
    token_rows = [{"image": "page.png", "prefix": "<OD>", "suffix": sample.target} for sample in pixels]
    (tmp_path / "tokens.jsonl").write_text("".join(json.dumps(row) + "\n" for row in token_rows))
    tokens = data.load(str(tmp_path / "tokens.jsonl"), "train", holdout_rows=0)
    scored = {name: [records.score_record(s, s.target, processor) for s in dataset]
              for name, dataset in (("pixels", pixels), ("tokens", tokens))}
    for name, found in scored.items():
        summary = records.summarise(found)
        assert (summary["map"], summary["map_50"]) == (pytest.approx(1.0), pytest.approx(1.0)), name
    for from_pixels, from_tokens in zip(scored["pixels"], scored["tokens"], strict=True):
        assert from_pixels["reference_boxes"] == from_tokens["reference_boxes"] == from_tokens["predicted_boxes"]
        assert from_pixels["reference_labels"] == from_tokens["reference_labels"]

"""Metrics chosen by task, computed over a whole evaluation set from its prediction records.

    VQA                       anls, exact_match   (metrics.py: the official DocVQA ANLS)
    <OCR>                     cer, wer            (torchmetrics: corpus character / word error rate)
    <CAPTION> and variants    bleu                (torchmetrics' SacreBLEU: corpus BLEU-4, 13a tokens)
    <OD>, phrase grounding…   map, map_50         (pycocotools COCOeval: mAP@[.5:.95] and mAP@.5)

``florence-tune evaluate --metrics cer,wer`` (and ``train --metrics``) replaces the choice. By
default each metric is computed over the records of the tasks that select it, so a mixed set does
not score boxes with ANLS; an explicit list scores every record the metric can read.

Detection mAP is one COCO evaluation over every record at once (under torchrun, the records of all
ranks, which ``evaluation.predict_dataset`` has gathered), never a mean of per-batch numbers.
Florence-2 gives no confidence for a box, so every predicted box scores 1.0 (COCOeval keeps
generation order among equal scores). Reference and predicted boxes alike are read from their text, each
coordinate at the centre of its bin (``record_fields``): the 1000-bin grid's own error is not counted.
"""

from __future__ import annotations

import contextlib
import difflib
import io
from collections.abc import Callable, Iterable
from typing import Any

from florence_tune import tasks
from florence_tune.errors import UsageError
from florence_tune.evaluation import metrics

TEXT_DEFAULT = ("anls", "exact_match")
DEFAULTS: dict[str, tuple[str, ...]] = {
    tasks.VQA: TEXT_DEFAULT,
    tasks.OCR: ("cer", "wer"),
    **{task: ("bleu",) for task in tasks.CAPTION_TASKS},
    **{task: ("map", "map_50") for task in tasks.BOX_TASKS},
}
NAMES = ("anls", "exact_match", "cer", "wer", "bleu", "map", "map_50")
BOX_METRICS = frozenset({"map", "map_50"})
LOWER_IS_BETTER = frozenset({"cer", "wer", "loss"})  # the evaluation loss is ranked like a metric


def parse_names(text: str | None) -> list[str] | None:
    """``"anls,cer"`` → ``["anls", "cer"]``; empty → None (choose by task). Unknown names are usage errors."""
    if not text or not str(text).strip():
        return None
    names = [name.strip().lower() for name in str(text).split(",") if name.strip()]
    for name in names:
        if name not in NAMES:
            close = difflib.get_close_matches(name, NAMES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UsageError(f"unknown metric '{name}'{hint}; choose from {', '.join(NAMES)}")
    return list(dict.fromkeys(names))


def defaults_for(task: str) -> tuple[str, ...]:
    return DEFAULTS.get(task, TEXT_DEFAULT)


def select(records: list[dict[str, Any]], override: list[str] | None) -> dict[str, list[dict[str, Any]]]:
    """Which records each metric is computed over (metrics in a stable order)."""
    if override:
        return {name: _scorable(name, records) for name in override}
    if not records:  # an empty evaluation still reports the VQA numbers (0.0), as it always has
        return {name: [] for name in TEXT_DEFAULT}
    chosen: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        for name in defaults_for(record.get("task") or tasks.VQA):
            chosen.setdefault(name, []).append(record)
    return {name: chosen[name] for name in NAMES if name in chosen}


def _scorable(name: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if name in BOX_METRICS:
        return [r for r in records if "reference_boxes" in r]
    return records


def compute(records: list[dict[str, Any]], override: list[str] | None = None) -> dict[str, float | None]:
    """Every selected metric over its records; None where a metric had nothing to score."""
    results: dict[str, float | None] = {}
    selected = select(records, override)
    if BOX_METRICS & selected.keys():
        box_records = selected.get("map") or selected.get("map_50") or []
        results.update({k: v for k, v in detection_map(box_records).items() if k in selected})
    for name, members in selected.items():
        if name not in BOX_METRICS:
            results[name] = TEXT_METRICS[name](members)
    return {name: results[name] for name in selected}


def record_fields(sample, prediction: str, processor=None) -> dict[str, Any]:
    """What a prediction record adds for its task: the task, and for box tasks the predicted and
    reference boxes in pixels and the image size.

    Both sides are read from text the same way (``tasks.parse_boxes``): the prediction, and the sample's
    target as the reference, whether the target was built from pixel boxes (COCO, JSON lines) or written
    in location tokens (maestro). So boxes are scored where the model can place them, at bin centres, and
    a prediction equal to its training target scores 1.0 at any box and image size."""
    task = tasks.task_of(sample.meta, sample.prompt)
    fields: dict[str, Any] = {"task": task}
    if task not in tasks.BOX_TASKS or processor is None:
        return fields
    image_size = tuple(sample.meta.get("image_size") or sample.image.size)
    predicted = tasks.parse_boxes(processor, prediction, task, image_size)
    reference = tasks.parse_boxes(processor, sample.target, task, image_size)
    fields.update({
        "image_size": list(image_size),
        "predicted_boxes": predicted["boxes"],
        "predicted_labels": predicted["labels"],
        "reference_boxes": reference["boxes"],
        "reference_labels": reference["labels"],
    })
    return fields


# --- text metrics -------------------------------------------------------------------------------


def _pairs(records: Iterable[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(predictions, references) of the records that have at least one reference."""
    predictions, references = [], []
    for record in records:
        refs = [str(r) for r in (record.get("references") or []) if str(r).strip()]
        if refs:
            predictions.append(str(record.get("prediction") or ""))
            references.append(refs)
    return predictions, references


def anls(records: list[dict[str, Any]]) -> float:
    return metrics.aggregate(metrics.anls_score(r.get("prediction"), r.get("references")) for r in records)


def exact_match(records: list[dict[str, Any]]) -> float:
    return metrics.aggregate(metrics.exact_match(r.get("prediction"), r.get("references")) for r in records)


def character_error_rate(records: list[dict[str, Any]]) -> float | None:
    """Corpus CER: character edits over reference characters, against each record's first reference."""
    from torchmetrics.functional.text import char_error_rate

    predictions, references = _pairs(records)
    return float(char_error_rate(predictions, [refs[0] for refs in references])) if predictions else None


def word_error_rate(records: list[dict[str, Any]]) -> float | None:
    """Corpus WER: word edits over reference words, against each record's first reference."""
    from torchmetrics.functional.text import word_error_rate as wer

    predictions, references = _pairs(records)
    return float(wer(predictions, [refs[0] for refs in references])) if predictions else None


def bleu(records: list[dict[str, Any]]) -> float | None:
    """Corpus BLEU-4 (0..1) with SacreBLEU's 13a tokenisation, every reference of a record counted."""
    from torchmetrics.functional.text import sacre_bleu_score

    predictions, references = _pairs(records)
    if not predictions:
        return None
    # SacreBLEU wants the same number of references per sentence; repeating one changes nothing.
    width = max(len(refs) for refs in references)
    padded = [refs + [refs[-1]] * (width - len(refs)) for refs in references]
    return float(sacre_bleu_score(predictions, padded, n_gram=4, tokenize="13a"))


TEXT_METRICS: dict[str, Callable[[list[dict[str, Any]]], float | None]] = {
    "anls": anls, "exact_match": exact_match, "cer": character_error_rate, "wer": word_error_rate, "bleu": bleu,
}


# --- detection ----------------------------------------------------------------------------------


def detection_map(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """COCO mAP@[.5:.95] and mAP@.5 over all records with reference boxes (None when there are none)."""
    ground_truth, detections = _coco_dicts(records)
    if not ground_truth["annotations"]:
        return {"map": None, "map_50": None}
    if not detections:
        return {"map": 0.0, "map_50": 0.0}
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress on stdout
        coco = COCO()
        coco.dataset = ground_truth
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(detections), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"map": max(float(evaluator.stats[0]), 0.0), "map_50": max(float(evaluator.stats[1]), 0.0)}


def _coco_dicts(records: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ground truth in COCO's dataset layout and detections in its result layout (xywh boxes)."""
    names = sorted({str(label) for r in records for label in [*r.get("reference_labels", []),
                                                                 *r.get("predicted_labels", [])]})
    category = {name: index + 1 for index, name in enumerate(names)}
    images, annotations, detections = [], [], []
    for image_id, record in enumerate(records, start=1):
        width, height = record.get("image_size") or (0, 0)
        images.append({"id": image_id, "width": width, "height": height})
        for box, label in zip(record.get("reference_boxes", []), record.get("reference_labels", []), strict=True):
            xywh = _xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category[str(label)],
                                "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0})
        for box, label in zip(record.get("predicted_boxes", []), record.get("predicted_labels", []), strict=True):
            detections.append({"image_id": image_id, "category_id": category[str(label)], "bbox": _xywh(box),
                               "score": 1.0})
    ground_truth = {"images": images, "annotations": annotations,
                    "categories": [{"id": i, "name": n} for n, i in category.items()]}
    return ground_truth, detections


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, max(x2 - x1, 0.0), max(y2 - y1, 0.0)]

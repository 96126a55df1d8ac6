"""Metrics chosen by task, computed over a whole evaluation set from its prediction records.

    VQA                          anls, exact_match, and each answer by its source's metric (answer_metrics.py)
    <OCR>, <REGION_TO_OCR>       cer, wer            (torchmetrics: corpus character / word error rate)
    captions, region description bleu                (torchmetrics' SacreBLEU: corpus BLEU-4, 13a tokens)
    <REGION_TO_CATEGORY>         exact_match         (the category named, after normalisation)
    <OD>, grounding, dense
    captions, open vocabulary    map, map_50         (pycocotools COCOeval "bbox": mAP@[.5:.95] and mAP@.5)
    <REGION_PROPOSAL>            recall_50           (COCOeval, class-agnostic recall at IoU 0.5)
    segmentation                 mask_map, mask_map_50, mean_iou           (COCOeval "segm"; union-mask IoU)
    <OCR_WITH_REGION>            region_f1, region_precision, region_recall, region_cer  (lines at IoU 0.5)
    <EXTRACTION>                 field_f1, field_precision, field_recall, field_anls, json_valid

``florence-tune evaluate --metrics cer,wer`` (and ``train --metrics``) replaces the choice. By
default each metric is computed over the records of the tasks that select it, so a mixed set does
not score boxes with ANLS; an explicit list scores every record the metric can read.

Every metric is computed over all records at once (under torchrun, the records of all ranks, which
``evaluation.predict_dataset`` has gathered), never a mean of per-batch numbers. Answers with locations
are read from their text on both sides, the prediction and the sample's target, each coordinate at the
centre of its bin (``record_fields``): the 1000-bin grid's own error is not counted.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from florence_tune import tasks
from florence_tune.errors import UsageError
from florence_tune.evaluation import metrics, region_metrics

TEXT_DEFAULT = ("anls", "exact_match")
SEGMENTATION = ("mask_map", "mask_map_50", "mean_iou")
OCR_REGIONS = ("region_f1", "region_precision", "region_recall", "region_cer")
EXTRACTION = ("field_f1", "field_precision", "field_recall", "field_anls", "json_valid")
DEFAULTS: dict[str, tuple[str, ...]] = {
    tasks.VQA: TEXT_DEFAULT,
    tasks.OCR: ("cer", "wer"),
    tasks.REGION_TO_OCR: ("cer", "wer"),
    **{task: ("bleu",) for task in tasks.CAPTION_TASKS},
    tasks.REGION_TO_DESCRIPTION: ("bleu",),
    tasks.REGION_TO_CATEGORY: ("exact_match",),
    **{task: ("map", "map_50") for task in tasks.BOX_TASKS},
    tasks.REGION_PROPOSAL: ("recall_50",),
    **{task: SEGMENTATION for task in tasks.POLYGON_TASKS},
    tasks.OCR_WITH_REGION: OCR_REGIONS,
    tasks.EXTRACTION: EXTRACTION,
}
# Metrics computed together over one set of records, and the record fields they read.
GROUPS: dict[tuple[str, ...], tuple[Callable[[list[dict[str, Any]]], dict[str, float | None]], str]] = {
    ("map", "map_50"): (region_metrics.detection_map, "reference_boxes"),
    ("recall_50",): (region_metrics.proposal_recall, "reference_boxes"),
    SEGMENTATION: (region_metrics.segmentation_scores, "reference_polygons"),
    OCR_REGIONS: (region_metrics.ocr_region_scores, "reference_quads"),
    EXTRACTION: (region_metrics.extraction_scores, "references"),
}
NAMES = ("anls", "exact_match", "cer", "wer", "bleu", *(name for group in GROUPS for name in group))
# Every number an evaluation reports: the metrics, and the VQA questions' mean by their sources' own metrics.
REPORTED = (*NAMES, "source_score")
LOWER_IS_BETTER = frozenset({"cer", "wer", "region_cer", "loss"})  # the evaluation loss is ranked like a metric


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


def _group_of(name: str) -> tuple[str, ...] | None:
    return next((group for group in GROUPS if name in group), None)


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
    group = _group_of(name)
    if group is None:
        return records
    return [r for r in records if GROUPS[group][1] in r]


def compute(records: list[dict[str, Any]], override: list[str] | None = None) -> dict[str, float | None]:
    """Every selected metric over its records; None where a metric had nothing to score."""
    results: dict[str, float | None] = {}
    selected = select(records, override)
    for group, (scores, _) in GROUPS.items():
        wanted = [name for name in group if name in selected]
        if wanted:
            results.update({k: v for k, v in scores(selected[wanted[0]]).items() if k in wanted})
    for name, members in selected.items():
        if _group_of(name) is None:
            results[name] = TEXT_METRICS[name](members)
    return {name: results[name] for name in selected}


def record_score(record: dict[str, Any]) -> float:
    """One record's own number, higher is better, to rank records by (the report's worst pages): a question
    by its source's metric; any other task by its first metric over that record alone (an error rate
    negated); 0.0 where there is nothing to score."""
    if "score" in record:
        return float(record["score"])
    name = defaults_for(record.get("task") or tasks.VQA)[0]
    group = _group_of(name)
    value = GROUPS[group][0]([record]).get(name) if group else TEXT_METRICS[name]([record])
    if value is None:
        return 0.0
    return -float(value) if name in LOWER_IS_BETTER else float(value)


def metrics_by_task(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each task's default metrics over its own records, and their count (the report's table per task)."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_task.setdefault(record.get("task") or tasks.VQA, []).append(record)
    return {task: {**compute(members), "n": len(members)} for task, members in by_task.items()}


# What a prediction record holds of a parsed answer, by answer kind (tasks.Task.answer).
_LOCATED = {"boxes": "boxes", "polygons": "polygons", "quads": "quads"}


def record_fields(sample, prediction: str, processor=None) -> dict[str, Any]:
    """What a prediction record adds for its task: the task; for answers with locations the predicted and
    reference regions in pixels (``predicted_boxes`` / ``_polygons`` / ``_quads``, their labels) and the
    image size; for a region task answered in words, the words (the echoed box dropped) as ``prediction``
    and ``references``, the text as generated kept as ``generated``.

    Both sides are read from text the same way (``tasks.parse_answer``): the prediction, and the sample's
    target as the reference, whether the target was built from pixel coordinates (COCO, JSON lines) or
    written in location tokens (maestro). So regions are scored where the model can place them, at bin
    centres, and a prediction equal to its training target scores 1.0 at any size."""
    task = tasks.task_of(sample.meta, sample.prompt)
    fields: dict[str, Any] = {"task": task}
    if sample.meta.get("region") is not None:  # a region task's prompt box, which the report draws
        fields["region"] = list(sample.meta["region"])
    kind = tasks.TASKS.get(task, tasks.TASKS[tasks.VQA]).answer
    if kind == "region_text":
        return {**fields, "generated": prediction, "prediction": tasks.answer_text(task, prediction),
                "references": [tasks.answer_text(task, reference) for reference in sample.references]}
    if kind not in _LOCATED or processor is None:
        return fields
    image_size = tuple(sample.meta.get("image_size") or sample.image.size)
    predicted = tasks.parse_answer(processor, prediction, task, image_size)
    reference = tasks.parse_answer(processor, sample.target, task, image_size)
    key = _LOCATED[kind]
    return {**fields, "image_size": list(image_size),
            f"predicted_{key}": predicted[key], "predicted_labels": predicted["labels"],
            f"reference_{key}": reference[key], "reference_labels": reference["labels"]}


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

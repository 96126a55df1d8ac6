"""Metrics for answers that are regions or structured text, computed over a whole evaluation set of records.

    segmentation (<REFERRING_EXPRESSION_SEGMENTATION>…)   mask_map, mask_map_50   pycocotools COCOeval, iouType "segm"
                                                          mean_iou                mean per-image IoU of the union masks
    <OCR_WITH_REGION>                                     region_precision/recall/f1, region_cer
                                                          (lines matched one-to-one at quadrilateral IoU ≥ 0.5, as
                                                          ICDAR-style text-detection evaluation does; torchmetrics CER)
    <OD>, grounding, dense captions, open vocabulary      map, map_50  (pycocotools COCOeval, iouType "bbox")
    <REGION_PROPOSAL>                                     recall_50   (pycocotools COCOeval, class-agnostic recall@.5)
    structured extraction (JSON out)                      json_valid, field_precision/recall/f1, field_anls
                                                          (key-path fields; ANLS as metrics.py, the official DocVQA one)

Every function takes the records of the whole set and returns floats, None where there is nothing to score. Region
coordinates are pixels of the image, ``image_size`` is ``[width, height]``. A
COCO evaluation is one over every record at once, never a mean of per-record numbers, and Florence-2 gives no
confidence, so every prediction scores 1.0 (COCOeval keeps generation order among equal scores).

Masks are pycocotools' own rasterisation of the polygons (``mask.frPyObjects``), the one COCO's segmentation scores
use, so a polygon on whole pixels covers exactly its area. A polygon with fewer than 3 points has no area and is
dropped (pycocotools would read a 2-point polygon as a box); an object left with no polygon is dropped with its label.
"""

from __future__ import annotations

import contextlib
import io
import json
import unicodedata
from collections.abc import Callable
from typing import Any

import numpy as np

from florence_tune.evaluation import metrics

MATCH_IOU = 0.5


# --- detection ----------------------------------------------------------------------------------


def detection_map(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """COCO mAP@[.5:.95] and mAP@.5 over all records with reference boxes (None when there are none)."""
    ground_truth, detections = _coco_dicts(records)
    if not ground_truth["annotations"]:
        return {"map": None, "map_50": None}
    if not detections:
        return {"map": 0.0, "map_50": 0.0}
    evaluator = _coco_evaluate(ground_truth, detections, "bbox", summarize=True)
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


# --- segmentation -------------------------------------------------------------------------------


def segmentation_scores(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mask mAP@[.5:.95] and mAP@.5 (one COCO evaluation) and mean IoU of the union masks per image.

    Objects are lists of flat polygons ``[x1, y1, x2, y2, …]``; labels may all be "" (referring-expression
    segmentation has none), which makes every object one category. Records without a reference object are left
    out of mean_iou (there is no IoU to take), though their predictions still count against mAP, as COCO counts
    them; a record with no prediction has IoU 0. mAP is COCO's standard summary, as ``detection_map``'s (at most
    100 objects per image).
    """
    from pycocotools import mask as mask_utils

    masked = [_masked_record(record) for record in records]
    ious = []
    for record in masked:
        if not record["reference_masks"]:
            continue
        predicted = record["predicted_masks"]
        if not predicted:
            ious.append(0.0)
            continue
        union = [mask_utils.merge(predicted), mask_utils.merge(record["reference_masks"])]
        ious.append(float(mask_utils.iou(union[:1], union[1:], [0])[0][0]))
    mean_iou = sum(ious) / len(ious) if ious else None

    ground_truth, detections = _coco_dicts(masked)
    # _coco_dicts lays out images, categories and ids in record order; the masks go onto its entries in that order.
    for annotation, rle in zip(ground_truth["annotations"], [m for r in masked for m in r["reference_masks"]],
                               strict=True):
        annotation.update(segmentation=rle, area=float(mask_utils.area(rle)))
    # Without a "bbox", loadRes reads a result as a mask (its area from the mask, not the box).
    detections = [{**{k: v for k, v in d.items() if k != "bbox"}, "segmentation": rle}
                  for d, rle in zip(detections, [m for r in masked for m in r["predicted_masks"]], strict=True)]
    if not ground_truth["annotations"]:
        return {"mask_map": None, "mask_map_50": None, "mean_iou": mean_iou}
    if not detections:
        return {"mask_map": 0.0, "mask_map_50": 0.0, "mean_iou": mean_iou}
    evaluator = _coco_evaluate(ground_truth, detections, "segm", summarize=True)
    return {"mask_map": max(float(evaluator.stats[0]), 0.0), "mask_map_50": max(float(evaluator.stats[1]), 0.0),
            "mean_iou": mean_iou}


def _masked_record(record: dict[str, Any]) -> dict[str, Any]:
    """The record with one RLE mask per object (and boxes around them, for ``_coco_dicts``), empty objects dropped."""
    width, height = record.get("image_size") or (0, 0)
    masked: dict[str, Any] = {"image_size": [width, height]}
    for side in ("reference", "predicted"):
        objects = record.get(f"{side}_polygons") or []
        labels = record.get(f"{side}_labels") or [""] * len(objects)
        kept = [(rle, label) for rle, label in ((_object_mask(polygons, width, height), label)
                                                for polygons, label in zip(objects, labels, strict=True))
                if rle is not None]
        masked[f"{side}_masks"] = [rle for rle, _ in kept]
        masked[f"{side}_labels"] = [label for _, label in kept]
        masked[f"{side}_boxes"] = [_mask_box(rle) for rle, _ in kept]
    return masked


def _object_mask(polygons, width: int, height: int):
    """One object's polygons rasterised and merged into one RLE; None when no polygon has 3 points."""
    from pycocotools import mask as mask_utils

    # An odd trailing coordinate is no point; fewer than 3 points enclose nothing (and frPyObjects would take
    # a 4-number list for a box).
    kept = [[float(v) for v in polygon[: len(polygon) // 2 * 2]] for polygon in polygons if len(polygon) >= 6]
    if not kept:
        return None
    return mask_utils.merge(mask_utils.frPyObjects(kept, height, width))


def _mask_box(rle) -> list[float]:
    from pycocotools import mask as mask_utils

    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return [x, y, x + w, y + h]


# --- OCR with region ----------------------------------------------------------------------------


def ocr_region_scores(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """Line detection precision / recall / F1 (micro over the set) and the CER of the matched lines' text.

    Lines are matched one-to-one within a record at quadrilateral IoU ≥ 0.5. Precision is None without any
    predicted line, recall without any reference line; region_cer is None when no line matched.
    """
    from torchmetrics.functional.text import char_error_rate

    matched = predicted = reference = 0
    pairs: list[tuple[str, str]] = []
    for record in records:
        width, height = record.get("image_size") or (0, 0)
        predicted_quads = record.get("predicted_quads") or []
        reference_quads = record.get("reference_quads") or []
        predicted_texts = record.get("predicted_labels") or [""] * len(predicted_quads)
        reference_texts = record.get("reference_labels") or [""] * len(reference_quads)
        predicted += len(predicted_quads)
        reference += len(reference_quads)
        ious = _quad_ious(predicted_quads, reference_quads, width, height)
        for p, r in _greedy_matches(ious, MATCH_IOU):
            matched += 1
            pairs.append((str(predicted_texts[p]), str(reference_texts[r])))
    precision = matched / predicted if predicted else None
    recall = matched / reference if reference else None
    f1 = 2 * matched / (predicted + reference) if predicted + reference else None  # = 2PR / (P + R)
    # CER divides by the reference characters: matched lines without any leave nothing to divide by.
    cer = None
    if any(text for _, text in pairs):
        cer = float(char_error_rate([p for p, _ in pairs], [r for _, r in pairs]))
    return {"region_precision": precision, "region_recall": recall, "region_f1": f1, "region_cer": cer}


def _quad_ious(predicted, reference, width: int, height: int) -> list[list[float]]:
    """IoU of every predicted quadrilateral (rows) with every reference one, of their pycocotools masks."""
    from pycocotools import mask as mask_utils

    if not predicted or not reference:
        return [[0.0] * len(reference) for _ in predicted]

    def masks(quads):
        return mask_utils.frPyObjects([[float(v) for v in quad] for quad in quads], height, width)

    return mask_utils.iou(masks(predicted), masks(reference), [0] * len(reference)).tolist()


def _greedy_matches(ious: list[list[float]], threshold: float) -> list[tuple[int, int]]:
    """One-to-one (prediction, reference) pairs at IoU ≥ threshold, taken in order of descending IoU.

    Greedy, not an optimal assignment: COCO-style and ICDAR-style evaluators match this way at a fixed threshold,
    so the numbers compare with theirs. Above 0.5 it rarely matters: a prediction can overlap two references that
    much only if those references overlap each other, which text lines seldom do.
    """
    candidates = sorted(((iou, p, r) for p, row in enumerate(ious) for r, iou in enumerate(row) if iou >= threshold),
                        key=lambda c: (-c[0], c[1], c[2]))  # ties: generation order, then reference order
    used_p: set[int] = set()
    used_r: set[int] = set()
    pairs = []
    for _, p, r in candidates:
        if p not in used_p and r not in used_r:
            used_p.add(p)
            used_r.add(r)
            pairs.append((p, r))
    return pairs


# --- region proposals ---------------------------------------------------------------------------


def proposal_recall(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """Share of all reference boxes found one-to-one by a proposal at IoU ≥ 0.5, labels ignored (COCOeval)."""
    # One label for every box: _coco_dicts then puts them all in one category, and useCats = 0 ignores it anyway.
    unlabelled = [{"image_size": r.get("image_size"), "reference_boxes": list(r.get("reference_boxes") or []),
                   "predicted_boxes": list(r.get("predicted_boxes") or [])} for r in records]
    for r in unlabelled:
        r.update(reference_labels=[""] * len(r["reference_boxes"]), predicted_labels=[""] * len(r["predicted_boxes"]))
    ground_truth, detections = _coco_dicts(unlabelled)
    if not ground_truth["annotations"]:
        return {"recall_50": None}
    if not detections:  # loadRes cannot read an empty result list
        return {"recall_50": 0.0}

    def class_agnostic_all_proposals(params) -> None:
        params.useCats = 0
        params.iouThrs = np.array([MATCH_IOU])  # the one threshold reported; COCO's other nine would go unread
        # COCO's default keeps 100 detections per image; a proposal beyond that must still be able to count.
        params.maxDets = [max(len(r["predicted_boxes"]) for r in unlabelled)]
        params.areaRng, params.areaRngLbl = [[0.0, 1e5**2]], ["all"]  # COCO's own "all"

    evaluator = _coco_evaluate(ground_truth, detections, "bbox", class_agnostic_all_proposals)
    # recall is [IoU threshold, category, area range, maxDets], each of one entry here (useCats = 0: one category)
    return {"recall_50": max(float(evaluator.eval["recall"][0, 0, 0, -1]), 0.0)}


# --- structured extraction ----------------------------------------------------------------------


def extraction_scores(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """JSON validity, field precision / recall / F1 (micro over the set) and the mean ANLS of reference fields.

    A field is a leaf of the JSON object at its key path (``"a.b"``, ``"items[0].name"``), its value compared as
    text after normalisation (NFKC, casefold, whitespace runs collapsed). An invalid prediction has no fields. A
    record whose reference is not a JSON object is left out (there is nothing to score against).
    """
    valid = scored = correct = predicted_count = reference_count = 0
    anls_scores = []
    for record in records:
        references = record.get("references") or []
        reference = _fields(references[0]) if references else None
        if reference is None:
            continue
        scored += 1
        prediction = _fields(record.get("prediction"))
        if prediction is not None:
            valid += 1
        prediction = prediction or {}
        predicted_count += len(prediction)
        reference_count += len(reference)
        correct += sum(path in reference and _normalise(reference[path]) == _normalise(value)
                       for path, value in prediction.items())
        # ANLS takes the raw texts: it applies the official DocVQA preprocessing itself.
        anls_scores += [metrics.anls_score(prediction[path], [value]) if path in prediction else 0.0
                        for path, value in reference.items()]
    return {
        "json_valid": valid / scored if scored else None,
        "field_precision": correct / predicted_count if predicted_count else None,
        "field_recall": correct / reference_count if reference_count else None,
        "field_f1": 2 * correct / (predicted_count + reference_count) if predicted_count + reference_count else None,
        "field_anls": sum(anls_scores) / len(anls_scores) if anls_scores else None,
    }


def _fields(text) -> dict[str, str] | None:
    """Key path → leaf text of a JSON object's text; None when the text is not a JSON object."""
    try:
        # Numbers kept as written ("12.50" stays "12.50", not 12.5), so they compare as text like strings do.
        value = json.loads(str(text), parse_float=str, parse_int=str)
    except (TypeError, ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    fields: dict[str, str] = {}
    _flatten(value, "", fields)
    return fields


def _flatten(value, path: str, fields: dict[str, str]) -> None:
    # Empty objects and lists hold no leaf, so they add no field.
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), fields)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _flatten(item, f"{path}[{index}]", fields)
    elif isinstance(value, bool) or value is None:
        fields[path] = json.dumps(value)  # true / false / null, as JSON writes them
    else:
        fields[path] = str(value)


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", str(text)).casefold().split())


# --- COCO evaluation ----------------------------------------------------------------------------


def _coco_evaluate(ground_truth: dict[str, Any], detections: list[dict[str, Any]], iou_type: str,
                   configure: Callable[[Any], None] | None = None, summarize: bool = False):
    """COCOeval evaluated and accumulated over the whole set; ``configure`` sets its params first, ``summarize``
    fills ``stats`` (COCO's standard table, which needs the standard params)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress on stdout
        coco = COCO()
        coco.dataset = ground_truth
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(detections), iouType=iou_type)
        if configure is not None:
            configure(evaluator.params)
        evaluator.evaluate()
        evaluator.accumulate()
        if summarize:
            evaluator.summarize()
    return evaluator

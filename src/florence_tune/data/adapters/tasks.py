"""Rows for the Florence-2 tasks beyond VQA: detection, grounding, segmentation, OCR (with regions), captions,
region-to-text, region proposals, and key-value extraction to JSON.

Read through the same stack as VQA data (specs, sources, held-out validation, streaming, mixtures,
limits). Accepted ``--dataset`` forms (coordinates in pixels of the image file):

* a COCO JSON (``images``, ``annotations`` with ``[x, y, width, height]`` boxes and, for segmentation,
  polygon ``segmentation`` lists, ``categories``); image ``file_name``s are looked up next to the JSON, in
  its ``images/`` folder, or one folder up. The task is named after the file (``instances.json:
  region_to_segmentation``), <OD> by default. Crowd annotations are left out (counted ``crowd_left_out``),
  as COCO evaluation sets them apart; an RLE mask is no polygon (counted ``polygon_left_out``).
* a JSON-lines file, one image per line, its ``task`` naming the task (the spec's, or <OD>, without)::

      {"image": "pages/1.png", "boxes": [[x1, y1, x2, y2], ...], "labels": ["table", ...]}
      {"image": "a.png", "objects": [{"label": "table", "bbox": [x1, y1, x2, y2]}]}
      {"image": "b.png", "task": "<CAPTION_TO_PHRASE_GROUNDING>", "caption": "a table and a stamp",
       "boxes": [...], "labels": ["a table", "a stamp"]}
      {"image": "c.png", "task": "<OCR>", "text": "TOTAL 12.50"}
      {"image": "c.png", "task": "<OCR_WITH_REGION>", "texts": ["TOTAL", "12.50"],
       "quad_boxes": [[x1, y1, x2, y2, x3, y3, x4, y4], ...]}          (or "boxes": axis-aligned lines)
      {"image": "d.png", "task": "<CAPTION>", "caption": "an invoice on blue paper"}
      {"image": "e.png", "task": "<REFERRING_EXPRESSION_SEGMENTATION>", "phrase": "the stamp",
       "polygons": [[x1, y1, x2, y2, x3, y3, ...]]}                     (a polygon per object, or a list of them)
      {"image": "e.png", "task": "<REGION_TO_SEGMENTATION>", "region": [x1, y1, x2, y2], "polygons": [...]}
      {"image": "f.png", "task": "<REGION_TO_CATEGORY>", "region": [x1, y1, x2, y2], "text": "stamp"}
      {"image": "g.png", "task": "<OPEN_VOCABULARY_DETECTION>", "phrase": "a stamp", "boxes": [...]}
      {"image": "h.png", "task": "<EXTRACTION>", "fields": {"invoice_number": "INV-1", "total": "$12.50"}}

  A region task's row without a ``region`` gives one sample per object (per line for <REGION_TO_OCR>),
  its box the prompt; open-vocabulary detection without a ``text``, one sample per label. Dense captions,
  region descriptions and referring expressions read ``descriptions`` (a phrase per object) before
  ``labels``; the caption levels read ``detailed_caption`` / ``more_detailed_caption`` before ``caption``.
  Optional keys: ``id``, ``width`` / ``height`` (checked against the image), ``split`` (rows are filtered
  by it when any row has one);
* a folder of such files, their split read from the file or folder name (``train.json``,
  ``validation.jsonl``...); a source without a validation split holds out its first rows, as VQA does;
* ``synthetic:<task>`` (``synthetic:detection``, ``synthetic:ocr_with_region``, ``synthetic:extraction``...,
  every name of ``TASK_NAMES``) — the built-in pages, which know each region, line, phrase and field.

Each row becomes ``Sample``s whose prompt is the task token (plus its phrase or its region's box), whose
target is the answer the way the Florence-2 checkpoints write it (tasks.py), and whose ``meta`` carries
``task`` and, for answers with locations, the ``image_size``; evaluation reads the reference back from the
target exactly as it reads the prediction. Adapters never tokenize.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from florence_tune import tasks
from florence_tune.data.images import BadImage, image_size
from florence_tune.data.rows import BadSample, Item, as_text, json_lines, rooted, single_image
from florence_tune.data.sample import ALTERED, Sample, Skipped
from florence_tune.errors import UsageError

# ``synthetic:<name>`` (and ``my.json:<name>`` on a local task file): the task rows of no "task" value train.
# Each task's token in lower case without its brackets, plus the short names the first release had.
TASK_NAMES = {"detection": tasks.OD, "od": tasks.OD,
              **{token.strip("<>").lower(): token for token in tasks.TASKS if token != tasks.VQA}}
# Columns that mark task rows (a VQA row has a question instead).
MARKER_COLUMNS = frozenset({"boxes", "objects", "task", "polygons", "quad_boxes", "fields"})
# JSON files a save_to_disk folder holds; never annotation files.
DATASETS_METADATA = frozenset({"dataset_dict.json", "state.json", "dataset_info.json"})
# What a sample's ALTERED list says when a <loc_N> of the user's had to become a token (fit_locations).
CLAMPED_LOCATIONS = "clamped_locations"
POLYGON_LEFT_OUT = "polygon_left_out"  # an object whose segmentation has no usable polygon (a COCO RLE mask)
# The columns a task reads its words from, in order of preference. A row may carry several kinds of
# annotation (the synthetic pages carry all): a region's category in "labels", a phrase naming it in
# "descriptions"; a caption at each of the three levels.
TEXT_COLUMNS = {
    tasks.OCR: ("text", "caption"),
    tasks.CAPTION: ("caption", "text"),
    tasks.DETAILED_CAPTION: ("detailed_caption", "caption", "text"),
    tasks.MORE_DETAILED_CAPTION: ("more_detailed_caption", "detailed_caption", "caption", "text"),
    tasks.EXTRACTION: ("fields", "text"),
    tasks.GROUNDING: ("detailed_caption", "caption"),  # the synthetic pages name their regions there
    tasks.OPEN_VOCABULARY_DETECTION: ("phrase",),
    tasks.REFERRING_SEGMENTATION: ("phrase",),
}
LABEL_COLUMNS = {
    tasks.DENSE_REGION_CAPTION: ("descriptions", "labels"),
    tasks.REGION_TO_DESCRIPTION: ("descriptions", "labels"),
    tasks.REFERRING_SEGMENTATION: ("descriptions", "labels"),
}
ROW_COLUMNS = ("id", "image", "task", "width", "height", "labels", "boxes", "descriptions", "polygons", "texts",
               "quad_boxes", "region", "phrase", "caption", "detailed_caption", "more_detailed_caption", "text",
               "fields", "notes", "split", "error")


def features():
    """The one schema of task rows, whatever file they were read from."""
    import datasets

    text, number = datasets.Value("string"), datasets.Value("float64")
    return datasets.Features({
        "id": text, "image": text, "task": text, "width": datasets.Value("int32"),
        "height": datasets.Value("int32"), "labels": datasets.List(text),
        "boxes": datasets.List(datasets.List(number)), "descriptions": datasets.List(text),
        "polygons": datasets.List(datasets.List(datasets.List(number))), "texts": datasets.List(text),
        "quad_boxes": datasets.List(datasets.List(number)), "region": datasets.List(number),
        "phrase": text, "caption": text, "detailed_caption": text, "more_detailed_caption": text, "text": text,
        "fields": text,
        "notes": datasets.List(text), "split": text, "error": text,
    })


# --- rows → samples -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Adapter:
    """Task rows: one image per row, its task from the row or ``default_task``. A row is one sample, except
    where its parts are (``count``): a region task without a ``region`` of its own gives one per object (per
    line for <REGION_TO_OCR>), its box the prompt; open-vocabulary detection without a ``phrase``, one per
    label; referring segmentation without one, one per object, its phrase the prompt."""

    default_task: str = tasks.OD  # for rows without a "task" value
    root: str | None = None  # the dataset folder that relative image paths are read against (see rows.rooted)
    image_columns: tuple[str, ...] = ("image",)

    def count(self, row: dict[str, Any]) -> int:
        """How many items ``drafts(row)`` gives, from the annotation columns alone (no image read)."""
        return _count(self._row_parts(row))

    def _row_parts(self, row: dict[str, Any]) -> list | None:
        return None if row.get("error") else self._parts(row, row.get("task") or self.default_task)

    def samples_per_row(self, rows) -> np.ndarray | None:
        """``count`` of every row of an Arrow-formatted table, or None when each row is one sample (read from
        the ``task`` column alone when no row's task can give several)."""
        named = set(rows.unique("task")) if "task" in rows.column_names else {None}
        if not {name or self.default_task for name in named} & SPLITTING_TASKS:
            return None
        columns = [c for c in rows.column_names if c not in self.image_columns]
        counts = np.array([self.count(row) for batch in rows.select_columns(columns).iter(batch_size=1024)
                           for row in batch.to_pylist()], dtype=np.int64)
        return counts if (counts != 1).any() else None

    def drafts(self, row: dict[str, Any]) -> list[Item]:
        parts = self._row_parts(row)  # read once: it decides both how many items and what they are
        count = _count(parts)
        if row.get("error"):
            return [Skipped(row["error"])]
        try:
            items = self._drafts(row, parts)
        except BadImage as exc:  # the size of the image could not be read
            return [Skipped(f"image_{exc.reason}")] * count
        except BadSample as exc:
            return [Skipped(exc.reason)] * count
        notes = [str(note) for note in row.get("notes") or []]  # what the file's reader left out (crowds)
        return [fit_locations(_noted(item, notes)) if isinstance(item, Sample) else item for item in items]

    def image(self, row: dict[str, Any], draft: int | None = None):
        return single_image(row, draft, self.root)

    def _parts(self, row: dict[str, Any], task: str) -> list | None:
        """The row's parts that are one sample each (raw), or None when the row is one sample."""
        spec = tasks.TASKS.get(task)
        if spec is None or _written(row):
            return None
        if spec.prompt == "region" and row.get("region") is None:
            if spec.answer == "polygons":
                return list(row.get("polygons") or [])
            return list(row.get("texts") or []) if task == tasks.REGION_TO_OCR else list(row.get("boxes") or [])
        if task == tasks.OPEN_VOCABULARY_DETECTION and not _text_of(row, task):
            return _distinct(row.get("labels") or [])
        if task == tasks.REFERRING_SEGMENTATION and not _text_of(row, task):
            return _distinct(next((row[c] for c in LABEL_COLUMNS[task] if row.get(c)), []))
        return None

    def _drafts(self, row: dict[str, Any], parts: list | None) -> list[Item]:
        task = row.get("task") or self.default_task
        if task not in tasks.TASKS:
            raise BadSample("unknown_task")
        spec = tasks.TASKS[task]
        if spec.prompt == "question":
            raise BadSample("no_question")  # a question row among task rows: it has no question to ask
        declared = _declared_size(row)
        if declared and declared != self._size(row):  # checked per row: rows may share a page
            raise BadSample("image_size_mismatch")  # its boxes were drawn on an image of another size
        if spec.answer == "text" and spec.prompt == "none":
            text = _text_of(row, task)
            if not text:
                raise BadSample("no_answer")
            return [self._sample(row, task, tasks.prompt_for(task), text, {})]
        size = declared or self._size(row)
        if _written(row) and spec.prompt != "region":  # the answer as Florence-2 writes it, by the user
            phrase = _text_of(row, task) if spec.prompt == "text" else ""
            if spec.prompt == "text" and not phrase:
                raise BadSample("no_caption")
            return [self._sample(row, task, tasks.prompt_for(task, phrase), row["text"].strip(),
                                 {"image_size": list(size)})]
        if parts is not None:
            items = self._each_part(row, task, size, parts)
            if not items:
                raise BadSample("no_regions" if spec.prompt == "region" else EMPTY_REASONS[spec.answer])
            return items
        return [ONE_SAMPLE[spec.answer if spec.prompt != "region" else "region"](self, row, task, size)]

    def _size(self, row: dict[str, Any]) -> tuple[int, int]:
        """The page's size from its header only: nothing decoded."""
        if not row.get("image"):
            raise BadSample("no_image")
        return image_size(rooted(row["image"], self.root))

    def _sample(self, row: dict[str, Any], task: str, prompt: str, target: str, meta: dict[str, Any],
                number: int | None = None) -> Sample:
        base = _id_of(row)
        meta = {"task": task, "question": prompt, "question_type": task, **meta}
        return Sample(id=base if number is None else f"{base}/{number}", image=None, prompt=prompt, target=target,
                      references=[target], meta=meta)

    # --- rows that are one sample, by answer kind (tasks.Task.answer) ---

    def _boxes(self, row: dict[str, Any], task: str, size: tuple[int, int]) -> Sample:
        phrase = _text_of(row, task) if tasks.TASKS[task].prompt == "text" else ""
        if tasks.TASKS[task].prompt == "text" and not phrase:
            raise BadSample("no_caption")
        # proposals are boxes alone; an open-vocabulary row's boxes are all the phrase's (labels not read)
        labelled = task not in (tasks.REGION_PROPOSAL, tasks.OPEN_VOCABULARY_DETECTION)
        labels, boxes = _objects(row, size, LABEL_COLUMNS.get(task, ("labels",)), labelled=labelled)
        if not boxes:
            raise BadSample("no_boxes")
        if task == tasks.OPEN_VOCABULARY_DETECTION:
            labels = [phrase] * len(boxes)  # the checkpoints name each box by the phrase asked for
        return self._sample(row, task, tasks.prompt_for(task, phrase), tasks.encode_objects(labels, boxes, size),
                            {"boxes": boxes, "labels": labels, "image_size": list(size)})

    def _polygons(self, row: dict[str, Any], task: str, size: tuple[int, int]) -> Sample:
        """Referring segmentation with its ``phrase``: every object of the row is the answer."""
        _, objects, left_out = _polygon_objects(row, size, ("labels",), labelled=False)
        if not objects:
            raise BadSample("no_polygons")
        return self._sample(row, task, tasks.prompt_for(task, _text_of(row, task)),
                            tasks.encode_polygons([""] * len(objects), objects, size),
                            {"image_size": list(size), ALTERED: [POLYGON_LEFT_OUT] * left_out})

    def _quads(self, row: dict[str, Any], task: str, size: tuple[int, int]) -> Sample:
        texts, quads = _lines(row, size)
        if not quads:
            raise BadSample("no_lines")
        return self._sample(row, task, tasks.prompt_for(task), tasks.encode_lines(texts, quads, size),
                            {"image_size": list(size)})

    def _region(self, row: dict[str, Any], task: str, size: tuple[int, int]) -> Sample:
        """A region task's row with its ``region``: the answer is ``text`` (or the first label), or its polygons."""
        region = tasks.clip_box(_corners(row["region"]) or [0, 0, 0, 0], size)
        if region is None:
            raise BadSample("bad_region")
        if tasks.TASKS[task].answer == "polygons":
            _, objects, left_out = _polygon_objects(row, size, ("labels",), labelled=False)
            if not objects:
                raise BadSample("no_polygons")
            return self._region_sample(row, task, size, region, sum(objects, []), None,
                                       [POLYGON_LEFT_OUT] * left_out)
        # the words alone: a row that spelt the answer with its box (as the checkpoints write it) loses the box
        label = tasks.clean_label(tasks.answer_text(task, _text_of(row, task) or
                                                    str(next(iter(row.get("labels") or []), ""))))
        if not label:
            raise BadSample("no_answer")
        return self._region_sample(row, task, size, region, label, None)

    def _region_sample(self, row, task, size, box, answer, number, altered=()) -> Sample:
        target = (tasks.encode_polygons([""], [answer], size) if tasks.TASKS[task].answer == "polygons"
                  else tasks.region_text(task, answer, box, size))
        return self._sample(row, task, tasks.prompt_for(task, tasks.box_tokens(box, size)), target,
                            {"image_size": list(size), "region": box, ALTERED: list(altered)}, number)

    # --- rows whose parts are one sample each (``_parts``): one item per part, Skipped where it is unusable ---

    def _each_part(self, row: dict[str, Any], task: str, size: tuple[int, int], parts: list) -> list[Item]:
        spec = tasks.TASKS[task]
        if task == tasks.OPEN_VOCABULARY_DETECTION:
            labels, boxes = _objects(row, size)
            return [self._sample(row, task, tasks.prompt_for(task, name),
                                 tasks.encode_objects([name] * labels.count(name),
                                                      [b for n, b in zip(labels, boxes, strict=True) if n == name],
                                                      size), {"image_size": list(size)}, number)
                    if name in labels else Skipped("no_boxes")
                    for number, name in enumerate(parts)]
        if task == tasks.REFERRING_SEGMENTATION:  # one sample per name, every object of that name its answer
            names, objects, _ = _polygon_objects(row, size, LABEL_COLUMNS[task])
            return [self._sample(row, task, tasks.prompt_for(task, name),
                                 tasks.encode_polygons([""] * names.count(name),
                                                       [o for n, o in zip(names, objects, strict=True) if n == name],
                                                       size), {"image_size": list(size)}, number)
                    if name in names else Skipped(POLYGON_LEFT_OUT)
                    for number, name in enumerate(parts)]
        if spec.answer == "polygons":
            return [self._region_sample(row, task, size, _bounds(kept), kept, number)
                    if (kept := _clean_polygons(polygons, size)) else Skipped(POLYGON_LEFT_OUT)
                    for number, polygons in enumerate(row.get("polygons") or [])]
        if task == tasks.REGION_TO_OCR:
            texts, quads = list(row.get("texts") or []), _quads_of(row)
            if len(texts) != len(quads):
                raise BadSample("texts_quads_mismatch")
            return [self._region_sample(row, task, size, _bounds([quad]), text, number)
                    if (quad := _clean_quad(raw, size)) and tasks.clean_label(text) else Skipped("bad_line")
                    for number, (text, raw) in enumerate(zip(texts, quads, strict=True))]
        names = next((list(row[c]) for c in LABEL_COLUMNS.get(task, ("labels",)) if row.get(c)), [])
        boxes = list(row.get("boxes") or [])
        if len(names) != len(boxes):
            raise BadSample("boxes_labels_mismatch")
        return [self._region_sample(row, task, size, box, tasks.clean_label(name), number)
                if (box := tasks.clip_box(raw, size) if raw is not None and len(raw) == 4 else None)
                and tasks.clean_label(name) else Skipped("bad_box" if tasks.clean_label(name) else "no_answer")
                for number, (name, raw) in enumerate(zip(names, boxes, strict=True))]


# Tasks whose row may give several samples (``Adapter._parts``).
SPLITTING_TASKS = tasks.REGION_TASKS | {tasks.OPEN_VOCABULARY_DETECTION, tasks.REFERRING_SEGMENTATION}
ONE_SAMPLE = {"boxes": Adapter._boxes, "polygons": Adapter._polygons, "quads": Adapter._quads,
              "region": Adapter._region}
EMPTY_REASONS = {"boxes": "no_boxes", "polygons": "no_polygons", "quads": "no_lines"}


def fit_locations(sample: Sample) -> Sample:
    """The sample with every ``<loc_N>`` of its prompt, target and references a vocabulary token
    (``tasks.fit_locations``), counted as ``clamped_locations`` when one was not. For every row whose
    text the user wrote: task rows here, prompt/target and question/answer rows in local.py."""
    prompt, target = tasks.fit_locations(sample.prompt), tasks.fit_locations(sample.target)
    references = [tasks.fit_locations(reference) for reference in sample.references]
    if not any(changed for _, changed in (prompt, target, *references)):
        return sample
    meta = {**sample.meta, ALTERED: [*sample.meta.get(ALTERED, ()), CLAMPED_LOCATIONS]}
    return dataclasses.replace(sample, prompt=prompt[0], target=target[0], references=[r for r, _ in references],
                               meta=meta)


def _declared_size(row: dict[str, Any]) -> tuple[int, int] | None:
    width, height = row.get("width"), row.get("height")
    return (int(width), int(height)) if width and height else None


def _id_of(row: dict[str, Any]) -> str:
    return str(row.get("id") or row.get("docId") or "")


def _objects(row: dict[str, Any], size: tuple[int, int], label_columns: tuple[str, ...] = ("labels",),
             labelled: bool = True) -> tuple[list[str], list[list[float]]]:
    """Labels and boxes cut to the image, in reading order (top to bottom, then left to right); the labels
    from the first of ``label_columns`` the row fills. ``labelled=False``: labels are not read (proposals)."""
    boxes = list(row.get("boxes") or [])
    labels = next((list(row[c]) for c in label_columns if row.get(c)), []) if labelled else [""] * len(boxes)
    if len(labels) != len(boxes):
        raise BadSample("boxes_labels_mismatch")
    kept = []
    for label, box in zip(labels, boxes, strict=True):
        clean = tasks.clean_label(label)
        clipped = tasks.clip_box(box, size) if box is not None and len(box) == 4 else None
        if (clean or not labelled) and clipped:
            kept.append((clipped[1], clipped[0], clean, clipped))
    kept.sort(key=lambda item: (item[0], item[1]))
    return [label for _, _, label, _ in kept], [box for _, _, _, box in kept]


def _polygon_objects(row: dict[str, Any], size: tuple[int, int], label_columns: tuple[str, ...],
                     labelled: bool = True) -> tuple[list[str], list[list[list[float]]], int]:
    """Labels and each object's polygons (``_clean_polygons``), and how many objects were left out for want
    of a usable polygon (a COCO RLE mask has none)."""
    objects = list(row.get("polygons") or [])
    labels = next((list(row[c]) for c in label_columns if row.get(c)), None) if labelled else None
    labels = labels if labels is not None else [""] * len(objects)
    if len(labels) != len(objects):
        raise BadSample("polygons_labels_mismatch")
    found = [(tasks.clean_label(label), _clean_polygons(polygons, size)) for label, polygons in
             zip(labels, objects, strict=True)]
    usable = [(label, polygons) for label, polygons in found if polygons]
    return [label for label, _ in usable], [polygons for _, polygons in usable], len(found) - len(usable)


def _clean_polygons(polygons: Any, size: tuple[int, int]) -> list[list[float]]:
    """An object's polygons (a list of flat ``x, y, ...`` lists, or one such list) with vertices clamped to the
    image; one of fewer than three vertices, or not made of numbers, is dropped."""
    width, height = size
    if isinstance(polygons, list) and polygons and all(isinstance(v, int | float) for v in polygons):
        polygons = [polygons]  # one polygon for the object
    kept = []
    for polygon in polygons if isinstance(polygons, list) else []:
        try:
            points = [float(v) for v in polygon or []]
        except (TypeError, ValueError):
            continue
        if len(points) % 2 or len(points) < 6 or not all(math.isfinite(v) for v in points):
            continue
        kept.append([min(max(v, 0.0), width if i % 2 == 0 else height) for i, v in enumerate(points)])
    return kept


def _quads_of(row: dict[str, Any]) -> list[Any]:
    """The row's line quads as given: ``quad_boxes``, or its ``boxes`` as quads (a box that is not four numbers
    stays as it is, for ``_clean_quad`` to refuse)."""
    if row.get("quad_boxes"):
        return list(row["quad_boxes"])
    return [tasks.quad_of(box) if isinstance(box, list | tuple) and len(box) == 4 else box
            for box in row.get("boxes") or []]


def _clean_quad(quad: Any, size: tuple[int, int]) -> list[float] | None:
    """A line's quad as eight floats clamped to the image, or None when it is not eight finite numbers."""
    width, height = size
    try:
        points = [float(v) for v in quad or []]
    except (TypeError, ValueError):
        return None
    if len(points) != 8 or not all(math.isfinite(v) for v in points):
        return None
    return [min(max(v, 0.0), width if i % 2 == 0 else height) for i, v in enumerate(points)]


def _lines(row: dict[str, Any], size: tuple[int, int]) -> tuple[list[str], list[list[float]]]:
    """Each text line and its quad (from ``quad_boxes``, or ``boxes`` made quads), points clamped to the image,
    in reading order (top to bottom, then left to right), as objects are."""
    texts, quads = list(row.get("texts") or []), _quads_of(row)
    if len(texts) != len(quads):
        raise BadSample("texts_quads_mismatch")
    found = [(tasks.clean_label(text), _clean_quad(quad, size)) for text, quad in zip(texts, quads, strict=True)]
    found = sorted(((text, quad) for text, quad in found if text and quad),
                   key=lambda line: (min(line[1][1::2]), min(line[1][0::2])))
    return [text for text, _ in found], [quad for _, quad in found]


def _count(parts: list | None) -> int:
    """Items a row gives: one per part (at least one, a Skipped when none is usable), else one."""
    return max(1, len(parts)) if parts is not None else 1


def _distinct(names: list[Any]) -> list[str]:
    """Each name once, cleaned, in order; empty ones left out."""
    return list(dict.fromkeys(c for c in (tasks.clean_label(name) for name in names if name is not None) if c))


def _noted(sample: Sample, notes: list[str]) -> Sample:
    """The sample with the row's notes (annotations its reader left out) among its alterations."""
    if not notes:
        return sample
    return dataclasses.replace(sample, meta={**sample.meta, ALTERED: [*sample.meta.get(ALTERED, ()), *notes]})


def _written(row: dict[str, Any]) -> bool:
    """Whether the row gives its answer already in Florence-2's words (a ``text`` with location tokens) and no
    boxes, polygons or lines to build one from."""
    return (isinstance(row.get("text"), str) and "<loc_" in row["text"]
            and not any(row.get(c) for c in ("boxes", "polygons", "quad_boxes", "texts")))


def _bounds(polygons: list[list[float]]) -> list[float]:
    """The box around polygons (or quads): the region a region-to-segmentation prompt names."""
    xs = [v for polygon in polygons for v in polygon[0::2]]
    ys = [v for polygon in polygons for v in polygon[1::2]]
    return [min(xs), min(ys), max(xs), max(ys)]


def _text_of(row: dict[str, Any], task: str) -> str:
    keys = TEXT_COLUMNS.get(task, ("text", "caption"))
    return next((str(row[k]).strip() for k in keys if isinstance(row.get(k), str) and row[k].strip()), "")


# --- files → rows -------------------------------------------------------------------------------


def is_task_file(path: Path) -> bool:
    """A COCO JSON, or JSON lines whose first row carries boxes or a non-VQA task (read once, by local.kind_of)."""
    try:
        if path.suffix == ".json":
            if path.name in DATASETS_METADATA:
                return False
            with path.open("rb") as handle:
                head = handle.read(1 << 20).decode("utf-8", errors="replace")
            # COCO files put "images" first and it can run to megabytes before "annotations" starts
            return head.lstrip().startswith("{") and ('"annotations"' in head or '"images"' in head)
        if path.suffix == ".jsonl":
            first = next((line for _, line in json_lines(path)), None)  # a bad line later must not hide the kind
            row = json.loads(first) if first else {}
            return isinstance(row, dict) and (any(k in row for k in ("boxes", "objects", "polygons", "quad_boxes",
                                                                     "fields"))
                                              or row.get("task", tasks.VQA) != tasks.VQA)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return False


def read_rows(files: list[str], stamps: list[str]) -> Iterator[dict[str, Any]]:
    """Rows of COCO JSON and task JSON-lines files in the one schema of ``features()``; a broken line is a
    row with ``error``. ``stamps`` (the files' content digests) only feed the datasets cache key."""
    del stamps
    for name in files:
        file = Path(name)
        yield from (_coco_rows(file) if file.suffix == ".json" else _jsonl_rows(file))


def _row(**values: Any) -> dict[str, Any]:
    return {**dict.fromkeys(ROW_COLUMNS), **values}


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    for number, line in json_lines(path):
        yield _jsonl_row(line, path, number)


def _jsonl_row(line: str | None, path: Path, number: int) -> dict[str, Any]:
    row_id = f"{path.stem}-{number}"
    if line is None:
        return _row(id=row_id, error="not_utf8")
    try:
        data = json.loads(line)
    except ValueError:
        return _row(id=row_id, error="bad_json_line")
    if not isinstance(data, dict) or not isinstance(data.get("image"), str) or not data["image"]:
        return _row(id=row_id, error="bad_json_line" if not isinstance(data, dict) else "no_image")
    labels, boxes = data.get("labels"), data.get("boxes")
    if data.get("objects") is not None:
        objects = [o for o in data["objects"] if isinstance(o, dict)]
        labels = [o.get("label", o.get("category", "")) for o in objects]
        boxes = [o.get("bbox", o.get("box")) for o in objects]
    if boxes is not None and labels is not None and len(boxes) == len(labels):
        pairs = [(label, box) for label, box in zip(labels, boxes, strict=True) if box is not None]  # no box: no object
        corners = [_corners(box) for _, box in pairs]
        if None in corners:
            return _row(id=row_id, error="bad_box")
        labels, boxes = [as_text(label) or "" for label, _ in pairs], corners
    elif boxes is not None or labels is not None:
        labels, boxes = list(labels or []), list(boxes or [])  # unequal counts: the adapter counts the row
        boxes = [_corners(box) or [] for box in boxes]
        labels = [as_text(label) or "" for label in labels]
    text = {key: str(data[key]) if data.get(key) is not None else None
            for key in ("phrase", "caption", "detailed_caption", "more_detailed_caption", "text", "split")}
    if text["text"] is None and data.get("answer") is not None:
        text["text"] = str(data["answer"])
    fields = data.get("fields", data.get("answer") if isinstance(data.get("answer"), dict | list) else None)
    try:
        shapes = {"polygons": _polygons_of(data.get("polygons")), "quad_boxes": _numbers(data.get("quad_boxes"), 8),
                  "region": _corners(data["region"]) if data.get("region") is not None else None}
    except ValueError:
        return _row(id=str(data.get("id") or row_id), error="bad_shape")
    if data.get("region") is not None and shapes["region"] is None:
        return _row(id=str(data.get("id") or row_id), error="bad_region")
    lists = {key: [as_text(v) or "" for v in data[key]] if isinstance(data.get(key), list) else None
             for key in ("descriptions", "texts")}
    return _row(id=str(data.get("id") or row_id), image=image_path(path.parent, data["image"]),
                task=data.get("task"), width=data.get("width"), height=data.get("height"), labels=labels,
                boxes=boxes, fields=json.dumps(fields, ensure_ascii=False) if fields is not None and not
                isinstance(fields, str) else fields, **shapes, **lists, **text)


def _polygons_of(value: Any) -> list[list[list[float]]] | None:
    """Per object its polygons: ``[[x1, y1, x2, y2, ...], ...]`` is one polygon per object, and
    ``[[[x1, y1, ...], [...]], ...]`` several per object. ValueError for anything else."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError("polygons")
    objects = []
    for item in value:
        if not isinstance(item, list):
            raise ValueError("polygons")
        polygons = [item] if all(isinstance(v, int | float) for v in item) else item
        objects.append([_numbers([polygon], None)[0] for polygon in polygons])
    return objects


def _numbers(value: Any, length: int | None) -> list[list[float]] | None:
    """A list of number lists (each ``length`` long when given), as floats; ValueError for anything else."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, list) for item in value):
        raise ValueError("numbers")
    found = [[float(v) for v in item] for item in value]
    if any(not all(math.isfinite(v) for v in item) or (length and len(item) != length) for item in found):
        raise ValueError("numbers")
    return found


def _corners(box: Any, sizes: bool = False) -> list[float] | None:
    """[x1, y1, x2, y2] as floats from ``box`` ([x, y, width, height] if ``sizes``, COCO's form), or None when
    it is not four finite numbers with the far corner at or after the near one."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        return None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return None
    x1, y1, x2, y2 = values
    if sizes:
        x2, y2 = x1 + x2, y1 + y2
    return [x1, y1, x2, y2] if x2 >= x1 and y2 >= y1 else None


def _coco_rows(path: Path) -> Iterator[dict[str, Any]]:
    """One row per COCO image, boxes converted from [x, y, w, h] to [x1, y1, x2, y2], polygon segmentations
    kept per object. A bad annotation makes its image's row an ``error`` row (``bad_box``,
    ``unknown_category``): training on that page without the object would teach the model it is not there.
    Crowd annotations are left out, as COCO evaluation sets them apart, and counted (``crowd_left_out``); an
    RLE mask is no polygon, so segmentation leaves its object out (counted ``polygon_left_out``), while
    detection still trains on its box. The task is the spec's (``instances.json:region_to_segmentation``),
    <OD> by default."""
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        names = {c["id"]: str(c["name"]) for c in coco.get("categories", [])}
        images, annotations = list(coco["images"]), list(coco["annotations"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"'{path}' is not a COCO detection file ({type(exc).__name__}: {exc}); it needs "
                         "'images', 'annotations' and 'categories' lists") from None
    by_image: dict[Any, list[dict[str, Any]]] = {}
    crowds: dict[Any, int] = {}
    for annotation in annotations:
        if isinstance(annotation, dict) and annotation.get("iscrowd"):
            crowds[annotation.get("image_id")] = crowds.get(annotation.get("image_id"), 0) + 1
        elif isinstance(annotation, dict):
            by_image.setdefault(annotation.get("image_id"), []).append(annotation)
    for image in images:
        if not isinstance(image, dict):
            continue
        row_id = str(image.get("id"))
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            yield _row(id=row_id, error="no_image")
            continue
        found = by_image.get(image.get("id"), [])
        boxes = [_corners(a.get("bbox"), sizes=True) for a in found]
        labels = [names.get(a.get("category_id")) for a in found]
        error = "bad_box" if None in boxes else "unknown_category" if None in labels else None
        polygons = [_coco_polygons(a.get("segmentation")) for a in found]
        yield _row(id=row_id, image=image_path(path.parent, image["file_name"]), width=image.get("width"),
                   height=image.get("height"), labels=None if error else labels,
                   boxes=None if error else boxes, polygons=None if error or not any(polygons) else polygons,
                   notes=["crowd_left_out"] * crowds.get(image.get("id"), 0), error=error)


def _coco_polygons(segmentation: Any) -> list[list[float]]:
    """An annotation's polygons (COCO's list of flat x, y lists); none for an RLE mask or a malformed one."""
    if not isinstance(segmentation, list):
        return []  # RLE ({"counts", "size"}) or absent
    try:
        return [[float(v) for v in polygon] for polygon in segmentation if isinstance(polygon, list)]
    except (TypeError, ValueError):
        return []


def image_path(folder: Path, name: str) -> str:
    """Where an annotation's image lives: next to it, in images/, or one folder up (COCO's layout)."""
    candidates = [folder / name, folder / "images" / name, folder.parent / name, folder.parent / "images" / name]
    return str(next((c for c in candidates if c.is_file()), candidates[0]).resolve())

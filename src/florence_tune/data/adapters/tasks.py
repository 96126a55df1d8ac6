"""Rows for the Florence-2 tasks beyond VQA: object detection, phrase grounding, OCR, captioning.

Read through the same stack as VQA data (specs, sources, held-out validation, streaming, mixtures,
limits). Accepted ``--dataset`` forms (boxes in pixels of the image file):

* a COCO detection JSON (``images``, ``annotations`` with ``[x, y, width, height]`` boxes,
  ``categories``); image ``file_name``s are looked up next to the JSON, in its ``images/`` folder, or
  one folder up. Crowd annotations are left out, as COCO evaluation treats them apart.
* a JSON-lines file, one image per line::

      {"image": "pages/1.png", "boxes": [[x1, y1, x2, y2], ...], "labels": ["table", ...]}
      {"image": "a.png", "objects": [{"label": "table", "bbox": [x1, y1, x2, y2]}]}
      {"image": "b.png", "task": "<CAPTION_TO_PHRASE_GROUNDING>", "caption": "a table and a stamp",
       "boxes": [...], "labels": ["a table", "a stamp"]}
      {"image": "c.png", "task": "<OCR>", "text": "TOTAL 12.50"}
      {"image": "d.png", "task": "<CAPTION>", "caption": "an invoice on blue paper"}

  optional keys: ``id``, ``split`` (rows are filtered by it when any row has one);
* a folder of such files, their split read from the file or folder name (``train.json``,
  ``validation.jsonl``...); a source without a validation split holds out its first rows, as VQA does;
* ``synthetic:detection`` (or ``synthetic:od``), ``synthetic:caption``, ``synthetic:ocr`` — the
  built-in pages with their regions, caption and drawn text.

Each row becomes a ``Sample`` whose prompt is the task token (plus the caption for grounding), whose
target is the answer the way Florence-2 writes it (``label<loc_..>x4`` per box, see tasks.py), and
whose ``meta`` carries ``task``, and for box tasks the reference ``boxes`` / ``labels`` in pixels and
the ``image_size``, so evaluation can score them with mAP. Adapters never tokenize.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from florence_tune import tasks
from florence_tune.data.images import BadImage, image_size
from florence_tune.data.rows import BadSample, Item, as_text, json_lines, rooted, single_image
from florence_tune.data.sample import ALTERED, Sample, Skipped
from florence_tune.errors import UsageError

# ``synthetic:<name>``: the built-in pages, and the task each name trains.
SYNTHETIC_TASKS = {"detection": tasks.OD, "od": tasks.OD, "caption": tasks.CAPTION, "ocr": tasks.OCR}
# Columns that mark task rows (a VQA row has a question instead).
MARKER_COLUMNS = frozenset({"boxes", "objects", "task"})
# JSON files a save_to_disk folder holds; never annotation files.
DATASETS_METADATA = frozenset({"dataset_dict.json", "state.json", "dataset_info.json"})
# What a sample's ALTERED list says when a <loc_N> of the user's had to become a token (fit_locations).
CLAMPED_LOCATIONS = "clamped_locations"


def features():
    """The one schema of task rows, whatever file they were read from."""
    import datasets

    text = datasets.Value("string")
    return datasets.Features({
        "id": text, "image": text, "task": text, "width": datasets.Value("int32"),
        "height": datasets.Value("int32"), "labels": datasets.List(text),
        "boxes": datasets.List(datasets.List(datasets.Value("float64"))), "caption": text, "text": text,
        "split": text, "error": text,
    })


# --- rows → samples -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Adapter:
    """Task rows: one image, one task per row; the answer is built from boxes, a caption or a text."""

    default_task: str = tasks.OD  # for rows without a "task" value
    root: str | None = None  # the dataset folder that relative image paths are read against (see rows.rooted)
    image_columns: tuple[str, ...] = ("image",)

    def drafts(self, row: dict[str, Any]) -> list[Item]:
        if row.get("error"):
            return [Skipped(row["error"])]
        try:
            return [fit_locations(self._draft(row))]
        except BadImage as exc:  # the size of a box task's image could not be read
            return [Skipped(f"image_{exc.reason}")]
        except BadSample as exc:
            return [Skipped(exc.reason)]

    def image(self, row: dict[str, Any], draft: int | None = None):
        return single_image(row, draft, self.root)

    def _draft(self, row: dict[str, Any]) -> Sample:
        task = row.get("task") or self.default_task
        meta: dict[str, Any] = {"task": task, "question": task, "question_type": task}
        declared = _declared_size(row)
        if declared and declared != self._size(row):  # checked per row: rows may share a page
            raise BadSample("image_size_mismatch")  # its boxes were drawn on an image of another size
        if task in tasks.BOX_TASKS:
            return self._box_draft(row, task, meta)
        text = _text_of(row, task)
        if not text:
            raise BadSample("no_answer")
        return Sample(id=_id_of(row), image=None, prompt=tasks.prompt_for(task), target=text,
                      references=[text], meta=meta)

    def _size(self, row: dict[str, Any]) -> tuple[int, int]:
        """The page's size from its header only: nothing decoded."""
        if not row.get("image"):
            raise BadSample("no_image")
        return image_size(rooted(row["image"], self.root))

    def _box_draft(self, row: dict[str, Any], task: str, meta: dict[str, Any]) -> Sample:
        size = _declared_size(row) or self._size(row)
        labels, boxes = _objects(row, size)
        if not boxes:
            raise BadSample("no_boxes")
        caption = str(row.get("caption") or row.get("text") or "").strip() if task == tasks.GROUNDING else ""
        if task == tasks.GROUNDING and not caption:
            raise BadSample("no_caption")
        target = tasks.encode_objects(labels, boxes, size)
        meta.update({"boxes": boxes, "labels": labels, "image_size": list(size)})
        return Sample(id=_id_of(row), image=None, prompt=tasks.prompt_for(task, caption), target=target,
                      references=[target], meta=meta)


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


def _objects(row: dict[str, Any], size: tuple[int, int]) -> tuple[list[str], list[list[float]]]:
    """Labels and boxes cut to the image, in reading order (top to bottom, then left to right)."""
    boxes, labels = list(row.get("boxes") or []), list(row.get("labels") or [])
    if len(labels) != len(boxes):
        raise BadSample("boxes_labels_mismatch")
    kept = []
    for label, box in zip(labels, boxes, strict=True):
        clean = tasks.clean_label(label)
        clipped = tasks.clip_box(box, size) if box is not None and len(box) == 4 else None
        if clean and clipped:
            kept.append((clipped[1], clipped[0], clean, clipped))
    kept.sort(key=lambda item: (item[0], item[1]))
    return [label for _, _, label, _ in kept], [box for _, _, _, box in kept]


def _text_of(row: dict[str, Any], task: str) -> str:
    keys = ("caption", "text") if task in tasks.CAPTION_TASKS else ("text", "caption")
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
            return isinstance(row, dict) and (any(k in row for k in ("boxes", "objects"))
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
    empty = {name: None for name in ("id", "image", "task", "width", "height", "labels", "boxes", "caption",
                                     "text", "split", "error")}
    return {**empty, **values}


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
    text = {key: str(data[key]) if data.get(key) is not None else None for key in ("caption", "text", "split")}
    if text["text"] is None and data.get("answer") is not None:
        text["text"] = str(data["answer"])
    return _row(id=str(data.get("id") or row_id), image=image_path(path.parent, data["image"]),
                task=data.get("task"), width=data.get("width"), height=data.get("height"), labels=labels,
                boxes=boxes, **text)


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
    """One row per COCO image, boxes converted from [x, y, w, h] to [x1, y1, x2, y2]. A bad annotation makes
    its image's row an ``error`` row (``bad_box``, ``unknown_category``): training on that page without the
    object would teach the model it is not there."""
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        names = {c["id"]: str(c["name"]) for c in coco.get("categories", [])}
        images, annotations = list(coco["images"]), list(coco["annotations"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"'{path}' is not a COCO detection file ({type(exc).__name__}: {exc}); it needs "
                         "'images', 'annotations' and 'categories' lists") from None
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for annotation in annotations:
        if isinstance(annotation, dict) and not annotation.get("iscrowd"):
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
        yield _row(id=row_id, image=image_path(path.parent, image["file_name"]), width=image.get("width"),
                   height=image.get("height"), task=tasks.OD, labels=None if error else labels,
                   boxes=None if error else boxes, error=error)


def image_path(folder: Path, name: str) -> str:
    """Where an annotation's image lives: next to it, in images/, or one folder up (COCO's layout)."""
    candidates = [folder / name, folder / "images" / name, folder.parent / name, folder.parent / "images" / name]
    return str(next((c for c in candidates if c.is_file()), candidates[0]).resolve())

"""Datasets for the Florence-2 tasks beyond VQA: object detection, phrase grounding, OCR, captioning.

Accepted ``--dataset`` forms (boxes in pixels of the image file):

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

  optional keys: ``id``, ``split`` (rows are filtered by it when any row has one).
* a folder holding ``{split}.json`` / ``{split}.jsonl`` files, or one ``annotations.json`` or
  ``*.jsonl`` files for every split;
* ``synthetic:detection`` (or ``synthetic:od``), ``synthetic:caption``, ``synthetic:ocr`` — the
  built-in pages (data/synthetic.py) with their regions, caption and drawn text.

Each row becomes a ``Sample`` whose prompt is the task token (plus the caption for grounding),
whose target is the answer the way Florence-2 writes it (``label<loc_..>x4`` per box, see tasks.py),
and whose ``meta`` carries ``task``, and for box tasks the reference ``boxes`` / ``labels`` in pixels
and the ``image_size``, so evaluation can score them with mAP. Adapters never tokenize.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from florence_tune import tasks
from florence_tune.data.sample import Sample
from florence_tune.errors import UsageError

log = logging.getLogger(__name__)

SYNTHETIC_TASKS = {"detection": tasks.OD, "od": tasks.OD, "caption": tasks.CAPTION, "ocr": tasks.OCR}
_TASK_KEYS = ("boxes", "objects")
# JSON files a save_to_disk folder holds; never annotation files.
_DATASETS_METADATA = {"dataset_dict.json", "state.json", "dataset_info.json"}


class TaskDataset:
    """Map-style dataset over task rows (dicts or a Hugging Face ``Dataset``); images open lazily."""

    def __init__(self, rows: Sequence[dict[str, Any]], name: str, default_task: str = tasks.OD):
        self.rows = rows
        self.name = name
        self.default_task = default_task  # for rows without a "task" key

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        from florence_tune.data import Skipped
        from florence_tune.data.images import BadImage, open_image

        row = self.rows[int(index)]
        try:
            return to_sample(row, open_image(row["image"]), self.default_task)
        except BadImage as exc:
            return Skipped(f"image_{exc.reason}")
        except BadRow as exc:
            return Skipped(exc.reason)

    def text_samples(self, limit: int = 0) -> list[Sample]:
        """No question-answer pairs here, so the image-blind VQA baseline has nothing to count."""
        return []


class BadRow(Exception):
    """A row that cannot become a sample; ``reason`` is the counter key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- rows → samples -----------------------------------------------------------------------------


def to_sample(row: dict[str, Any], image, default_task: str = tasks.OD) -> Sample:
    """One task row plus its opened RGB image → Sample (raises BadRow for unusable rows)."""
    task = row.get("task") or default_task
    size = image.size
    declared = (row.get("width"), row.get("height"))
    if all(declared) and tuple(int(v) for v in declared) != size:
        raise BadRow("image_size_mismatch")  # boxes were drawn on an image of another size
    meta: dict[str, Any] = {"task": task, "question": task, "question_type": task, "image_size": list(size)}
    if task in tasks.BOX_TASKS:
        return _box_sample(row, image, task, meta)
    text = _text_of(row, task)
    if not text:
        raise BadRow("no_answer")
    return Sample(id=_id_of(row), image=image, prompt=tasks.prompt_for(task), target=text,
                  references=[text], meta=meta)


def _box_sample(row: dict[str, Any], image, task: str, meta: dict[str, Any]) -> Sample:
    labels, boxes = _objects(row, image.size)
    if not boxes:
        raise BadRow("no_boxes")
    target = tasks.encode_objects(labels, boxes, image.size)
    caption = str(row.get("caption") or row.get("text") or "").strip() if task == tasks.GROUNDING else ""
    if task == tasks.GROUNDING and not caption:
        raise BadRow("no_caption")
    meta.update({"boxes": boxes, "labels": labels})
    return Sample(id=_id_of(row), image=image, prompt=tasks.prompt_for(task, caption), target=target,
                  references=[target], meta=meta)


def _id_of(row: dict[str, Any]) -> str:
    return str(row.get("id") or row.get("docId") or "")


def _objects(row: dict[str, Any], size: tuple[int, int]) -> tuple[list[str], list[list[float]]]:
    """Labels and boxes cut to the image, in reading order (top to bottom, then left to right)."""
    if row.get("objects") is not None:
        pairs = [(obj.get("label", obj.get("category", "")), obj.get("bbox", obj.get("box"))) for obj in row["objects"]]
    else:
        boxes, labels = list(row.get("boxes") or []), list(row.get("labels") or [])
        if len(labels) != len(boxes):
            raise BadRow("boxes_labels_mismatch")
        pairs = list(zip(labels, boxes, strict=True))
    kept = []
    for label, box in pairs:
        clean = tasks.clean_label(label)
        clipped = tasks.clip_box(box, size) if box is not None and len(box) == 4 else None
        if clean and clipped:
            kept.append((clipped[1], clipped[0], clean, clipped))
    kept.sort(key=lambda item: (item[0], item[1]))
    return [label for _, _, label, _ in kept], [box for _, _, _, box in kept]


def _text_of(row: dict[str, Any], task: str) -> str:
    keys = ("caption", "text") if task in tasks.CAPTION_TASKS else ("text", "caption", "answer")
    return next((str(row[k]).strip() for k in keys if isinstance(row.get(k), str) and row[k].strip()), "")


# --- sources ------------------------------------------------------------------------------------


def is_task_spec(spec: str) -> bool:
    """Whether ``spec`` names a dataset this module reads (checked before the VQA forms)."""
    if spec.startswith("synthetic:"):
        return True
    path = Path(spec).expanduser()
    if path.is_file():
        return _file_has_tasks(path)
    if path.is_dir():
        files = [*path.glob("*.json"), *path.glob("*.jsonl")]
        return any(_file_has_tasks(f) for f in files if f.name not in _DATASETS_METADATA)
    return False


def load(spec: str, split: str, *, limit: int = 0) -> TaskDataset:
    default_task = tasks.OD
    if spec.startswith("synthetic:"):
        name = spec.split(":", 1)[1]
        rows, default_task = synthetic_rows(name, split), SYNTHETIC_TASKS[name]
    else:
        rows = _rows_for_split(_split_files(Path(spec).expanduser(), split), split, spec)
    if limit and limit < len(rows):
        rows = rows.select(range(limit)) if hasattr(rows, "select") else rows[:limit]
    return TaskDataset(rows, spec, default_task)


def synthetic_rows(task_name: str, split: str):
    """Rows of the built-in pages for one task, straight from the generated parquet file."""
    import datasets

    from florence_tune.data import synthetic, synthetic_root

    if task_name not in SYNTHETIC_TASKS:
        raise UsageError(f"unknown synthetic task '{task_name}'; choose from {', '.join(sorted(SYNTHETIC_TASKS))}")
    root = synthetic.write_dataset(synthetic_root())
    if not synthetic.documents_file(root, split).exists():
        raise UsageError(f"dataset 'synthetic:{task_name}' has no split '{split}'")
    rows = datasets.load_dataset("parquet", data_files={split: str(synthetic.documents_file(root, split))},
                                 split=split)
    return rows.cast_column("image", datasets.Image(decode=False))


def _split_files(path: Path, split: str) -> list[Path]:
    if path.is_file():
        return [path]
    for name in (f"{split}.json", f"{split}.jsonl"):
        if (path / name).is_file():
            return [path / name]
    shared = [path / "annotations.json"] if (path / "annotations.json").is_file() else sorted(path.glob("*.jsonl"))
    shared = [f for f in shared if _file_has_tasks(f)]
    if not shared:
        raise UsageError(f"dataset folder '{path}' has no split '{split}' ({split}.json or {split}.jsonl) "
                         "and no annotations.json or *.jsonl for every split")
    return shared


def _rows_for_split(files: list[Path], split: str, spec: str) -> list[dict[str, Any]]:
    rows = [row for file in files for row in (_coco_rows(file) if file.suffix == ".json" else _jsonl_rows(file))]
    if any("split" in row for row in rows):
        rows = [row for row in rows if row.get("split") == split]
        if not rows:
            raise UsageError(f"dataset '{spec}' has no rows with split '{split}'")
    elif not any(f.stem == split for f in files):
        log.warning("dataset '%s' names no splits; split '%s' uses all of its %d rows", spec, split, len(rows))
    return rows


def _file_has_tasks(path: Path) -> bool:
    """A COCO JSON, or JSON lines whose first row carries boxes or a non-VQA task."""
    try:
        if path.suffix == ".json":
            with path.open() as handle:
                head = handle.read(1 << 20)
            # COCO files put "images" first and it can run to megabytes before "annotations" starts
            return head.lstrip().startswith("{") and ('"annotations"' in head or '"images"' in head)
        if path.suffix == ".jsonl":
            with path.open() as handle:
                first = next((line for line in handle if line.strip()), "")
            row = json.loads(first) if first else {}
            return isinstance(row, dict) and (any(k in row for k in _TASK_KEYS)
                                              or row.get("task", tasks.VQA) != tasks.VQA)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return False


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise UsageError(f"{path}:{number} is not valid JSON") from None
            if not isinstance(row, dict) or "image" not in row:
                raise UsageError(f"{path}:{number} needs an object with an \"image\" key")
            row.setdefault("id", f"{path.stem}-{number}")
            row["image"] = _image_path(path.parent, str(row["image"]))
            rows.append(row)
    return rows


def _coco_rows(path: Path) -> list[dict[str, Any]]:
    """One row per COCO image, boxes converted from [x, y, w, h] to [x1, y1, x2, y2]."""
    try:
        coco = json.loads(path.read_text())
        names = {c["id"]: c["name"] for c in coco.get("categories", [])}
        by_image: dict[Any, list[dict[str, Any]]] = {}
        for annotation in coco["annotations"]:
            if not annotation.get("iscrowd"):
                by_image.setdefault(annotation["image_id"], []).append(annotation)
        rows = []
        for image in coco["images"]:
            found = by_image.get(image["id"], [])
            rows.append({
                "id": str(image["id"]),
                "image": _image_path(path.parent, image["file_name"]),
                "width": image.get("width"), "height": image.get("height"),
                "task": tasks.OD,
                "labels": [names.get(a["category_id"], str(a["category_id"])) for a in found],
                "boxes": [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in found)],
            })
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"'{path}' is not a COCO detection file ({type(exc).__name__}: {exc})") from None
    return rows


def _image_path(folder: Path, name: str) -> str:
    """Where an annotation's image lives: next to it, in images/, or one folder up (COCO's layout)."""
    candidates = [folder / name, folder / "images" / name, folder.parent / name, folder.parent / "images" / name]
    return str(next((c for c in candidates if c.is_file()), candidates[0]))

"""The user's own data on disk: JSON lines with images, parquet files, ``save_to_disk`` folders.

Accepted paths (``--dataset PATH``):

* a JSON-lines file, one sample a line, image paths relative to the file — the format Roboflow's
  maestro uses, or a question with its answers::

      {"image": "pages/1.jpg", "prefix": "<VQA>What is the total?", "suffix": "$12.50"}
      {"image": "pages/2.jpg", "question": "What is the date?", "answers": ["4 May", "May 4"]}

* a folder of such files: ``train/annotations.jsonl``, ``valid/annotations.jsonl`` (maestro's layout)
  or ``train.jsonl``, ``validation.jsonl``...; the split is read from the folder or file name;
* parquet files (one file, or a folder of them named by split, as on the hub), or a copy of a hub
  dataset with several configurations (``./the_cauldron:chartqa``);
* a folder written by ``save_to_disk`` (a DatasetDict, or one Dataset that is the train split).

Columns decide the adapter: DocVQA-shaped (``image``, ``question``, ``answers``), Cauldron-shaped
(``images``, ``texts``) or prompt/target (``image``, ``prefix``, ``suffix``). A JSONL line that is not
valid JSON, or whose image path leaves the dataset folder (``../../etc/passwd``), becomes one
counted ``Skipped`` sample instead of stopping the run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from florence_tune.data.adapters import docvqa, tasks
from florence_tune.data.images import is_url
from florence_tune.data.rows import Item, as_text, json_lines
from florence_tune.data.sample import Sample, Skipped
from florence_tune.errors import UsageError

JSONL_SUFFIXES = (".jsonl", ".json")
# Split names as people spell them in folder and file names → the names our commands use.
SPLIT_WORDS = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
               "val": "validation", "dev": "validation", "eval": "validation", "test": "test", "testing": "test"}
_DISK_MARKERS = ("dataset_dict.json", "state.json")


def jsonl_features():
    import datasets

    text = datasets.Value("string")
    return datasets.Features({"image": text, "prefix": text, "suffix": text, "question": text,
                              "answers": datasets.List(text), "id": text, "error": text})


# --- where the files are -------------------------------------------------------------------------


def kind_of(path: Path) -> str:
    """'disk' (save_to_disk), 'tasks' (COCO JSON or JSON lines with boxes / a task, see tasks.py), 'jsonl'
    (VQA JSON lines), or 'files' (parquet / a hub-layout copy, read by load_dataset). Decided here, once."""
    if path.is_file():
        if path.suffix in JSONL_SUFFIXES:
            return "tasks" if tasks.is_task_file(path) else "jsonl"
        if path.suffix == ".parquet":
            return "files"
        raise UsageError(f"dataset file '{path}' is neither JSON lines (.jsonl) nor parquet (.parquet)")
    if any((path / marker).exists() for marker in _DISK_MARKERS):
        return "disk"
    files = _jsonl_files(path)
    if files:
        return "tasks" if any(tasks.is_task_file(f) for f in files) else "jsonl"
    if any(path.rglob("*.parquet")) or (path / "README.md").exists():
        return "files"
    raise UsageError(f"dataset folder '{path}' holds no JSON lines, parquet files or save_to_disk dataset; "
                     "see 'florence-tune train --help' for the accepted forms")


def _jsonl_files(folder: Path) -> list[Path]:
    return sorted(p for suffix in JSONL_SUFFIXES for p in folder.rglob(f"*{suffix}")
                  if p.name not in tasks.DATASETS_METADATA and "__pycache__" not in p.parts)


def split_of(relative: Path) -> str:
    """The split a file belongs to, from its folder or file name ('valid/annotations.jsonl' → validation)."""
    words = [*relative.parent.parts, *relative.stem.replace("-", "_").split("_")]
    words = [word.lower().rstrip("0123456789") for word in words]  # COCO's instances_val2017.json → val
    return next((SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS), "train")


def jsonl_splits(path: Path) -> dict[str, list[Path]]:
    root = path.parent if path.is_file() else path
    files = [path] if path.is_file() else _jsonl_files(path)
    splits: dict[str, list[Path]] = {}
    for file in files:
        splits.setdefault(split_of(file.relative_to(root)), []).append(file)
    return splits


# --- reading JSON lines ----------------------------------------------------------------------------


def read_jsonl(files: list[str], root: str, stamps: list[str]) -> Iterator[dict[str, Any]]:
    """Rows of every line of ``files`` in one fixed schema; a broken line is a row with ``error``.

    ``stamps`` (a digest of each file's bytes) only feed the datasets cache key, which datasets derives
    from these arguments: with the resolved paths, a copy elsewhere or an edited file is read afresh
    instead of being served rows (and absolute image paths) cached for another one.
    """
    del stamps
    for name in files:
        file = Path(name)
        for number, line in json_lines(file):
            yield normalise_line(line, file, Path(root), number)


def normalise_line(line: str | None, file: Path, root: Path, number: int) -> dict[str, Any]:
    row: dict[str, Any] = {"image": None, "prefix": None, "suffix": None, "question": None, "answers": None,
                           "id": f"{file.stem}:{number}", "error": None}
    if line is None:
        return {**row, "error": "not_utf8"}
    try:
        data = json.loads(line)
    except ValueError:
        return {**row, "error": "bad_json_line"}
    if not isinstance(data, dict):
        return {**row, "error": "bad_json_line"}
    for key in ("prefix", "question"):
        row[key] = data[key] if isinstance(data.get(key), str) else None
    row["suffix"] = as_text(data.get("suffix"))
    answers = data["answers"] if data.get("answers") is not None else data.get("answer")
    row["answers"] = docvqa.valid_answers(answers)
    if data.get("id") is not None:
        row["id"] = str(data["id"])
    image = data.get("image")
    if isinstance(image, str) and image:
        row["image"] = inside(root, file.parent, image)
        if row["image"] is None:
            row["error"] = "path_outside_dataset"
    return row


def inside(root: Path, folder: Path, name: str) -> str | None:
    """``name`` resolved against ``folder``, or None when it points outside ``root`` (symlinks followed). A URL
    is left as it is: images.py refuses it with its own reason."""
    if is_url(name):
        return name
    candidate = Path(os.path.realpath(folder / name))
    return str(candidate) if candidate.is_relative_to(os.path.realpath(root)) else None


def file_stamps(files: list[Path]) -> list[str]:
    """Content digests: size and mtime survive cp -a, tar and rsync, so they cannot tell copies apart."""
    digests = []
    for file in files:
        digest = hashlib.blake2b()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):  # hashlib.file_digest needs Python 3.11
                digest.update(block)
        digests.append(digest.hexdigest())
    return digests


def jsonl_rows(files: list[Path], root: Path, streaming: bool):
    """A datasets ``Dataset`` (cached as Arrow, memory-mapped) or ``IterableDataset`` of the lines."""
    import datasets

    files = [Path(os.path.realpath(f)) for f in files]
    kwargs = {"files": [str(f) for f in files], "root": os.path.realpath(root), "stamps": file_stamps(files)}
    if streaming:  # one shard per file, so workers and ranks split by file when they can
        return datasets.IterableDataset.from_generator(read_jsonl, features=jsonl_features(), gen_kwargs=kwargs)
    return datasets.Dataset.from_generator(read_jsonl, features=jsonl_features(), gen_kwargs=kwargs)


def task_splits(path: Path, streaming: bool) -> dict:
    """Split name → a function returning the task rows of that split (see tasks.py).

    Rows that carry a ``split`` value are split by it; otherwise files are, by their names. Rows are read
    into a cached Arrow table first (annotation files are small), and streamed from it when asked."""
    import datasets

    root = Path(os.path.realpath(path.parent if path.is_file() else path))
    files = [Path(os.path.realpath(f)) for f in ([path] if path.is_file() else _jsonl_files(path))]
    files = [f for f in files if tasks.is_task_file(f)]

    def table(chosen: list[Path]):
        try:
            return datasets.Dataset.from_generator(tasks.read_rows, features=tasks.features(),
                                                   gen_kwargs={"files": [str(f) for f in chosen],
                                                               "stamps": file_stamps(chosen)})
        except datasets.exceptions.DatasetGenerationError as exc:  # our own one-line message, unwrapped
            if isinstance(exc.__cause__, UsageError):
                raise exc.__cause__ from None
            raise

    def served(rows):
        return rows.to_iterable_dataset(num_shards=min(len(rows), 8) or 1) if streaming else rows

    everything = table(files)
    marked = sorted(value for value in everything.unique("split") if value)
    if marked:
        return {split: (lambda split=split: served(everything.filter(lambda value: value == split,
                                                                     input_columns="split")))
                for split in marked}
    by_split: dict[str, list[Path]] = {}
    for file in files:
        by_split.setdefault(split_of(file.relative_to(root)), []).append(file)
    return {split: (lambda chosen=chosen: served(table(chosen))) for split, chosen in by_split.items()}


# --- rows → samples --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Adapter(docvqa.Adapter):
    """Rows with ``image`` plus ``prefix``/``suffix`` (a whole prompt and its target) or ``question``/``answers``."""

    def drafts(self, row: dict[str, Any]) -> list[Item]:
        if row.get("error"):
            return [Skipped(row["error"])]
        if not isinstance(row.get("prefix"), str):
            return super().drafts(row)
        prompt, target = row["prefix"].strip(), (row.get("suffix") or "").strip()
        if not prompt:
            return [Skipped("no_question")]
        if self.require_answer and not target:
            return [Skipped("no_answer")]
        # maestro's prefix already starts with its task token (<VQA>, <OD>...); a bare one gets ours
        prompt = prompt if prompt.startswith("<") else self.task_prompt + prompt
        meta = {"question": prompt, "question_type": prompt.split(">", 1)[0] + ">" if ">" in prompt else "unknown"}
        return [Sample(id=str(row.get("id") or ""), image=None, prompt=prompt, target=target,
                       references=[target] if target else [], meta=meta)]

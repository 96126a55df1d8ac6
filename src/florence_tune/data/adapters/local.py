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
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from florence_tune.data.adapters import docvqa, tasks
from florence_tune.data.rows import BadSample, Item, as_text, inside, json_lines
from florence_tune.data.sample import Sample, Skipped
from florence_tune.errors import UsageError

log = logging.getLogger(__name__)
JSONL_SUFFIXES = (".jsonl", ".json")
# Split names as people spell them in folder and file names → the names our commands use.
SPLIT_WORDS = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
               "val": "validation", "dev": "validation", "eval": "validation", "test": "test", "testing": "test"}
_DISK_MARKERS = ("dataset_dict.json", "state.json")
# JSON files that models, tokenizers and trainers write: never samples.
_MODEL_FILES = frozenset({"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                          "special_tokens_map.json", "added_tokens.json", "vocab.json", "preprocessor_config.json",
                          "processor_config.json", "adapter_config.json", "trainer_state.json",
                          "model.safetensors.index.json"})
_SAMPLE_KEYS = frozenset({"image", "images", "question", "prefix", "answers", "answer"})
_RUN_MARKERS = ("metrics.jsonl", "summary.json", "final", "run.lock")


def jsonl_features():
    import datasets

    text = datasets.Value("string")
    return datasets.Features({"image": text, "prefix": text, "suffix": text, "question": text,
                              "answers": datasets.List(text), "id": text, "metric": text, "source": text,
                              "split": text, "error": text})


# --- where the files are -------------------------------------------------------------------------


def kind_of(path: Path) -> str:
    """'disk' (save_to_disk), 'tasks' (COCO JSON or JSON lines with boxes / a task, see tasks.py), 'jsonl'
    (VQA JSON lines), or 'files' (parquet / a hub-layout copy, read by load_dataset). Decided here, once."""
    if path.is_file():
        if path.suffix in JSONL_SUFFIXES:
            if tasks.is_task_file(path):
                return "tasks"
            if not _json_lines_file(path):
                raise UsageError(f"'{path}' is neither a COCO detection file (one JSON object with 'images', "
                                 "'annotations' and 'categories') nor JSON lines (one JSON object per line, e.g. "
                                 '{"image": "p.png", "question": "...", "answers": ["..."]})')
            return "jsonl"
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
    """The data files below ``folder``: not the metadata of a saved dataset, nor anything inside a run or a
    saved model (a run written into the dataset folder would otherwise become thousands of bad rows), nor a
    .json file that is neither COCO nor JSON lines (a label map, a notebook's settings)."""
    found = []
    for suffix in JSONL_SUFFIXES:
        for file in folder.rglob(f"*{suffix}"):
            parents = file.relative_to(folder).parents
            if (file.name in tasks.DATASETS_METADATA or file.name in _MODEL_FILES or "__pycache__" in file.parts
                    or any(_not_data(folder / parent) for parent in parents)):
                continue
            if suffix == ".json" and not (tasks.is_task_file(file) or _json_lines_file(file)):
                log.warning("left out %s: neither a COCO detection file nor JSON lines", file)
                continue
            found.append(file)
    return sorted(found)


def _not_data(folder: Path) -> bool:
    """A run's folder (its config.yaml beside its metrics or summary) or a saved model or checkpoint."""
    if (folder / "config.yaml").is_file() and any((folder / name).exists() for name in _RUN_MARKERS):
        return True
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()


def _json_lines_file(path: Path) -> bool:
    """Whether the first non-blank line of ``path`` is a JSON object with a sample's field (one sample a line)."""
    try:
        first = next((line for _, line in json_lines(path)), None)
        row = json.loads(first) if first else None
    except (OSError, ValueError, TypeError):
        return False
    return isinstance(row, dict) and bool(_SAMPLE_KEYS & row.keys())


def split_of(relative: Path) -> str:
    """The split a file belongs to, from its folder or file name ('valid/annotations.jsonl' → validation)."""
    words = [*relative.parent.parts, *relative.stem.replace("-", "_").split("_")]
    words = [word.lower().rstrip("0123456789") for word in words]  # COCO's instances_val2017.json → val
    return next((SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS), "train")


def jsonl_splits(path: Path, streaming: bool) -> dict[str, Callable]:
    """Split name → a function returning the question rows of that split (see ``_split``)."""
    root, files = _root_and_files(path)

    def table(chosen: list[Path]):
        return jsonl_rows(chosen, root, streaming=False)

    return _split(files, root, table, streaming, stream=lambda chosen: jsonl_rows(chosen, root, streaming=True))


def _root_and_files(path: Path) -> tuple[Path, list[Path]]:
    root = Path(os.path.realpath(path.parent if path.is_file() else path))
    return root, [Path(os.path.realpath(f)) for f in ([path] if path.is_file() else _jsonl_files(path))]


def _split(files: list[Path], root: Path, table: Callable, streaming: bool, stream: Callable | None = None) -> dict:
    """Split name → rows, for every kind of JSON lines: rows that carry a ``split`` value are split by it (rows
    without one are train); otherwise files are, by their names. Marked rows are read into a cached Arrow
    table first, and streamed from it when asked; unmarked files stream straight from the file."""

    def served(rows):
        return rows.to_iterable_dataset(num_shards=min(len(rows), 8) or 1) if streaming else rows

    if any(_mentions_split(file) for file in files):
        everything = table(files)
        marked = {value: SPLIT_WORDS.get(value.lower(), value) for value in everything.unique("split") if value}
        if marked:
            names = {split: [value for value, name in marked.items() if name == split] for split in marked.values()}
            names.setdefault("train", []).append(None)

            def rows_of(split: str):
                wanted = set(names[split])
                return served(everything.filter(lambda value: value in wanted, input_columns="split"))

            return {split: (lambda split=split: rows_of(split)) for split in names}
    by_split: dict[str, list[Path]] = {}
    for file in files:
        by_split.setdefault(split_of(file.relative_to(root)), []).append(file)
    read = stream if streaming and stream is not None else (lambda chosen: served(table(chosen)))
    return {split: (lambda chosen=chosen: read(chosen)) for split, chosen in by_split.items()}


def _mentions_split(file: Path) -> bool:
    """Whether ``"split"`` occurs in the file's bytes at all: the cheap test before parsing every row."""
    with file.open("rb") as handle:
        tail = b""
        for block in iter(lambda: handle.read(1 << 20), b""):
            if b'"split"' in tail + block:
                return True
            tail = block[-8:]
    return False


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
                           "id": f"{file.stem}:{number}", "metric": None, "source": None, "split": None,
                           "error": None}
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
    row["suffix"], row["split"] = as_text(data.get("suffix")), as_text(data.get("split"))
    row["metric"], row["source"] = as_text(data.get("metric")), as_text(data.get("source"))
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
    """Split name → a function returning the task rows of that split (see tasks.py and ``_split``)."""
    import datasets

    root, files = _root_and_files(path)
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

    return _split(files, root, table, streaming)


# --- rows → samples --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Adapter(docvqa.Adapter):
    """Rows with ``image`` plus ``prefix``/``suffix`` (a whole prompt and its target) or ``question``/``answers``."""

    def drafts(self, row: dict[str, Any]) -> list[Item]:
        return [tasks.fit_locations(d) if isinstance(d, Sample) else d for d in self._drafts(row)]

    def _drafts(self, row: dict[str, Any]) -> list[Item]:
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
        try:
            judging = docvqa.judged(row, self.name)
        except BadSample as exc:
            return [Skipped(exc.reason)]
        meta = {"question": prompt, "question_type": prompt.split(">", 1)[0] + ">" if ">" in prompt else "unknown",
                **judging}
        return [Sample(id=str(row.get("id") or ""), image=None, prompt=prompt, target=target,
                       references=[target] if target else [], meta=meta)]

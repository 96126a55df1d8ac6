"""Dataset specs → streams of ``Sample``s.

``load(spec, split)`` accepts:

* ``synthetic`` — the built-in document-VQA set (generated once into the cache, then loaded with
  ``datasets.load_dataset`` on its parquet files, the same call a hub id takes);
* ``docvqa`` — ``HuggingFaceM4/DocumentVQA`` on the hub;
* a hub id in the DocVQA schema;
* a local folder: a ``save_to_disk`` folder or a folder of parquet files in the DocVQA schema.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from florence_tune.data import docvqa
from florence_tune.data.docvqa import BadSample
from florence_tune.data.sample import Sample
from florence_tune.errors import FlorenceTuneError, UsageError

DATASET_FORMS = (
    "'synthetic', 'docvqa', a hub id in the DocVQA schema, or a local folder (save_to_disk or parquet files)"
)
SYNTHETIC_VERSION = "1"


@dataclass
class Skipped:
    """Placeholder for a row that could not be used; the collator drops it and counts ``reason``."""

    reason: str


class SampleDataset:
    """Map-style dataset over a Hugging Face ``Dataset``; images are decoded lazily and safely."""

    def __init__(self, rows, task_prompt: str, *, require_answer: bool = True, clean_questions: bool = False):
        self.rows = rows
        self.task_prompt = task_prompt
        self.require_answer = require_answer
        self.clean_questions = clean_questions

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample | Skipped:
        from florence_tune.data.images import BadImage, open_image

        row = self.rows[int(index)]
        try:
            image = open_image(row["image"])
            return docvqa.to_sample(row, image, self.task_prompt, require_answer=self.require_answer,
                                    clean_questions=self.clean_questions)
        except BadImage as exc:
            return Skipped(f"image_{exc.reason}")
        except BadSample as exc:
            return Skipped(exc.reason)

    def text_samples(self) -> list[Sample]:
        """Every usable row without decoding images (for baselines and statistics)."""
        columns = [c for c in self.rows.column_names if c != "image"]
        samples = []
        for row in self.rows.select_columns(columns):
            try:
                samples.append(docvqa.to_sample(row, None, self.task_prompt, require_answer=True))
            except BadSample:
                continue
        return samples


def synthetic_root() -> Path:
    from florence_tune.tiny import cache_root

    return cache_root() / f"synthetic-v{SYNTHETIC_VERSION}"


def _load_rows(spec: str, split: str):
    """Return a Hugging Face ``Dataset`` for ``spec``/``split`` with undecoded images."""
    import datasets

    if spec == "synthetic":
        from florence_tune.data import synthetic

        return _load_split(lambda: datasets.load_dataset(str(synthetic.write_dataset(synthetic_root())),
                                                         split=split), spec, split)
    if spec == "docvqa":
        spec = docvqa.HUB_ID
    path = Path(spec).expanduser()
    if path.exists():
        return _load_local(path, split)
    if "/" in spec and not spec.startswith((".", "/", "~")):
        from florence_tune.hub import prepare_for_hub

        prepare_for_hub()
        return _load_split(lambda: datasets.load_dataset(spec, split=split), spec, split, hub=True)
    raise UsageError(f"dataset '{spec}' not found; accepted forms: {DATASET_FORMS}")


def _load_local(path: Path, split: str):
    import datasets

    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        def load():
            loaded = datasets.load_from_disk(str(path))
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        return _load_split(load, str(path), split)
    if path.is_dir() and any(path.rglob("*.parquet")):
        return _load_split(lambda: datasets.load_dataset(str(path), split=split), str(path), split)
    raise UsageError(f"dataset folder '{path}' holds neither a save_to_disk dataset nor parquet files; "
                     f"accepted forms: {DATASET_FORMS}")


def _load_split(load, spec: str, split: str, hub: bool = False):
    import datasets

    try:
        rows = load()
    except KeyError:
        raise UsageError(f"dataset '{spec}' has no split '{split}'") from None
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise UsageError(f"dataset '{spec}' has no split '{split}'") from None
        raise
    except (OSError, ConnectionError) as exc:
        where = "the Hugging Face hub" if hub else "disk"
        raise FlorenceTuneError(
            f"could not load dataset '{spec}' from {where} ({str(exc).splitlines()[0][:160]}); "
            "point --dataset at a local copy (a save_to_disk folder or its parquet files), "
            "or run the embedded demo with 'florence-tune train'"
        ) from None
    missing = [c for c in docvqa.COLUMNS if c not in rows.column_names]
    if missing:
        raise UsageError(f"dataset '{spec}' lacks the DocVQA columns {missing} (has {rows.column_names})")
    return rows.cast_column("image", datasets.Image(decode=False))


def load(spec: str, split: str, task_prompt: str = "<VQA>", *, limit: int = 0,
         require_answer: bool = True, clean_questions: bool = False) -> SampleDataset:
    """The single entry point every command uses to get samples."""
    rows = _load_rows(spec, split)
    if limit and limit < len(rows):
        rows = rows.select(range(limit))
    return SampleDataset(rows, task_prompt, require_answer=require_answer, clean_questions=clean_questions)


def count_reasons(items: list[Any]) -> collections.Counter:
    return collections.Counter(item.reason for item in items if isinstance(item, Skipped))

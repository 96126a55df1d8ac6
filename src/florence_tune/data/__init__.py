"""Dataset specs → ``Sample``s: the single entry point ``load(spec, split, ...)``.

Spec forms (data/spec.py): ``synthetic``, ``docvqa``, ``cauldron[:config,...]``, ``docmatix``, a hub
id, a local path (JSONL + images, parquet, save_to_disk — data/local.py), or a mixture such as
``docvqa=0.7,cauldron:chartqa=0.3``; task datasets (``synthetic:detection``, COCO JSON, JSON lines
with boxes) go to data/tasks.py.

``load`` returns a map-style ``SampleDataset`` (``len`` + ``dataset[i]``) for one source read from
memory-mapped Arrow, or a ``SampleStream`` (a torch ``IterableDataset`` that shards itself across
data-loader workers and ranks) with ``streaming=True`` or for a weighted mixture. Either yields
``Sample`` or ``Skipped`` (counted by reason downstream, never raised).

    florence-tune data inspect cauldron:chartqa --split validation
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from florence_tune.data import sources
from florence_tune.data import spec as specs
from florence_tune.data.mapped import SampleDataset
from florence_tune.data.rows import BadSample
from florence_tune.data.sample import Sample, Skipped
from florence_tune.data.sources import DATASET_FORMS, HOLDOUT_ROWS, REGISTRY, Options, open_entries
from florence_tune.data.stream import SampleStream
from florence_tune.errors import UsageError

SYNTHETIC_VERSION = "1"

__all__ = ["DATASET_FORMS", "HOLDOUT_ROWS", "BadSample", "Sample", "SampleDataset", "SampleStream", "Skipped",
           "is_stream", "load", "makes_stream", "predict_only"]


def synthetic_root() -> Path:
    from florence_tune.model.tiny import cache_root

    return cache_root() / f"synthetic-v{SYNTHETIC_VERSION}"


def load(spec: str, split: str, task_prompt: str = "<VQA>", *, limit: int = 0, require_answer: bool = True,
         clean_questions: bool = False, streaming: bool = False, seed: int = 0, shuffle: bool = False,
         multi_image: str = "tile", holdout_rows: int = HOLDOUT_ROWS):
    """The single entry point every command uses to get samples.

    ``limit``: at most this many samples (0: all). ``shuffle``/``seed`` order a stream (a map-style
    dataset is shuffled by the Trainer's sampler instead). ``holdout_rows``: rows of a source without a
    validation split that serve as its validation split (and are left out of its train split).
    """
    from florence_tune.data.adapters import tasks

    if tasks.is_task_spec(spec):  # <OD>, grounding, <OCR>, <CAPTION> rows carry their own task
        return tasks.load(spec, split, limit=limit)
    entries = specs.parse(spec, REGISTRY)
    options = Options(task_prompt=task_prompt, require_answer=require_answer, clean_questions=clean_questions,
                      multi_image=multi_image, holdout_rows=holdout_rows, streaming=streaming)
    components = open_entries(entries, split, options)
    answerless = predict_only(spec, split)
    if streaming or entries[0].weight is not None:  # weights are all-or-none (spec.py)
        return SampleStream(components, limit=limit, seed=seed, shuffle=shuffle, predict_only=answerless)
    dataset = SampleDataset(components, limit=limit, predict_only=answerless)
    if not len(dataset):
        raise UsageError(f"split '{split}' of dataset '{spec}' has no rows (a source without a validation split "
                         f"lends its first --holdout-rows {holdout_rows} rows to it; lower that number)")
    return dataset


def predict_only(spec: str, split: str) -> bool:
    """Whether ``split`` of ``spec`` has no answers (DocVQA's test split): predictions only."""
    from florence_tune.data.adapters import tasks

    if tasks.is_task_spec(spec):
        return False
    return sources.predict_only(specs.parse(spec, REGISTRY), split)


def makes_stream(spec: str, streaming: bool) -> bool:
    """Whether ``load`` returns a stream (no length: training needs --max-steps). Reads no data."""
    from florence_tune.data.adapters import tasks

    if streaming:
        return True
    if tasks.is_task_spec(spec):
        return False
    entries = specs.parse(spec, REGISTRY)
    return entries[0].weight is not None


def is_stream(dataset: Any) -> bool:
    import torch

    return isinstance(dataset, torch.utils.data.IterableDataset)


"""Dataset specs → ``Sample``s: the single entry point ``load(spec, split, options)``.

Spec forms (data/spec.py): ``synthetic``, ``docvqa``, ``cauldron[:config,...]``, ``docmatix``, a hub
id, a local path (JSONL + images, parquet, save_to_disk — data/adapters/local.py), task data
(``synthetic:detection``, COCO JSON, JSON lines with boxes — data/adapters/tasks.py), or a mixture such
as ``docvqa=0.7,cauldron:chartqa=0.3``.

``load`` returns a map-style ``SampleDataset`` (``len`` + ``dataset[i]``) for sources read from
memory-mapped Arrow, or a ``SampleStream`` (a torch ``IterableDataset`` that shards itself across
data-loader workers and ranks) with ``streaming`` or for a weighted mixture. Either yields ``Sample``
or ``Skipped`` (counted by reason downstream, never raised), and both answer the same questions
(``share``, ``loader``, ``text_samples``, ``random_access``), so no consumer asks which it got.

    florence-tune data inspect cauldron:chartqa --split validation
"""

from __future__ import annotations

import dataclasses
from typing import Any

import florence_tune.data.sources as sources
import florence_tune.data.spec as specs
from florence_tune.data.mapped import SampleDataset
from florence_tune.data.options import DataOptions
from florence_tune.data.sample import Sample, Skipped
from florence_tune.data.stream import SampleStream
from florence_tune.errors import UsageError

__all__ = ["DataOptions", "Sample", "SampleDataset", "SampleStream", "Skipped", "load", "makes_stream",
           "predict_only"]


def load(spec: str, split: str, options: DataOptions | None = None, **changes: Any) -> SampleDataset | SampleStream:
    """The single entry point every command uses to get samples; ``changes`` replace fields of ``options``
    (``data.load("docvqa", "train", streaming=True)``)."""
    options = dataclasses.replace(options or DataOptions(), **changes)
    entries = specs.parse(spec, sources.REGISTRY)
    components = sources.open_entries(entries, split, options)
    answerless = sources.predict_only(entries, split)
    if makes_stream(spec, options.streaming):
        return SampleStream(components, limit=options.limit, seed=options.seed, shuffle=options.shuffle,
                            predict_only=answerless)
    dataset = SampleDataset(components, limit=options.limit, predict_only=answerless)
    if not len(dataset):
        raise UsageError(f"split '{split}' of dataset '{spec}' has no rows (a source without a validation split "
                         f"lends its first --holdout-rows {options.holdout_rows} rows to it; lower that number)")
    return dataset


def predict_only(spec: str, split: str) -> bool:
    """Whether ``split`` of ``spec`` has no answers (DocVQA's test split): predictions only."""
    return sources.predict_only(specs.parse(spec, sources.REGISTRY), split)


def makes_stream(spec: str, streaming: bool) -> bool:
    """Whether ``load`` returns a stream (no length: training needs --max-steps). Reads no data."""
    return streaming or specs.parse(spec, sources.REGISTRY)[0].weight is not None  # weights are all-or-none

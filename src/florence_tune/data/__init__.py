"""Dataset specs → ``Sample``s: the single entry point ``load(spec, split, options)``.

Spec forms (data/spec.py): ``synthetic``, ``docvqa``, ``cauldron[:config,...]``, ``docmatix``, a hub
id, a local path (JSONL + images, parquet, save_to_disk — data/adapters/local.py), task data
(``synthetic:<task>``, COCO JSON, JSON lines with boxes, polygons, lines — data/adapters/tasks.py), or a mixture such
as ``docvqa=0.7,cauldron:chartqa=0.3``.

``load`` returns a map-style ``SampleDataset`` (``len`` + ``dataset[i]``) for sources read from
memory-mapped Arrow, or a ``SampleStream`` (a torch ``IterableDataset`` that shards itself across
data-loader workers and ranks) with ``streaming`` or for a weighted mixture. Either yields ``Sample``
or ``Skipped`` (counted by reason downstream, never raised), and both answer the same questions
(``share``, ``loader``, ``text_samples``, ``random_access``), so no consumer asks which it got.

    florence-tune data inspect cauldron:chartqa --split validation
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
from typing import Any

import florence_tune.data.sources as sources
import florence_tune.data.spec as specs
from florence_tune import distributed
from florence_tune.data.mapped import SampleDataset
from florence_tune.data.options import DataOptions
from florence_tune.data.sample import Sample, Skipped
from florence_tune.data.stream import SampleStream
from florence_tune.errors import UsageError

log = logging.getLogger(__name__)
USABLE_LOOK = 256  # samples read, at most, to find a usable one before training or scoring

__all__ = ["DataOptions", "Sample", "SampleDataset", "SampleStream", "Skipped", "check_usable", "hub_datasets",
           "load", "makes_stream", "predict_only", "warn_if_mostly_unusable"]


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


def check_usable(dataset: SampleDataset | SampleStream, what: str, look: int = USABLE_LOOK) -> None:
    """Stop with the reasons when ``what`` (a split) has no usable sample: a run on nothing would "succeed" with
    empty numbers. Reads samples (images decoded) until the first usable one, at most ``look`` of them; when
    those were all unusable but the split goes on, it warns instead. Every rank calls it (counts are summed)."""
    counts: collections.Counter = collections.Counter()
    items = ((dataset[i] for i in range(min(look, len(dataset)))) if dataset.random_access
             else itertools.islice(iter(dataset), look))
    for item in items:
        if isinstance(item, Sample):
            counts["usable"] += 1
            break
        counts[item.reason] += 1
    seen = sum(counts.values())
    counts["more"] = int(seen >= look and (not dataset.random_access or len(dataset) > look))
    counts = collections.Counter(distributed.sum_counts(counts))
    if counts.pop("usable", 0):
        return
    more = counts.pop("more", 0)
    reasons = ", ".join(f"{reason} {n}" for reason, n in counts.most_common())
    if not reasons and not more:
        raise UsageError(f"{what} has no rows (a source without a validation split lends its first rows to validation: "
                         "see --holdout-rows)")
    if more:
        log.warning("the first %d samples of %s are all unusable (%s); going on, but check the data with "
                    "'florence-tune data inspect'", look, what, reasons)
        return
    raise UsageError(f"{what} has no usable sample ({reasons}); fix those rows, or point --dataset or the split "
                     "at other data (see 'florence-tune data inspect')")


def warn_if_mostly_unusable(counts: dict[str, int], used: int, what: str) -> None:
    """One warning when more samples of ``what`` were skipped than used; ``counts``: ``skipped_<reason>``
    counters (altered samples are not skipped)."""
    skipped = {name.removeprefix("skipped_"): n for name, n in counts.items() if name.startswith("skipped_") and n}
    if sum(skipped.values()) > used:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]))
        log.warning("%s: most samples read were unusable: %d skipped (%s), %d used; check the data with "
                    "'florence-tune data inspect'", what, sum(skipped.values()), reasons, used)


def hub_datasets(spec: str) -> list[str]:
    """The hub dataset ids ``spec`` reads (``docvqa`` → HuggingFaceM4/DocumentVQA); local data has none."""
    return sources.hub_datasets(specs.parse(spec, sources.REGISTRY))


def predict_only(spec: str, split: str) -> bool:
    """Whether ``split`` of ``spec`` has no answers (DocVQA's test split): predictions only."""
    return sources.predict_only(specs.parse(spec, sources.REGISTRY), split)


def makes_stream(spec: str, streaming: bool) -> bool:
    """Whether ``load`` returns a stream (no length: training needs --max-steps). Reads no data."""
    return streaming or specs.parse(spec, sources.REGISTRY)[0].weight is not None  # weights are all-or-none

"""Fast generation over a map-style split: pages decoded once, the vision tower once per page, batches
sorted by prompt length, loading in worker processes — behind ``evaluation.predict_dataset``.

    florence-tune evaluate --model runs/docvqa --dataset docvqa --batch-size 64 --num-workers 8

The contract is ``predict_dataset``'s: one record per usable question, in dataset order, gathered
from every rank (each rank generates for its strided share); unusable rows counted by reason. What
changes is the work: questions are grouped by page and pages ordered by their questions' prompt
length, so a batch holds few pages and little padding; the uint8 pages are normalised on the device
and go through the tower once per page (``vision.PagePath.generate``: the beams and the questions of
a page share the features); decoding uses the KV cache and the explicit ``generation_config``.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import torch

from florence_tune import distributed
from florence_tune.batch.page_batches import PixelCollator, length_sorted_batches
from florence_tune.batch.pages import PagePixels, PixelSpec, index_pages, text_item
from florence_tune.data.sample import Sample
from florence_tune.errors import UsageError


def applies(dataset, processor) -> bool:
    """Whether ``dataset`` can take the page path: map-style rows we can address, a fixed-size processor."""
    from florence_tune.data.mapped import SampleDataset

    if not isinstance(dataset, PagePixels | SampleDataset):
        return False
    try:
        PixelSpec.from_processor(processor)
    except UsageError:
        return False
    return True


class _Indexed(torch.utils.data.Dataset):
    """Items with their index, so a batch knows where its records go."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return index, self.dataset[index]


class _Collate:
    """(keys and samples without pixels, skipped counts, model batch or None) for one batch."""

    def __init__(self, collator: PixelCollator):
        self.collator = collator

    def __call__(self, pairs):
        usable = [(index, item) for index, item in pairs if isinstance(item, Sample)]
        skipped = collections.Counter(f"skipped_{item.reason}" for _, item in pairs if not isinstance(item, Sample))
        counts: collections.Counter = collections.Counter()
        batch = self.collator.encode([item for _, item in usable], counts) if usable else None
        light = [(index, _without_pixels(item)) for index, item in usable]  # keep the worker queue small
        return light, skipped + counts, batch


def _without_pixels(sample: Sample) -> Sample:
    import dataclasses

    return dataclasses.replace(sample, pixels=None) if hasattr(sample, "pixels") else sample


def predict(model, processor, dataset, *, batch_size: int, num_beams: int, max_new_tokens: int,
            num_workers: int = 0, progress: bool = True,
            generation_overrides: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], collections.Counter]:
    """``evaluation.predict_dataset`` for map-style datasets (same records, same order).

    ``generation_overrides``: extra decoding options (the benchmark fixes the answer length with them).
    """
    from tqdm.auto import tqdm

    from florence_tune.batch.collate import encoder_positions
    from florence_tune.evaluation.loop import decode_answers, generation_config, score_record
    from florence_tune.model.page_path import PagePath

    model.eval()
    spec = PixelSpec.from_processor(processor)
    pages = dataset if isinstance(dataset, PagePixels) else PagePixels(dataset, index_pages(dataset), spec)
    mine = list(distributed.shard(len(pages)))
    loader = torch.utils.data.DataLoader(
        _Indexed(pages), batch_sampler=_batches(pages, mine, batch_size), num_workers=num_workers,
        collate_fn=_Collate(PixelCollator(processor, max_positions=encoder_positions(model), with_labels=False)),
        pin_memory=torch.cuda.is_available())
    config = generation_config(processor, num_beams=num_beams, max_new_tokens=max_new_tokens)
    config.update(**(generation_overrides or {}))
    path = PagePath(spec)
    indexed: list[tuple[tuple[int, int], dict[str, Any]]] = []
    counts: collections.Counter = collections.Counter()
    with tqdm(total=len(mine), desc="evaluate", unit="sample", disable=not (progress and distributed.is_main())) as bar:
        for pairs, batch_counts, batch in loader:
            counts.update(batch_counts)
            if batch is not None:
                samples = [sample for _, sample in pairs]
                answers = decode_answers(processor, path.generate(model, batch, config), samples)
                indexed += [((index, 0), {**score_record(s, a, processor), "index": index})
                            for (index, s), a in zip(pairs, answers, strict=True)]
            bar.update(len(pairs) + sum(batch_counts[k] for k in batch_counts if k.startswith("skipped_")))
    everything = sorted(distributed.gather(indexed), key=lambda pair: pair[0])
    total = sum((collections.Counter(c) for c in distributed.gather([dict(counts)])), collections.Counter())
    return [record for _, record in everything], total


def _batches(pages: PagePixels, mine: list[int], batch_size: int) -> list[list[int]]:
    """This rank's indices in batches: page by page, pages by mean prompt length (text only, no decoding)."""
    lengths = np.array([len(item.prompt) if isinstance(item := text_item(pages.dataset, i), Sample) else 0
                        for i in mine])
    local = length_sorted_batches(pages.index.page_of[mine], lengths, batch_size)
    return [[mine[j] for j in batch] for batch in local]

"""The one evaluation loop: generate an answer for every usable question of a split, on every rank,
and the sample-weighted evaluation loss.

    florence-tune evaluate --model runs/docvqa --dataset docvqa --batch-size 64 --num-workers 8

Two ways to batch, picked once per call by ``batches_for``, behind one interface (``Batches``):

* **per page** (a map-style split and a processor with a fixed-size resize, i.e. every Florence-2):
  questions grouped by page and pages ordered by their questions' prompt length, so a batch holds few
  pages and little padding; uint8 pages decoded in loader workers, normalised on the device, through
  the vision tower once per page (``model.page_path.PagePath``; beams and questions share features);
* **plain** (streams, other processors): this rank's share in order, encoded by the processor.

Either way each rank generates for its disjoint share and the records are gathered: every rank
returns the same complete list, in dataset order, each question once; unusable rows counted by reason.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from florence_tune import distributed
from florence_tune.batch.collate import Batch, Collator, PixelCollator, encoder_positions
from florence_tune.batch.pages import PagePixels, PixelSpec, index_pages
from florence_tune.batch.samplers import length_sorted_batches
from florence_tune.data.sample import Sample
from florence_tune.errors import UsageError
from florence_tune.evaluation.generation import CUT_ANSWERS, Decoding, generate, generation_config
from florence_tune.evaluation.records import score_record
from florence_tune.model.page_path import PagePath

log = logging.getLogger(__name__)
Key = tuple[int, int]  # orders the records gathered from every rank
Chunk = tuple[list[tuple[Key, Sample]], collections.Counter, dict[str, Any]]  # (keyed samples, counts, inputs)


class Batches:
    """This rank's share of a split as (keyed samples, skipped counts, model inputs) chunks; ``pages`` is
    the per-page path that ``generation.generate`` takes, or None; ``total``: how many items (None: unknown)."""

    pages: PagePath | None = None
    total: int | None = None

    def __iter__(self) -> Iterator[Chunk]:
        raise NotImplementedError


class PlainBatches(Batches):
    def __init__(self, dataset, processor, model, batch_size: int):
        self.pairs, self.total = dataset.share()
        self.collator = Collator(processor, max_positions=encoder_positions(model), with_labels=False)
        self.batch_size = batch_size
        self.keyed = self.total is not None  # a stream cannot be indexed again (the report's thumbnails)

    def __iter__(self) -> Iterator[Chunk]:
        current: list[tuple[Key, Sample]] = []
        skipped: collections.Counter = collections.Counter()
        for key, item in self.pairs:
            if isinstance(item, Sample):
                current.append((key, item))
            else:
                skipped[f"skipped_{item.reason}"] += 1
            if len(current) == self.batch_size:
                yield self._chunk(current, skipped)
                current, skipped = [], collections.Counter()
        if current or skipped:
            yield self._chunk(current, skipped)

    def _chunk(self, keyed: list[tuple[Key, Sample]], skipped: collections.Counter) -> Chunk:
        counts = collections.Counter(skipped)
        inputs = self.collator.encode([s for _, s in keyed], counts) if keyed else {}
        return keyed, counts, inputs


class PageBatches(Batches):
    def __init__(self, dataset, processor, model, spec: PixelSpec, batch_size: int, num_workers: int):
        pages = dataset if isinstance(dataset, PagePixels) else PagePixels(dataset, index_pages(dataset), spec)
        mine = list(distributed.shard(len(pages)))
        self.total, self.pages, self.keyed = len(mine), PagePath(spec), True
        self.loader = torch.utils.data.DataLoader(
            _Indexed(pages), batch_sampler=_page_batches(pages, mine, batch_size), num_workers=num_workers,
            collate_fn=_KeyedCollate(PixelCollator(processor, max_positions=encoder_positions(model),
                                                   with_labels=False)),
            pin_memory=torch.cuda.is_available())

    def __iter__(self) -> Iterator[Chunk]:
        yield from self.loader


def batches_for(dataset, processor, model, *, batch_size: int, num_workers: int = 0) -> Batches:
    """Per page where the split can be indexed and the processor resizes to a fixed size; plain otherwise."""
    if dataset.random_access:
        try:
            spec = PixelSpec.from_processor(processor)
        except UsageError:
            spec = None
        if spec is not None:
            return PageBatches(dataset, processor, model, spec, batch_size, num_workers)
    return PlainBatches(dataset, processor, model, batch_size)


class _Indexed(torch.utils.data.Dataset):
    """Items with their index, so a batch knows where its records go."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return index, self.dataset[index]


class _KeyedCollate:
    """(keyed samples without their pixels, counts, model inputs) for one batch, in a loader worker."""

    def __init__(self, collator: PixelCollator):
        self.collator = collator

    def __call__(self, pairs) -> Chunk:
        usable = [(index, item) for index, item in pairs if isinstance(item, Sample)]
        counts = collections.Counter(f"skipped_{item.reason}" for _, item in pairs if not isinstance(item, Sample))
        inputs = self.collator.encode([item for _, item in usable], counts) if usable else {}
        light = [((index, 0), dataclasses.replace(item, pixels=None)) for index, item in usable]  # a small queue
        return light, counts, inputs


def _page_batches(pages: PagePixels, mine: list[int], batch_size: int) -> list[list[int]]:
    """This rank's indices in batches: page by page, pages by mean prompt length (text only, no decoding)."""
    lengths = np.array([len(item.prompt) if isinstance(item := pages.dataset.text_item(i), Sample) else 0
                        for i in mine])
    local = length_sorted_batches(pages.index.page_of[mine], lengths, batch_size)
    return [[mine[j] for j in batch] for batch in local]


def predict_dataset(model, processor, dataset, *, batch_size: int, decoding: Decoding, num_workers: int = 0,
                    progress: bool = True, **generation_overrides: Any
                    ) -> tuple[list[dict[str, Any]], collections.Counter]:
    """Generate an answer for every usable sample; returns (records, counts of skipped rows), the same on
    every rank. ``generation_overrides``: extra decoding options (the benchmark fixes answer lengths)."""
    from tqdm.auto import tqdm

    model.eval()
    batches = batches_for(dataset, processor, model, batch_size=batch_size, num_workers=num_workers)
    config = generation_config(processor, decoding, **generation_overrides)
    indexed: list[tuple[Key, dict[str, Any]]] = []
    counts: collections.Counter = collections.Counter()
    show = progress and distributed.is_main()
    with tqdm(total=batches.total, desc="evaluate", unit="sample", disable=not show) as bar:
        for keyed, chunk_counts, inputs in batches:
            counts.update(chunk_counts)
            if keyed:
                samples = [sample for _, sample in keyed]
                answers = generate(model, processor, inputs, config, samples, pages=batches.pages, counts=counts)
                # index: the report finds the page again (a stream cannot be indexed: None)
                indexed += [(key, {**score_record(s, a, processor), "index": key[0] if batches.keyed else None})
                            for (key, s), a in zip(keyed, answers, strict=True)]
            bar.update(len(keyed) + sum(n for name, n in chunk_counts.items() if name.startswith("skipped_")))
    everything = sorted(distributed.gather(indexed), key=lambda pair: pair[0])
    total = sum((collections.Counter(c) for c in distributed.gather([dict(counts)])), collections.Counter())
    if total[CUT_ANSWERS] and distributed.is_main():
        log.warning("%d of %d answers reached --max-new-tokens %d before they ended and were cut short; raise "
                    "--max-new-tokens (and --max-target-tokens when training) for answers this long",
                    total[CUT_ANSWERS], len(everything), config.max_new_tokens)
    return [record for _, record in everything], +total  # + drops a zero count


@torch.no_grad()
def mean_loss(loss_of, batches: Iterable[Batch]) -> float | None:
    """Sample-weighted mean of ``loss_of(inputs)`` over this rank's batches and then every rank's; a batch
    whose every sample was unusable adds nothing. None when no rank had a usable sample.

    One collective at the end, so ranks may hold unequal numbers of batches (each reads its own shard
    of a stream); the Trainer's own evaluation loop gathers after every batch and would wait forever.
    """
    total, count = 0.0, 0
    for batch in batches:
        if batch.empty:
            continue
        total += float(loss_of(batch.inputs)) * batch.size
        count += batch.size
    parts = distributed.gather([(total, count)])
    count = sum(c for _, c in parts)
    return sum(t for t, _ in parts) / count if count else None

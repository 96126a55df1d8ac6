"""``SampleStream``: samples as a ``torch.utils.data.IterableDataset``, for streaming and weighted mixtures.

Every copy of the stream (one per data-loader worker, per rank) reads only its own shard:
shard = rank × workers + worker, out of ranks × workers. Streamed sources are split with
``datasets.distributed.split_dataset_by_node`` (whole files when their count divides the shards,
otherwise every n-th row); map-style ones by striding a (seeded, per-epoch) permutation of row
indices. Each sample is therefore seen exactly once per epoch across all workers and ranks.

Components are interleaved by weight with a generator seeded by (seed, epoch, shard): a component
that runs out leaves the draw and the others go on, so an epoch still covers everything once.
A bounded stream (``limit``, or a held-out validation slice) reads its first rows on every shard
and keeps every n-th *sample*, so the total is exact whatever the sharding.

Training uses ``forever()``: epochs follow one another inside one iteration, so every rank makes
the same number of steps (``--max-steps``) without waiting on the others' epoch boundaries.

    florence-tune train --dataset docvqa=0.7,cauldron:chartqa=0.3 --streaming --max-steps 5000 --num-workers 4
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from florence_tune import distributed
from florence_tune.data.rows import Item, fingerprint, realise
from florence_tune.data.sample import Sample
from florence_tune.data.sources import Component
from florence_tune.errors import FlorenceTuneError

SHUFFLE_BUFFER = 256  # rows held for streamed shuffling; rows carry image bytes, so keep it modest
READ_BATCH = 16  # rows fetched from a streamed source at a time


class SampleStream(torch.utils.data.IterableDataset):
    """Iterable of ``Sample`` / ``Skipped`` items that shards itself by worker and rank."""

    random_access = False  # no len, no dataset[i]: see SampleDataset

    def __init__(self, components: list[Component], *, limit: int = 0, seed: int = 0, shuffle: bool = False,
                 predict_only: bool = False):
        super().__init__()
        self.components = components
        self.weights = _weights(components)
        self.limits: list[int | None] = split_limit(limit, self.weights) if limit else [None] * len(components)
        self.seed, self.shuffle, self.predict_only = seed, shuffle, predict_only
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.endless = False

    def forever(self) -> SampleStream:
        """The same stream, epoch after epoch (reshuffled each time), for step-counted training."""
        repeated = copy.copy(self)
        repeated.endless = True
        return repeated

    def shard(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world * workers

    def __iter__(self) -> Iterator[Item]:
        shard, shards = self.shard()
        epoch = 0
        while True:
            produced = False
            for item in self.epoch(epoch, shard, shards):
                produced = True
                yield item
            if not self.endless:
                return
            if not produced:
                raise FlorenceTuneError(f"the training data gives data-loader shard {shard} of {shards} no samples; "
                                        "use fewer --num-workers or processes, or a larger dataset")
            epoch += 1

    def epoch(self, epoch: int, shard: int, shards: int) -> Iterator[Item]:
        sources = [component_items(c, shard=shard, shards=shards, epoch=epoch, seed=self.seed,
                                   shuffle=self.shuffle, limit=limit)
                   for c, limit in zip(self.components, self.limits, strict=True)]
        yield from interleave(sources, self.weights, random.Random(f"{self.seed}:{epoch}:{shard}"))

    def share(self) -> tuple[Iterator[tuple[tuple[int, int], Item]], None]:
        """This rank's ((position, rank), item) pairs (the stream reads only this rank's shard), and None:
        a stream does not know its length. For a bounded stream (every n-th sample per rank) the keys sort
        into the order of the whole split."""
        return (((position, self.rank), item) for position, item in enumerate(self)), None

    def loader(self, *, batch_size: int, collate_fn, num_workers: int = 0) -> torch.utils.data.DataLoader:
        return loader(self, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers)

    def text_samples(self, limit: int | None = None) -> Iterator[Sample]:
        """Usable samples of the whole stream (not this rank's shard), images never decoded."""
        produced = 0
        for component, cap in zip(self.components, self.limits, strict=True):
            seen = 0
            for row in _rows_in_order(component):
                if cap is not None and seen >= cap:
                    break
                drafts = component.adapter.drafts(row)[: None if cap is None else cap - seen]
                seen += len(drafts)
                for draft in (d for d in drafts if isinstance(d, Sample)):
                    yield draft
                    produced += 1
                    if limit is not None and produced >= limit:
                        return


def interleave(sources: list[Iterator[Item]], weights: list[float], rng: random.Random) -> Iterator[Item]:
    """Draw the next item from a source chosen by weight; an exhausted source leaves the draw."""
    alive = list(range(len(sources)))
    while alive:
        chosen = rng.choices(alive, weights=[weights[i] for i in alive])[0]
        try:
            yield next(sources[chosen])
        except StopIteration:
            alive.remove(chosen)


def split_limit(limit: int, weights: list[float]) -> list[int]:
    """``limit`` samples shared by weight (largest remainders), summing to exactly ``limit``."""
    total = sum(weights)
    exact = [limit * w / total for w in weights]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)[: limit - sum(shares)]:
        shares[i] += 1
    return [max(share, 0) for share in shares]


def _weights(components: list[Component]) -> list[float]:
    """Given weights; otherwise in proportion to the rows when every size is known, else equal."""
    if all(c.weight is not None for c in components):
        return [float(c.weight) for c in components]
    sizes = [c.size for c in components]
    return [float(s) for s in sizes] if all(sizes) else [1.0] * len(components)


# --- one component ------------------------------------------------------------------------------


def component_items(component: Component, *, shard: int, shards: int, epoch: int, seed: int, shuffle: bool,
                    limit: int | None) -> Iterator[Item]:
    """This shard's items of one component for one epoch (``limit``: its first samples only)."""
    if limit is not None or component.first:
        yield from _bounded(component, shard, shards, limit)
        return
    rows = _shard_rows(component, shard, shards, epoch, seed, shuffle)
    if component.exclude_first:
        held_out = {fingerprint(row, component.adapter.image_columns) for row in _iter_rows(component.unsplit)}
        rows = (row for row in rows if fingerprint(row, component.adapter.image_columns) not in held_out)
    for row in rows:
        yield from realise(component.adapter, row)


def _bounded(component: Component, shard: int, shards: int, limit: int | None) -> Iterator[Item]:
    """Every ``shards``-th sample of the component's first ``limit`` samples (all of them if None)."""
    seen = 0
    for row in _rows_in_order(component):
        if limit is not None and seen >= limit:
            return
        count = len(component.adapter.drafts(row))
        stop = min(count, limit - seen) if limit is not None else count
        keep = [turn for turn in range(stop) if (seen + turn) % shards == shard]
        if keep:
            yield from realise(component.adapter, row, keep=keep)
        seen += count


def _rows_in_order(component: Component) -> Iterator[dict[str, Any]]:
    """Every row of the component in source order, on this process (no sharding)."""
    rows = component.rows
    if hasattr(rows, "__len__"):
        yield from _map_rows(rows, range(len(rows)))
    else:
        yield from _iter_rows(rows)


def _shard_rows(component: Component, shard: int, shards: int, epoch: int, seed: int,
                shuffle: bool) -> Iterator[dict[str, Any]]:
    rows = component.rows
    if hasattr(rows, "__len__"):  # map-style: stride a permutation that every shard computes alike
        order = np.random.default_rng([seed, epoch]).permutation(len(rows)) if shuffle else np.arange(len(rows))
        return _map_rows(rows, order[shard::shards])
    from datasets.distributed import split_dataset_by_node

    if shuffle:
        # One input shard at a time: datasets >= 5 otherwise interleaves up to 10 files through a reader
        # that reports a single shard (so ranks fall back to reading every row; datasets issue #8669)
        # and sleeps 5 s at the end of every pass (arrow issue 45214).
        rows = rows.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER, max_buffer_input_shards=1)
    mine = split_dataset_by_node(rows, rank=shard, world_size=shards)
    mine.set_epoch(epoch)  # last: split_dataset_by_node (like decode) starts a dataset at epoch 0
    return _iter_rows(mine)


def _map_rows(rows, indices) -> Iterator[dict[str, Any]]:
    table = rows.with_format("arrow")
    for index in indices:
        yield table[int(index)].to_pylist()[0]


def _iter_rows(rows) -> Iterator[dict[str, Any]]:
    """Raw rows of a streamed dataset (sources.py turned image decoding off). ``.iter`` rather than
    ``for row in rows``: the latter would split the files among data-loader workers a second time,
    on top of our own sharding."""
    for batch in rows.iter(batch_size=READ_BATCH):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns), strict=True):
            yield dict(zip(columns, values, strict=True))


def loader(stream: SampleStream, *, batch_size: int, collate_fn, num_workers: int) -> torch.utils.data.DataLoader:
    """A plain DataLoader over a stream. Not passed through accelerate's ``prepare``: that would shard
    (or dispatch from rank 0) a second time, while the stream already reads only this rank's share."""
    return torch.utils.data.DataLoader(stream, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers,
                                       pin_memory=torch.cuda.is_available())

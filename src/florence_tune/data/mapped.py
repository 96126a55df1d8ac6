"""``SampleDataset``: map-style (``len`` + ``dataset[i]``) samples over memory-mapped Arrow rows.

Several components (configurations, or the parts of an unweighted mixture) are laid end to end,
so the Trainer's sampler shuffles across all of them. A row that gives several samples (a
Cauldron conversation, a page's regions for a region task) is addressed through a table of cumulative
counts (``adapter.samples_per_row``: the Cauldron's are read from the Arrow list offsets); rows
themselves are fetched one at a time from the memory-mapped files, never loaded whole, so resident
memory does not grow with the dataset (beyond 8 bytes per row for that table
— the same as the sampler's own permutation).

    florence-tune train --dataset cauldron:chartqa,ai2d --epochs 1
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from florence_tune import distributed
from florence_tune.data.rows import Item, realise
from florence_tune.data.sample import Sample
from florence_tune.data.sources import Component


class _Part:
    """One component as addressable samples: sample i → (row, turn)."""

    def __init__(self, component: Component):
        self.name = component.name
        self.adapter = component.adapter
        self.rows = component.rows.with_format("arrow")  # raw values: images stay undecoded bytes
        # cumulative samples per row; None when every row gives exactly one
        counts = self.adapter.samples_per_row(self.rows)
        self.ends = np.cumsum(counts, dtype=np.int64) if counts is not None else None
        self.count = int(self.ends[-1]) if self.ends is not None and len(self.ends) else len(self.rows)

    def row(self, index: int) -> dict:
        return self.rows[index].to_pylist()[0]

    def locate(self, index: int) -> tuple[int, int]:
        """(row, turn) of sample ``index``."""
        if self.ends is None:
            return index, 0
        row = int(np.searchsorted(self.ends, index, side="right"))
        return row, index - (int(self.ends[row - 1]) if row else 0)

    def item(self, index: int) -> Item:
        row, turn = self.locate(index)
        return realise(self.adapter, self.row(row), keep=[turn])[0]

    def page_keys(self) -> Iterator[str]:
        """One content key per sample, from the undecoded image column(s)."""
        columns = list(self.adapter.image_columns)
        per_row = iter(np.diff(self.ends, prepend=0).tolist()) if self.ends is not None else None
        for batch in self.rows.select_columns(columns).iter(batch_size=256):  # Arrow tables: bytes, not images
            for row in batch.to_pylist():
                key = page_key([row.get(c) for c in columns])
                for _ in range(next(per_row) if per_row is not None else 1):
                    yield key


def page_key(values: list[Any]) -> str:
    """A content hash of a row's undecoded images: their bytes, or a file's path with its size and mtime
    (a page edited in place is a new page)."""
    digest = hashlib.blake2b(digest_size=16)
    for value in values:
        for image in value if isinstance(value, list) else [value]:
            if isinstance(image, dict) and isinstance(image.get("bytes"), bytes):
                digest.update(image["bytes"])
            else:
                path = image.get("path") if isinstance(image, dict) else image
                digest.update(f"path:{path}:{_stamp(path)}".encode())
            digest.update(b"|")
    return digest.hexdigest()


def _stamp(path: Any) -> str:
    try:
        stat = os.stat(path)
    except (OSError, TypeError, ValueError):
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def share(dataset) -> tuple[Iterator[tuple[tuple[int, int], Any]], int]:
    """This rank's ((index, 0), item) pairs of a map-style dataset, and how many: a strided share."""
    mine = distributed.shard(len(dataset))
    return (((index, 0), dataset[index]) for index in mine), len(mine)


def share_loader(dataset, *, batch_size: int, collate_fn, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A loader over this rank's strided share (evaluation: every question scored exactly once)."""
    mine = torch.utils.data.Subset(dataset, list(distributed.shard(len(dataset))))
    return torch.utils.data.DataLoader(mine, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers,
                                       pin_memory=torch.cuda.is_available())


class SampleDataset:
    """Map-style dataset of ``Sample`` / ``Skipped`` items; images are decoded lazily and safely.

    ``random_access``: items can be fetched by index (the page views and the Trainer's samplers rely
    on it); ``SampleStream`` answers False to the same question.
    """

    random_access = True

    def __init__(self, components: list[Component], *, limit: int = 0, predict_only: bool = False):
        self.parts = [_Part(c) for c in components]
        self.starts = list(np.cumsum([0] + [p.count for p in self.parts[:-1]]).tolist())
        total = sum(p.count for p in self.parts)
        self.length = min(limit, total) if limit else total
        self.predict_only = predict_only  # no answers: predictions only, nothing to score or train on

    def __len__(self) -> int:
        return self.length

    def _part(self, index: int) -> tuple[_Part, int]:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"sample {index} is outside a dataset of {self.length}")
        part = bisect.bisect_right(self.starts, index) - 1
        return self.parts[part], index - self.starts[part]

    def __getitem__(self, index: int) -> Item:
        part, local = self._part(index)
        return part.item(local)

    def text_item(self, index: int) -> Item:
        """Sample ``index`` with ``image=None`` (or its ``Skipped``): the row is read, its image never decoded."""
        part, local = self._part(index)
        row, turn = part.locate(local)
        return part.adapter.drafts(part.row(row))[turn]

    def page(self, index: int, draft: int | None = None) -> tuple[Any, tuple[str, ...]]:
        """The decoded image of sample ``index`` and the alterations made to it (raises BadImage/BadSample);
        ``draft``: see ``images.open_image``."""
        part, local = self._part(index)
        return part.adapter.image(part.row(part.locate(local)[0]), draft=draft)

    def page_keys(self) -> Iterator[str]:
        """A content key of each sample's page, in dataset order (equal keys: the same page)."""
        produced = 0
        for part in self.parts:
            for key in part.page_keys():
                if produced == self.length:
                    return
                yield key
                produced += 1

    def share(self):
        return share(self)

    def loader(self, *, batch_size: int, collate_fn, num_workers: int = 0) -> torch.utils.data.DataLoader:
        return share_loader(self, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers)

    def text_samples(self, limit: int | None = None) -> Iterator[Sample]:
        """Usable samples without decoding images (for baselines and statistics), in dataset order."""
        seen, produced = 0, 0
        for part in self.parts:
            columns = [c for c in part.rows.column_names if c not in part.adapter.image_columns]
            for batch in part.rows.select_columns(columns).iter(batch_size=256):
                for row in batch.to_pylist():
                    drafts = part.adapter.drafts(row)
                    for draft in drafts[: max(0, self.length - seen)]:
                        if isinstance(draft, Sample):
                            yield draft
                            produced += 1
                            if limit is not None and produced >= limit:
                                return
                    seen += len(drafts)
                    if seen >= self.length:
                        return

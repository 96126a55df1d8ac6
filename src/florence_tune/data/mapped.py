"""``SampleDataset``: map-style (``len`` + ``dataset[i]``) samples over memory-mapped Arrow rows.

Several components (configurations, or the parts of an unweighted mixture) are laid end to end,
so the Trainer's sampler shuffles across all of them. A row that gives several samples (a
Cauldron conversation) is addressed through a table of cumulative turn counts read from the Arrow
list offsets; rows themselves are fetched one at a time from the memory-mapped files, never
loaded whole, so resident memory does not grow with the dataset (beyond 8 bytes per row for that
table — the same as the sampler's own permutation).

    florence-tune train --dataset cauldron:chartqa,ai2d --epochs 1
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import numpy as np

from florence_tune.data.adapters import cauldron
from florence_tune.data.rows import Item, realise
from florence_tune.data.sample import Sample
from florence_tune.data.sources import Component


class _Part:
    """One component as addressable samples: sample i → (row, turn)."""

    def __init__(self, component: Component):
        self.name = component.name
        self.adapter = component.adapter
        self.rows = component.rows.with_format("arrow")  # raw values: images stay undecoded bytes
        self.ends = None  # cumulative samples per row; None when every row gives exactly one
        if isinstance(component.adapter, cauldron.Adapter):
            texts = self.rows.select_columns(["texts"])[:]  # an Arrow view of the memory-mapped column
            self.ends = np.cumsum(cauldron.samples_per_row(texts), dtype=np.int64)
        self.count = int(self.ends[-1]) if self.ends is not None and len(self.ends) else len(self.rows)

    def row(self, index: int) -> dict:
        return self.rows[index].to_pylist()[0]

    def item(self, index: int) -> Item:
        if self.ends is None:
            return realise(self.adapter, self.row(index))[0]
        row = int(np.searchsorted(self.ends, index, side="right"))
        turn = index - (int(self.ends[row - 1]) if row else 0)
        return realise(self.adapter, self.row(row), keep=[turn])[0]


class SampleDataset:
    """Map-style dataset of ``Sample`` / ``Skipped`` items; images are decoded lazily and safely."""

    def __init__(self, components: list[Component], *, limit: int = 0, predict_only: bool = False):
        self.parts = [_Part(c) for c in components]
        self.starts = list(np.cumsum([0] + [p.count for p in self.parts[:-1]]).tolist())
        total = sum(p.count for p in self.parts)
        self.length = min(limit, total) if limit else total
        self.predict_only = predict_only  # no answers: predictions only, nothing to score or train on

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Item:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"sample {index} is outside a dataset of {self.length}")
        part = bisect.bisect_right(self.starts, index) - 1
        return self.parts[part].item(index - self.starts[part])

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

"""Orders for the uint8 page path: the questions of one page together (training), and pages sorted by
their questions' prompt length (generation); ``collate.PixelCollator`` then sends each page once.

    florence-tune train --dataset docvqa --group-by-page --page-cache auto --num-workers 8

DocVQA asks 3.9 questions per page. ``PageBatchSampler`` orders the data page by page, so a batch of
32 questions holds ~9 pages instead of ~32, and the model (``model.page_path.PagePath``) runs the vision tower
— 85 % of Florence-2's FLOPs — once per page in the batch: full fine-tuning of base drops from ~1,340
to ~500 GFLOP per question. Batches keep their size; a page may straddle two batches (then it is seen
twice, once in each), and every question is in exactly one batch per epoch.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

import numpy as np


class PageBatchSampler:
    """Batches of ``batch_size`` sample indices, the questions of a page next to each other.

    Each epoch shuffles the pages and the questions within each page (seeded by ``seed`` + epoch, so
    every rank draws the same order and ``accelerate`` deals whole batches to the ranks). ``set_epoch``
    is called by the Trainer.
    """

    def __init__(self, page_of: np.ndarray, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        self.page_of = np.asarray(page_of)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """Every sample index once, grouped by page."""
        if not self.shuffle:
            return np.argsort(self.page_of, kind="stable")  # pages in first-seen order (page numbers are)
        rng = np.random.default_rng([self.seed, self.epoch])
        page_rank = rng.permutation(int(self.page_of.max()) + 1 if len(self.page_of) else 0)
        within = rng.random(len(self.page_of))
        return np.lexsort((within, page_rank[self.page_of]))

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order().tolist()
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        full, rest = divmod(len(self.page_of), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)


def length_sorted_batches(page_of: np.ndarray, lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Batches for generation: pages in order of their questions' mean prompt length, each page's
    questions together (one vision pass per page, little padding)."""
    pages: dict[int, list[int]] = collections.defaultdict(list)
    for index, page in enumerate(np.asarray(page_of).tolist()):
        pages[page].append(index)
    ordered = sorted(pages.values(), key=lambda members: (float(np.mean(lengths[members])), members[0]))
    flat = [index for members in ordered for index in sorted(members, key=lambda i: lengths[i])]
    return [flat[start:start + batch_size] for start in range(0, len(flat), batch_size)]

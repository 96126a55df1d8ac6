"""Batches for the uint8 page path: the questions of one page together, and a collator that sends each
unique page once, as uint8, with an index saying which question looks at which page.

    florence-tune train --dataset docvqa --group-by-page --page-cache auto --num-workers 8

DocVQA asks 3.9 questions per page. ``PageBatchSampler`` orders the data page by page, so a batch of
32 questions holds ~9 pages instead of ~32, and the model (``vision.PagePath``) runs the vision tower
— 85 % of Florence-2's FLOPs — once per page in the batch: full fine-tuning of base drops from ~1,340
to ~500 GFLOP per question. Batches keep their size; a page may straddle two batches (then it is seen
twice, once in each), and every question is in exactly one batch per epoch.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from florence_tune.batch.collate import Collator
from florence_tune.data.sample import ALTERED


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


class PixelCollator(Collator):
    """``PageSample``s → tensors; never calls the image processor.

    Returns ``pixel_values`` as uint8 (unique pages x 3 x H x W; normalised on the device by
    ``PixelSpec.normalise``, a quarter of the float32 bytes to copy), ``page_index`` (per question: its
    row in ``pixel_values``) and ``page_ids`` (the pages' numbers, for the feature cache). Prompt ids
    are the processor's (image placeholders, ``<s>``, the prompt, ``</s>``), tokenized once per distinct
    prompt. ``pad_to_multiple_of`` rounds prompt and answer lengths (8 for tensor cores; 32 under
    ``--compile`` so only a few shapes ever reach the compiled graph).
    """

    def __init__(self, processor, *, max_positions: int, max_target_tokens: int = 128, with_labels: bool = True,
                 pad_to_multiple_of: int = 8):
        super().__init__(processor, max_positions=max_positions, max_target_tokens=max_target_tokens,
                         with_labels=with_labels, pad_to_multiple_of=pad_to_multiple_of)
        self.image_ids = [processor.image_token_id] * processor.num_image_tokens
        self._prompt_ids: dict[str, list[int]] = {}

    def prompt_ids(self, prompt: str) -> list[int]:
        ids = self._prompt_ids.get(prompt)
        if ids is None:
            # The processor's own text layout (Florence2Processor.prepare_inputs_layout); task tokens
            # such as <OD> become their instruction text first.
            text = self.processor._construct_prompts([prompt])[0]
            tokenizer = self.tokenizer
            ids = self.image_ids + tokenizer(tokenizer.bos_token + text + tokenizer.eos_token,
                                             add_special_tokens=False)["input_ids"]
            if len(self._prompt_ids) < 1_000_000:  # bounded: one entry per distinct question
                self._prompt_ids[prompt] = ids
        return ids

    def encode(self, samples: list[Any], stats: collections.Counter | None = None) -> dict[str, Any]:
        stats = stats if stats is not None else collections.Counter()
        stats.update(change for s in samples for change in s.meta.get(ALTERED, ()))
        rows = [torch.tensor(self.prompt_ids(s.prompt), dtype=torch.long) for s in samples]
        input_ids, attention_mask = self._fit_prompts(*self._pad(rows, self.tokenizer.pad_token_id), stats)
        slot: dict[int, int] = {}
        page_index = torch.tensor([slot.setdefault(s.page, len(slot)) for s in samples], dtype=torch.long)
        first = {}
        for s in samples:
            first.setdefault(s.page, s)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "pixel_values": torch.stack([s.pixels for s in first.values()]),
                 "page_index": page_index, "page_ids": torch.tensor(list(first), dtype=torch.long)}
        if self.with_labels:
            batch["labels"] = self.labels([s.target for s in samples], stats)
        return batch

"""The training loaders of the page path: which flags turn on what, built from plain values.

    florence-tune train --model florence-community/Florence-2-base --dataset docvqa --bf16 \\
        --page-cache auto --group-by-page --num-workers 8 [--compile] [--gradient-checkpointing]

* ``--page-cache DIR|auto``: every unique page decoded and resized once into a uint8 cache
  (batch/pages.py); training reads 1.8 MB copies instead of decoding 10-70 ms JPEGs and resizing.
* ``--group-by-page``: the questions of a page share a batch and one vision pass (batch/samplers.py,
  model/page_path.py).
* ``--feature-cache-mib N``: with the tower frozen, its outputs stay on the device across epochs.
* any of the three: uint8 pages normalised on the device; decoding (when uncached) in the workers.
* ``--compile``: lengths padded to multiples of 32 and the last partial batch dropped, so only a few
  shapes reach the compiled graphs (the compilation itself: model/acceleration.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from florence_tune import distributed, paths
from florence_tune.batch.collate import PixelCollator
from florence_tune.batch.page_cache import build_cache
from florence_tune.batch.pages import PagePixels, PixelSpec, index_pages
from florence_tune.batch.samplers import PageBatchSampler
from florence_tune.errors import UsageError
from florence_tune.model import page_path

COMPILE_PAD_MULTIPLE = 32


@dataclass(frozen=True)
class PageSettings:
    """The page flags of ``train`` (``--page-cache``, ``--page-cache-draft``, ``--group-by-page``,
    ``--feature-cache-mib``) and what they depend on."""

    page_cache: str | None = None
    draft: bool = False
    group_by_page: bool = False
    feature_cache_mib: int = 0
    compile: bool = False

    @property
    def wanted(self) -> bool:
        return bool(self.page_cache or self.group_by_page or self.feature_cache_mib)


@dataclass
class FastPath:
    """What the trainer uses instead of the defaults when a page flag is on."""

    path: page_path.PagePath
    collator: PixelCollator
    train_data: Any
    eval_data: Any
    sampler: PageBatchSampler | None


def page_cache_root(setting: str) -> Path:
    return paths.cache_root() / "pages" if setting == "auto" else Path(setting).expanduser()


def build(model, processor, train_data, eval_data, settings: PageSettings, *, batch_size: int, shuffle: bool,
          seed: int, max_positions: int, max_target_tokens: int, sharded: bool) -> FastPath | None:
    """The page path for this run, or None when no page flag is on. ``sharded``: FSDP or DeepSpeed."""
    if not settings.wanted:
        return None
    if sharded:
        # The page path calls the vision tower outside the wrapped forward, where sharded weights are not gathered.
        raise UsageError("--page-cache, --group-by-page and --feature-cache-mib run under DDP; drop --fsdp/--deepspeed "
                         "(Florence-2 fits one GPU) or these flags")
    if not train_data.random_access:
        raise UsageError("--page-cache, --group-by-page and --feature-cache-mib need a map-style dataset "
                         "(not --streaming or a weighted mixture)")
    if settings.feature_cache_mib and page_path.vision_trains(model):
        raise UsageError("--feature-cache-mib needs a frozen vision tower (--strategy freeze-vision): "
                         "a tower that trains changes its features every step")
    spec = PixelSpec.from_processor(processor)
    train_pages = page_view(train_data, spec, settings)
    eval_pages = page_view(eval_data, spec, settings) if eval_data is not None else None
    sampler = (PageBatchSampler(train_pages.index.page_of, batch_size, shuffle=shuffle, seed=seed,
                                drop_last=settings.compile) if settings.group_by_page else None)
    collator = PixelCollator(processor, max_positions=max_positions, max_target_tokens=max_target_tokens,
                             pad_to_multiple_of=COMPILE_PAD_MULTIPLE if settings.compile else 8)
    features = page_path.FeatureCache(settings.feature_cache_mib) if settings.feature_cache_mib else None
    return FastPath(page_path.PagePath(spec, features), collator, train_pages, eval_pages, sampler)


def page_view(dataset, spec: PixelSpec, settings: PageSettings) -> PagePixels:
    """``dataset`` as uint8 pages: from the page cache when asked for one (rank 0 builds it first)."""
    index = index_pages(dataset)
    cache = None
    if settings.page_cache:
        with distributed.main_process_first():
            cache = build_cache(dataset, index, spec, page_cache_root(settings.page_cache),
                                workers=os.cpu_count() or 1, draft=settings.draft)
    return PagePixels(dataset, index, spec, cache)


def page_train_loader(trainer, fast: FastPath):
    """The Trainer's training loader, batched page by page (accelerate deals whole batches to ranks)."""
    from functools import partial

    from transformers.trainer_utils import seed_worker

    args = trainer.args
    workers = args.dataloader_num_workers
    loader = torch.utils.data.DataLoader(
        trainer.train_dataset, batch_sampler=fast.sampler, collate_fn=trainer.data_collator,
        num_workers=workers, pin_memory=args.dataloader_pin_memory,
        persistent_workers=workers > 0 and args.dataloader_persistent_workers,
        prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
        worker_init_fn=partial(seed_worker, num_workers=workers, rank=args.process_index) if workers else None)
    return trainer.accelerator.prepare(loader)

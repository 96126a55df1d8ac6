"""Training-side wiring of the fast paths: which flags turn on what, built from plain values.

    florence-tune train --model florence-community/Florence-2-base --dataset docvqa --bf16 \\
        --page-cache auto --group-by-page --num-workers 8 [--compile] [--gradient-checkpointing]

* ``--page-cache DIR|auto``: every unique page decoded and resized once into a uint8 cache
  (data/pages.py); training reads 1.8 MB copies instead of decoding 10-70 ms JPEGs and resizing.
* ``--group-by-page``: the questions of a page share a batch and one vision pass (data/page_batches.py,
  page_path.PagePath).
* ``--feature-cache-mib N``: with the tower frozen, its outputs stay on the device across epochs.
* any of the three: uint8 pages normalised on the device; decoding (when uncached) in the workers.
* ``--gradient-checkpointing``: also the DaViT blocks (page_path.checkpoint_vision_blocks).
* ``--compile``: the vision tower and the BART encoder-decoder compiled; lengths padded to multiples of
  32 and the last partial batch dropped, so only a few shapes reach the compiled graphs.
* on CUDA: TF32 for the float32 matmuls that remain under bf16 autocast (fused AdamW, SDPA attention
  and pinned memory are already the defaults).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from florence_tune import data, distributed
from florence_tune.batch.page_batches import PageBatchSampler, PixelCollator
from florence_tune.batch.pages import PagePixels, PixelSpec, build_cache, index_pages
from florence_tune.errors import UsageError
from florence_tune.model import page_path

COMPILE_PAD_MULTIPLE = 32


@dataclass
class FastPath:
    """What the trainer uses instead of the defaults when a page flag is on."""

    path: page_path.PagePath
    collator: PixelCollator
    train_data: Any
    eval_data: Any
    sampler: PageBatchSampler | None


def wanted(config) -> bool:
    return bool(config.page_cache or config.group_by_page or config.feature_cache_mib)


def page_cache_root(setting: str) -> Path:
    if setting == "auto":
        from florence_tune.model.tiny import cache_root

        return cache_root() / "pages"
    return Path(setting).expanduser()


def build(model, processor, train_data, eval_data, config, max_positions: int) -> FastPath | None:
    """The page path for this run, or None when no page flag is on."""
    if not wanted(config):
        return None
    if getattr(config, "fsdp", False) or getattr(config, "deepspeed", None):
        # The page path calls the vision tower outside the wrapped forward, where sharded weights are not gathered.
        raise UsageError("--page-cache, --group-by-page and --feature-cache-mib run under DDP; drop --fsdp/--deepspeed "
                         "(Florence-2 fits one GPU) or these flags")
    if data.is_stream(train_data):
        raise UsageError("--page-cache, --group-by-page and --feature-cache-mib need a map-style dataset "
                         "(not --streaming or a weighted mixture)")
    if config.feature_cache_mib and page_path.vision_trains(model):
        raise UsageError("--feature-cache-mib needs a frozen vision tower (--strategy freeze-vision): "
                         "a tower that trains changes its features every step")
    spec = PixelSpec.from_processor(processor)
    train_pages = page_view(train_data, spec, config)
    eval_pages = page_view(eval_data, spec, config) if eval_data is not None else None
    sampler = (PageBatchSampler(train_pages.index.page_of, config.batch_size, shuffle=config.shuffle,
                                seed=config.seed, drop_last=config.compile) if config.group_by_page else None)
    collator = PixelCollator(processor, max_positions=max_positions, max_target_tokens=config.max_target_tokens,
                             pad_to_multiple_of=COMPILE_PAD_MULTIPLE if config.compile else 8)
    features = page_path.FeatureCache(config.feature_cache_mib) if config.feature_cache_mib else None
    return FastPath(page_path.PagePath(spec, features), collator, train_pages, eval_pages, sampler)


def page_view(dataset, spec: PixelSpec, config) -> PagePixels:
    """``dataset`` as uint8 pages: from the page cache when asked for one (rank 0 builds it first)."""
    index = index_pages(dataset)
    cache = None
    if config.page_cache:
        with distributed.main_process_first():
            cache = build_cache(dataset, index, spec, page_cache_root(config.page_cache),
                                workers=os.cpu_count() or 1, draft=config.page_cache_draft)
    return PagePixels(dataset, index, spec, cache)


def prepare_model(model, config) -> None:
    """Vision-inclusive activation checkpointing, compilation and TF32, as the flags ask."""
    if config.gradient_checkpointing and page_path.vision_trains(model):
        page_path.checkpoint_vision_blocks(model)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if config.compile:
        page_path.compile_towers(model)


def train_loader(trainer, fast: FastPath):
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

"""Pages at model resolution: which samples share a page, and samples that carry their page as uint8
pixels instead of a decoded image (from the page cache, page_cache.py, or decoded in a loader worker).

    florence-tune train --dataset docvqa --page-cache auto --group-by-page --num-workers 8 --bf16

Why: decoding a full-size DocVQA page costs 10-70 ms and the processor's bicubic resize to 768x768
another ~34 ms per core — per question, every epoch. The original scripts did both inside the
collate function on the main process, so the GPU waited for them. The cache decodes and resizes each
unique page once (in parallel, ``datasets.map(num_proc=...)``) into one memory-mapped uint8 array;
reading a page back is a 1.8 MB copy (~0.04 ms). DocVQA's 39,463 training questions share ~10.2k
pages, so the cache also does a quarter of the decoding the per-question path does.

Pixel fidelity: the cache makes the very Pillow call the processor's PIL backend makes (``resize``
to the processor's size with its resample filter, on the same RGB page from ``images.open_image``),
so the uint8 values are identical. Normalisation, (x * rescale - mean) / std, then runs in float32
on the device (``PixelSpec.normalise``) where the processor rescales in float64 and casts: the two
differ by a few float32 ulps (< 1e-5). ``draft=True`` lets libjpeg decode big DocVQA-schema JPEGs at
1/2-1/8 scale first (several times faster builds); those pages then differ from the processor's by
~0.3-1.6 grey levels on average (measured on synthetic pages; more when the final resize is mild) and
up to ~40 at sharp text edges, so it is opt-in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from florence_tune.data import mapped
from florence_tune.data.images import BadImage
from florence_tune.data.rows import BadSample, Item
from florence_tune.data.sample import ALTERED, Sample, Skipped
from florence_tune.errors import UsageError


@dataclass(frozen=True)
class PixelSpec:
    """What the processor does to a page, as plain numbers: fixed-size resize, rescale, normalise."""

    height: int
    width: int
    resample: int
    rescale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_processor(cls, processor) -> PixelSpec:
        ip = processor.image_processor
        size = dict(ip.size) if ip.size is not None else {}
        if not (ip.do_resize and size.get("height") and size.get("width")) or ip.do_center_crop:
            raise UsageError("the uint8 page path reproduces a fixed height x width resize without centre crop; "
                             f"this processor has size={size}, do_center_crop={ip.do_center_crop}")
        return cls(height=int(size["height"]), width=int(size["width"]), resample=int(ip.resample),
                   rescale=float(ip.rescale_factor) if ip.do_rescale else 1.0,
                   mean=tuple(ip.image_mean) if ip.do_normalize else (0.0, 0.0, 0.0),
                   std=tuple(ip.image_std) if ip.do_normalize else (1.0, 1.0, 1.0))

    def normalise(self, pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (N, 3, H, W) → the processor's float values; run it where the pixels are (the GPU)."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
        return ((pixels.to(torch.float32) * self.rescale - mean) / std).to(dtype)


def to_pixels(image: Image.Image, spec: PixelSpec) -> torch.Tensor:
    """An RGB page → (3, H, W) uint8 at model resolution, by the processor's own Pillow call."""
    return torch.from_numpy(pixel_array(image, spec))


def pixel_array(image: Image.Image, spec: PixelSpec) -> np.ndarray:
    """``to_pixels`` in numpy only: safe in processes forked after torch started its thread pool."""
    resized = image.resize((spec.width, spec.height), resample=spec.resample)
    return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1))


@dataclass
class PageSample(Sample):
    """A ``Sample`` whose page comes as ``pixels`` (uint8, 3 x H x W, model resolution); ``image`` is None.

    ``page`` numbers the page within its dataset: samples with the same number share the page, so a
    batch runs the vision tower once for it (and the feature cache can key on it).
    """

    pixels: Any = None
    page: int = -1


# --- which samples share a page ------------------------------------------------------------------


@dataclass
class PageIndex:
    """``page_of[i]``: the page number of sample i; ``keys[p]``: content hash of page p; ``first[p]``: a
    sample index showing page p."""

    page_of: np.ndarray
    keys: list[str]
    first: np.ndarray

    @property
    def n_pages(self) -> int:
        return len(self.keys)


def index_pages(dataset) -> PageIndex:
    """Which samples of a map-style dataset share a page (keys from the undecoded rows, nothing decoded)."""
    keys = list(dataset.page_keys())
    numbers: dict[str, int] = {}
    page_of = np.fromiter((numbers.setdefault(k, len(numbers)) for k in keys), dtype=np.int64, count=len(keys))
    first = np.full(len(numbers), -1, dtype=np.int64)
    for index in range(len(page_of) - 1, -1, -1):
        first[page_of[index]] = index
    return PageIndex(page_of=page_of, keys=list(numbers), first=first)


def page_image(dataset, index: int, spec: PixelSpec, draft: bool) -> tuple[Image.Image, tuple[str, ...]]:
    """The decoded page of sample ``index`` and the alterations made to it (raises BadImage/BadSample)."""
    return dataset.page(index, draft=max(spec.width, spec.height) if draft else None)


# --- the dataset the fast path trains on ---------------------------------------------------------


class PagePixels:
    """Map-style view of ``dataset`` whose samples are ``PageSample``s (``Skipped`` pass through).

    With a ``PageCache`` nothing is decoded: the text comes from the row, the page from the cache.
    Without one, the page is decoded and resized to uint8 where the item is fetched (a data-loader
    worker), once for a run of questions on the same page, so the processor's image path never runs
    in the collate function on the main process.
    """

    random_access = True

    def __init__(self, dataset, index: PageIndex, spec: PixelSpec, cache=None):  # cache: page_cache.PageCache
        self.dataset, self.index, self.spec, self.cache = dataset, index, spec, cache
        self.predict_only = dataset.predict_only
        self._last: tuple[int, Any] = (-1, None)  # (page, pixels or Skipped reason): questions come page by page

    def __len__(self) -> int:
        return len(self.index.page_of)

    def __getitem__(self, index: int) -> Item:
        index = int(index)
        page = int(self.index.page_of[index])
        item = self.dataset.text_item(index)
        if not isinstance(item, Sample):
            return item
        pixels, meta = self._page(page, index, item)
        if isinstance(pixels, str):
            return Skipped(pixels)
        altered = [*item.meta.get(ALTERED, ()), *meta.get(ALTERED, ())]  # the draft's, then the page's
        return _with_pixels(item, pixels, page, {**item.meta, **meta, ALTERED: altered})

    def _page(self, page: int, index: int, item: Sample) -> tuple[Any, dict]:
        """(uint8 pixels or the Skipped reason, meta to add) for the page of sample ``index``."""
        if self.cache is not None:
            status = self.cache.status[page]
            meta = {ALTERED: self.cache.altered[page], "image_size": self.cache.sizes[page]}
            return (status or self.cache.pixels(page)), meta
        if self._last[0] != page:
            try:
                image, altered = page_image(self.dataset, index, self.spec, draft=False)
                self._last = (page, (to_pixels(image, self.spec), {ALTERED: list(altered), "image_size": image.size}))
            except BadImage as exc:
                self._last = (page, (f"image_{exc.reason}", {}))
            except BadSample as exc:
                self._last = (page, (exc.reason, {}))
        return self._last[1]

    def share(self):
        return mapped.share(self)

    def loader(self, *, batch_size: int, collate_fn, num_workers: int = 0):
        return mapped.share_loader(self, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers)

    def text_samples(self, limit: int | None = None):
        return self.dataset.text_samples(limit)


def _with_pixels(item: Sample, pixels: torch.Tensor, page: int, meta: dict) -> PageSample:
    fields = {f.name: getattr(item, f.name) for f in dataclasses.fields(Sample)}
    return PageSample(**{**fields, "image": None, "meta": meta}, pixels=pixels, page=page)

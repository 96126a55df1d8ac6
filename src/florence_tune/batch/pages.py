"""Pages at model resolution: which samples share a page, a one-time uint8 cache of every page, and
samples that carry their page as uint8 pixels instead of a decoded image.

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

import bisect
import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from florence_tune.data.images import BadImage
from florence_tune.data.rows import BadSample, Item
from florence_tune.data.sample import ALTERED, Sample, Skipped
from florence_tune.errors import UsageError

CACHE_VERSION = "1"
PIXELS_FILE = "pixels.npy"
INDEX_FILE = "pages.json"


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
    """Group a map-style dataset's samples by page, by a hash of the image bytes (no decoding for
    Arrow-backed datasets; other datasets are decoded once and hashed by pixels)."""
    keys = list(_arrow_keys(dataset)) if _is_arrow(dataset) else [_decoded_key(dataset, i) for i in range(len(dataset))]
    numbers: dict[str, int] = {}
    page_of = np.fromiter((numbers.setdefault(k, len(numbers)) for k in keys), dtype=np.int64, count=len(keys))
    first = np.full(len(numbers), -1, dtype=np.int64)
    for index in range(len(page_of) - 1, -1, -1):
        first[page_of[index]] = index
    return PageIndex(page_of=page_of, keys=list(numbers), first=first)


def _is_arrow(dataset) -> bool:
    from florence_tune.data.mapped import SampleDataset

    return isinstance(dataset, SampleDataset)


def _arrow_keys(dataset):
    """One key per sample of a ``SampleDataset``, read from the undecoded image column(s)."""
    produced = 0
    for part in dataset.parts:
        columns = list(part.adapter.image_columns)
        per_row = iter(np.diff(part.ends, prepend=0).tolist()) if part.ends is not None else None
        for batch in part.rows.select_columns(columns).iter(batch_size=256):  # Arrow tables: bytes, not images
            for row in batch.to_pylist():
                key = _bytes_key([row.get(c) for c in columns])
                for _ in range(next(per_row) if per_row is not None else 1):
                    if produced == len(dataset):
                        return
                    yield key
                    produced += 1


def _bytes_key(values: list[Any]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for value in values:
        for image in value if isinstance(value, list) else [value]:
            if isinstance(image, dict) and isinstance(image.get("bytes"), bytes):
                digest.update(image["bytes"])
            else:  # a file path: its name and what the file is now (a page edited in place is a new page)
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


def _decoded_key(dataset, index: int) -> str:
    item = dataset[index]
    if not isinstance(item, Sample) or item.image is None:
        return f"unusable:{index}"  # a page of its own: nothing to share
    digest = hashlib.blake2b(item.image.tobytes(), digest_size=16)
    digest.update(f"{item.image.size}".encode())
    return digest.hexdigest()


# --- a sample's text and raw row, without decoding its image -------------------------------------


def _locate(dataset, index: int):
    """(part, row number, turn) of sample ``index`` in a ``SampleDataset``."""
    number = bisect.bisect_right(dataset.starts, index) - 1
    part, local = dataset.parts[number], index - dataset.starts[number]
    if part.ends is None:
        return part, local, 0
    row = int(np.searchsorted(part.ends, local, side="right"))
    return part, row, local - (int(part.ends[row - 1]) if row else 0)


def text_item(dataset, index: int) -> Item:
    """Sample ``index`` with ``image=None`` (or its ``Skipped``); Arrow rows are read, never decoded."""
    if not _is_arrow(dataset):
        item = dataset[index]
        return dataclasses.replace(item, image=None) if isinstance(item, Sample) else item
    part, row, turn = _locate(dataset, index)
    return part.adapter.drafts(part.row(row))[turn]


def page_image(dataset, index: int, spec: PixelSpec, draft: bool) -> tuple[Image.Image, tuple[str, ...]]:
    """The decoded page of sample ``index`` and the alterations made to it (raises BadImage/BadSample)."""
    if not _is_arrow(dataset):
        item = dataset[index]
        if not isinstance(item, Sample):
            raise BadSample(item.reason)
        return item.image, tuple(item.meta.get(ALTERED, ()))
    from florence_tune.data.adapters import docvqa

    part, row, _ = _locate(dataset, index)
    values = part.row(row)
    if draft and isinstance(part.adapter, docvqa.Adapter) and values.get("image") is not None:
        return open_reduced(values["image"], spec), ()
    return part.adapter.image(values)


def open_reduced(source: Any, spec: PixelSpec) -> Image.Image:
    """Decode a page, letting libjpeg scale a big JPEG down (1/2..1/8) to no less than the model size.

    It goes through images.py's own guards (allowed formats, size limits, decompression bombs), so a
    hostile page fails exactly as it does on the plain path.
    """
    from florence_tune.data import images

    with images._binary_stream(source) as (stream, label), images._decode_guard(label):
        with Image.open(stream, formats=images._allowed_formats()) as image:
            images._check_size(image.size, images.MAX_PIXELS, images.MAX_SIDE, label)
            full = image.size
            side = max(spec.width, spec.height)  # square request: an EXIF rotation may swap the sides
            image.draft("RGB", (side, side))
            image.load()
            page = images.to_rgb(image)
    if (page.width > page.height) != (full[0] > full[1]):  # turned upright by its EXIF orientation
        full = full[::-1]
    page.info["full_size"] = tuple(full)  # boxes are measured on the page as stored, not the draft
    return page


# --- the cache -----------------------------------------------------------------------------------


class PageCache:
    """A finished cache folder: ``pixels.npy`` (pages x 3 x H x W, uint8) and ``pages.json``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta = json.loads((self.folder / INDEX_FILE).read_text())
        self.status: list[str] = meta["status"]  # "" or the Skipped reason of an unusable page
        self.altered: list[list[str]] = meta["altered"]
        self.sizes: list[list[int]] = meta["sizes"]  # (width, height) of each original page
        self._array = None
        self._pid = None

    def __getstate__(self):  # data-loader workers reopen the mapping themselves
        return {**self.__dict__, "_array": None, "_pid": None}

    def pixels(self, page: int) -> torch.Tensor:
        if self._array is None or self._pid != os.getpid():
            self._array, self._pid = np.load(self.folder / PIXELS_FILE, mmap_mode="r"), os.getpid()
        return torch.from_numpy(np.array(self._array[page]))  # a copy: the mapping stays read-only


def cache_folder(root: str | Path, index: PageIndex, spec: PixelSpec, draft: bool) -> Path:
    """Content-addressed: the same pages at the same size and decoding land in the same folder."""
    digest = hashlib.blake2b(digest_size=10)
    digest.update(json.dumps([CACHE_VERSION, dataclasses.asdict(spec), draft]).encode())
    digest.update("\n".join(index.keys).encode())
    return Path(root) / f"pages-{spec.height}x{spec.width}-{digest.hexdigest()}"


def build_cache(dataset, index: PageIndex, spec: PixelSpec, root: str | Path, *, workers: int = 1,
                draft: bool = False) -> PageCache:
    """Decode and resize every unique page once (``workers`` processes); reuse a finished cache."""
    folder = cache_folder(root, index, spec, draft)
    if (folder / INDEX_FILE).exists():
        return PageCache(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _check_space(folder.parent, index.n_pages * 3 * spec.height * spec.width)
    staging = folder.with_name(f".{folder.name}.building-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        shape = (index.n_pages, 3, spec.height, spec.width)
        np.lib.format.open_memmap(staging / PIXELS_FILE, mode="w+", dtype=np.uint8, shape=shape).flush()
        filled = _fill_all(dataset, index, spec, staging / PIXELS_FILE, workers, draft)
        (staging / INDEX_FILE).write_text(json.dumps({"version": CACHE_VERSION, "spec": dataclasses.asdict(spec),
                                                      "draft": draft, **filled}))
        try:
            staging.rename(folder)
        except OSError:  # another rank or process finished the same cache first
            if not (folder / INDEX_FILE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PageCache(folder)


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free * 0.95:
        raise UsageError(f"the page cache needs {needed / 2**30:.1f} GiB and '{folder}' has {free / 2**30:.1f} GiB "
                         "free; point --page-cache at a bigger disk")


def _fill_all(dataset, index: PageIndex, spec: PixelSpec, file: Path, workers: int, draft: bool):
    import datasets

    jobs = datasets.Dataset.from_dict({"page": np.arange(index.n_pages, dtype=np.int64)})
    kwargs = {"dataset": dataset, "first": index.first, "spec": spec, "file": str(file), "draft": draft}
    done = jobs.map(_fill_pages, batched=True, batch_size=16, fn_kwargs=kwargs, keep_in_memory=True,
                    num_proc=min(workers, index.n_pages) if workers > 1 else None, load_from_cache_file=False,
                    new_fingerprint=uuid.uuid4().hex, desc="page cache")
    return {name: list(done[name]) for name in ("status", "altered", "sizes")}


def _fill_pages(batch: dict[str, list], *, dataset, first, spec: PixelSpec, file: str, draft: bool):
    """One ``datasets.map`` batch: decode, resize and write these pages into the shared array."""
    array = np.load(file, mmap_mode="r+")
    status, altered, sizes = [], [], []
    for page in batch["page"]:
        reason, changes, size = "", [], [0, 0]
        try:
            image, changes = page_image(dataset, int(first[page]), spec, draft)
            array[page] = pixel_array(image, spec)
            size = list(image.info.get("full_size", image.size))
        except BadImage as exc:
            reason = f"image_{exc.reason}"
        except BadSample as exc:
            reason = exc.reason
        status.append(reason)
        altered.append(list(changes))
        sizes.append(size)
    array.flush()
    return {"status": status, "altered": altered, "sizes": sizes}


# --- the dataset the fast path trains on ---------------------------------------------------------


class PagePixels:
    """Map-style view of ``dataset`` whose samples are ``PageSample``s (``Skipped`` pass through).

    With a ``PageCache`` nothing is decoded: the text comes from the row, the page from the cache.
    Without one, the page is decoded and resized to uint8 where the item is fetched (a data-loader
    worker), once for a run of questions on the same page, so the processor's image path never runs
    in the collate function on the main process.
    """

    def __init__(self, dataset, index: PageIndex, spec: PixelSpec, cache: PageCache | None = None):
        self.dataset, self.index, self.spec, self.cache = dataset, index, spec, cache
        self.predict_only = getattr(dataset, "predict_only", False)
        self._last: tuple[int, Any] = (-1, None)  # (page, pixels or Skipped reason): questions come page by page

    def __len__(self) -> int:
        return len(self.index.page_of)

    def __getitem__(self, index: int) -> Item:
        index = int(index)
        page = int(self.index.page_of[index])
        item = text_item(self.dataset, index) if _is_arrow(self.dataset) else self.dataset[index]
        if not isinstance(item, Sample):
            return item
        pixels, meta = self._page(page, index, item)
        if isinstance(pixels, str):
            return Skipped(pixels)
        return _with_pixels(item, pixels, page, {**item.meta, **meta})

    def _page(self, page: int, index: int, item: Sample) -> tuple[Any, dict]:
        """(uint8 pixels or the Skipped reason, meta to add) for the page of sample ``index``."""
        if self.cache is not None:
            status = self.cache.status[page]
            meta = {ALTERED: self.cache.altered[page], "image_size": self.cache.sizes[page]}
            return (status or self.cache.pixels(page)), meta
        if item.image is not None:  # a dataset that hands out decoded images already
            return to_pixels(item.image, self.spec), {"image_size": item.image.size}
        if self._last[0] != page:
            try:
                image, altered = page_image(self.dataset, index, self.spec, draft=False)
                self._last = (page, (to_pixels(image, self.spec), {ALTERED: list(altered), "image_size": image.size}))
            except BadImage as exc:
                self._last = (page, (f"image_{exc.reason}", {}))
            except BadSample as exc:
                self._last = (page, (exc.reason, {}))
        return self._last[1]

    def text_samples(self, limit: int | None = None):
        return self.dataset.text_samples(limit)


def _with_pixels(item: Sample, pixels: torch.Tensor, page: int, meta: dict) -> PageSample:
    fields = {f.name: getattr(item, f.name) for f in dataclasses.fields(Sample)}
    return PageSample(**{**fields, "image": None, "meta": meta}, pixels=pixels, page=page)

"""Data held in memory → a ``save_to_disk`` folder under the cache, named by its content, read like any local set.

Accepted: a ``datasets.Dataset`` or ``DatasetDict``, a pandas DataFrame, a list of dicts, or a mapping of split
name → any of those, in DocVQA's shape (``image``, ``question``, ``answers``), the Cauldron's (``images``,
``texts``) or prompt/target (``image``, ``prefix``, ``suffix``). An image may be a PIL image, a file path or
the file's bytes; every one is stored as bytes (a PIL image opened from a file as that file's bytes, any other
as lossless PNG), so the folder stands alone. A path that cannot be read leaves its row without an image,
counted as ``no_image`` like every bad row.

The folder is ``<cache>/in_memory/<key>``, the key a digest of the splits' ``datasets`` fingerprints (a content
hash of rows built here; for a ``Dataset`` its own fingerprint), so the same data is written once and reused
(a second run, ``--resume``), and other data gets another folder. Its path then goes through ``data.load`` like
any local dataset: validation, held-out rows, counted bad rows, config.yaml and resume work unchanged.

    folder = in_memory.save([{"image": page, "question": "What is the total?", "answers": ["$12.50"]}])
    train = data.load(str(folder), "train")   # a set without a validation split lends it its first rows
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from florence_tune import paths
from florence_tune.data import sources
from florence_tune.data.options import DataOptions
from florence_tune.errors import UsageError

log = logging.getLogger(__name__)
FOLDER = "in_memory"
LAYOUT = "1"  # part of every key: a change to what is written here must not reuse folders written before it
IMAGE_COLUMN, IMAGES_COLUMN = "image", "images"  # one page (DocVQA, prompt/target), several pages (Cauldron)
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})  # the rest (CMYK, F...) as TIFF, also lossless
FORMS = ("a datasets.Dataset or DatasetDict, a pandas DataFrame, a list of dicts, or a dict of split name → "
         "any of those")


def spec_of(data: Any, split: str = "train", root: Path | None = None) -> str:
    """The dataset spec for ``data``: a spec string or path as it is; data in memory, its folder (``save``)."""
    if isinstance(data, str | os.PathLike):
        return os.fspath(data)
    return str(save(data, split, root))


def save(data: Any, split: str = "train", root: Path | None = None) -> Path:
    """The folder holding ``data`` (written unless the same data is there already); ``split``: the name of a
    single set of rows (a mapping or DatasetDict names its own splits); ``root``: default the cache's."""
    splits = as_splits(data, split)
    key = digest(splits)
    folder = Path(root or paths.cache_root() / FOLDER) / key
    if folder.is_dir():
        return folder
    for name, rows in splits.items():  # the adapter's own decision, before anything is written
        sources.adapter_for(rows, name, DataOptions(), f"in-memory split '{name}'")
    _write(splits, folder)
    log.warning("in-memory data (%s) written to %s; the same data reuses it",
                ", ".join(f"{name} {len(rows)} rows" for name, rows in splits.items()), folder)
    return folder


def as_splits(data: Any, split: str = "train") -> dict[str, Any]:
    """Split name → ``datasets.Dataset``, images stored as bytes or (a given Dataset's) as they are."""
    import datasets

    if isinstance(data, Mapping) and not isinstance(data, datasets.Dataset):
        if not data:
            raise UsageError(f"the dataset given has no splits; give {FORMS}")
        return {str(name): as_dataset(rows, f"split '{name}'") for name, rows in data.items()}
    return {split: as_dataset(data, "the dataset given")}


def as_dataset(data: Any, what: str):
    """One set of rows as a ``datasets.Dataset``."""
    import datasets

    if isinstance(data, datasets.Dataset):
        return data
    if isinstance(data, datasets.IterableDataset):
        raise UsageError(f"{what} is a streamed datasets.IterableDataset, which cannot be written here; pass its "
                         "spec (a hub id or a folder) with streaming=True, or a datasets.Dataset")
    pandas = sys.modules.get("pandas")  # a DataFrame exists only once pandas is imported
    if pandas is not None and isinstance(data, pandas.DataFrame):
        data = data.astype(object).where(data.notna(), None).to_dict("records")  # NaN of a missing value → None
    if not isinstance(data, list | tuple) or not data or not all(isinstance(row, Mapping) for row in data):
        raise UsageError(f"{what} must be {FORMS}, with at least one row (got {_describe(data)})")
    return from_rows(list(data), what)


def from_rows(rows: list[Mapping], what: str):
    """A ``datasets.Dataset`` of dicts, every key of any row a column, images encoded as bytes."""
    import datasets
    import pyarrow as pa

    names = list(dict.fromkeys(key for row in rows for key in row))
    columns = {name: [row.get(name) for row in rows] for name in names}
    unread: list[str] = []
    if IMAGE_COLUMN in columns:
        columns[IMAGE_COLUMN] = [image_value(value, unread) for value in columns[IMAGE_COLUMN]]
    if IMAGES_COLUMN in columns:
        columns[IMAGES_COLUMN] = [None if pages is None else [image_value(page, unread) for page in _listed(pages)]
                                  for pages in columns[IMAGES_COLUMN]]
    if unread:
        log.warning("%s: %d image(s) could not be read (first: %s); their rows are counted as no_image",
                    what, len(unread), unread[0])
    try:
        dataset = datasets.Dataset.from_dict(columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise UsageError(f"{what} cannot be made into a table (each column needs one type in every row): "
                         f"{str(exc).splitlines()[0][:200]}") from None
    image = datasets.Image()
    for name, feature in ((IMAGE_COLUMN, image), (IMAGES_COLUMN, datasets.List(image))):
        if name in names:
            dataset = dataset.cast_column(name, feature)
    return dataset


def image_value(value: Any, unread: list[str]) -> dict[str, Any] | None:
    """One image in the ``Image`` feature's storage, as bytes: ``{"bytes": ..., "path": None}``; None for a
    missing image or a file that cannot be read (its name added to ``unread``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, Image.Image):
        name = getattr(value, "filename", "")
        if name and os.path.isfile(name):  # the file as it was written: no re-encoding, EXIF kept
            return _file(name, unread)
        return {"bytes": encode(value), "path": None}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": bytes(value), "path": None}
    if isinstance(value, str | os.PathLike):
        return _file(value, unread)
    if isinstance(value, Mapping) and ("bytes" in value or "path" in value):  # the Image feature's own form
        if value.get("bytes") is not None:
            return {"bytes": bytes(value["bytes"]), "path": None}
        return _file(value["path"], unread) if value.get("path") else None
    raise UsageError(f"an image is a {type(value).__name__}; give a PIL image, a file path or the file's bytes")


def _file(path: str | os.PathLike, unread: list[str]) -> dict[str, Any] | None:
    try:
        return {"bytes": Path(path).expanduser().read_bytes(), "path": None}
    except (OSError, ValueError):
        unread.append(os.fspath(path))
        return None


def encode(image: Image.Image) -> bytes:
    """Lossless bytes of an image held in memory (PNG, or TIFF for modes PNG cannot hold), its EXIF kept."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if image.mode in _PNG_MODES else "TIFF", exif=image.getexif())
    return buffer.getvalue()


def _listed(pages: Any) -> list[Any]:
    return list(pages) if isinstance(pages, list | tuple) else [pages]


def _describe(data: Any) -> str:
    if isinstance(data, list | tuple):
        return "no rows" if not data else f"a list of {type(data[0]).__name__}"
    return f"a {type(data).__name__}"


def digest(splits: dict[str, Any]) -> str:
    """The folder's name: the layout version, then each split's name and ``datasets`` fingerprint."""
    hasher = hashlib.blake2b(digest_size=12)
    hasher.update(LAYOUT.encode())
    for name in sorted(splits):
        hasher.update(f"|{name}:{splits[name]._fingerprint}".encode())
    return hasher.hexdigest()


def _write(splits: dict[str, Any], folder: Path) -> None:
    """Images stored as bytes, written next to ``folder`` and renamed into place: a crash leaves no half
    folder to reuse, and two processes writing the same data keep one copy."""
    import datasets

    staged = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    try:
        datasets.DatasetDict({name: embedded(rows) for name, rows in splits.items()}).save_to_disk(str(staged))
        os.rename(staged, folder)
    except OSError:
        if not folder.is_dir():  # not another process's copy of the same data: a real failure
            raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def embedded(rows):
    """A given ``Dataset`` whose images are file paths (or plain path / bytes columns), with their bytes."""
    import datasets

    image = datasets.Image(decode=False)
    wanted = {IMAGE_COLUMN: image, IMAGES_COLUMN: datasets.List(image)}
    present = {name: feature for name, feature in wanted.items() if name in rows.column_names}
    if not present or all(_holds_bytes(rows, name) for name in present):
        return rows
    rows = rows.cast(datasets.Features({**rows.features, **present}))
    features = datasets.Features({**rows.features, **{name: (datasets.Image() if name == IMAGE_COLUMN
                                                              else datasets.List(datasets.Image()))
                                                      for name in present}})
    return rows.map(_embed_batch, batched=True, features=features, fn_kwargs={"columns": list(present)},
                    desc="images into the dataset")


def _holds_bytes(rows, name: str) -> bool:
    """Whether every image of column ``name`` is already stored as bytes (an ``Image`` column, read as Arrow)."""
    import datasets
    import pyarrow.compute as pc

    feature = rows.features[name]
    inner = feature.feature if isinstance(feature, datasets.List) else feature
    if not isinstance(inner, datasets.Image):
        return False
    column = rows.with_format("arrow")[name]
    if isinstance(feature, datasets.List):
        column = pc.list_flatten(column)
    stored = pc.struct_field(column, "bytes")
    return column.null_count == stored.null_count


def _embed_batch(batch: dict[str, list], columns: list[str]) -> dict[str, list]:
    unread: list[str] = []
    for name in columns:
        if name == IMAGE_COLUMN:
            batch[name] = [image_value(value, unread) for value in batch[name]]
        else:
            batch[name] = [None if pages is None else [image_value(page, unread) for page in _listed(pages)]
                           for pages in batch[name]]
    if unread:
        log.warning("%d image(s) could not be read (first: %s); their rows are counted as no_image",
                    len(unread), unread[0])
    return batch

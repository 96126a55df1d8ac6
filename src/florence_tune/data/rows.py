"""The contract between a dataset row and its ``Sample``s, shared by every adapter.

An adapter turns one raw row (images still undecoded: ``{"bytes", "path"}`` dicts or file paths)
into samples in two steps, so the expensive half runs only for samples that are actually used:

* ``drafts(row)`` — text only: one ``Sample`` (with ``image=None``) or ``Skipped`` per question of
  the row. A Cauldron row with four user/assistant turns gives four drafts.
* ``image(row)`` — decode the row's picture once (safely, see images.py), returning it with the
  list of alterations made (e.g. several pages tiled into one).

``realise`` joins the two. Adapters never tokenize; the collator owns tensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from florence_tune.data.images import BadImage, is_url, open_image
from florence_tune.data.sample import ALTERED, Sample, Skipped

Item = Sample | Skipped


class BadSample(Exception):
    """A row that cannot become a training sample; ``reason`` is the counter key."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


class Adapter(Protocol):
    """What every source schema (DocVQA, Cauldron, JSONL...) provides."""

    image_columns: tuple[str, ...]

    def drafts(self, row: dict[str, Any]) -> list[Item]: ...

    def samples_per_row(self, rows) -> np.ndarray | None:
        """``len(drafts(row))`` of each row of an Arrow-formatted table, read without images (None: one each)."""

    def image(self, row: dict[str, Any], draft: int | None = None) -> tuple[Image.Image, tuple[str, ...]]: ...


def realise(adapter: Adapter, row: dict[str, Any], keep: Collection[int] | None = None) -> list[Item]:
    """The row's samples with their image (decoded once for the whole row), or ``Skipped`` ones.

    ``keep``: positions among the row's drafts to return (another data-loader worker or rank owns
    the others); the image is not decoded when none of them is usable.
    """
    drafts = adapter.drafts(row)
    chosen = drafts if keep is None else [drafts[i] for i in keep]
    if not any(isinstance(d, Sample) for d in chosen):
        return chosen
    try:
        image, altered = adapter.image(row)
    except BadImage as exc:
        return [d if isinstance(d, Skipped) else Skipped(f"image_{exc.reason}") for d in chosen]
    except BadSample as exc:
        return [d if isinstance(d, Skipped) else Skipped(exc.reason) for d in chosen]
    return [dataclasses.replace(d, image=image, meta={**d.meta, ALTERED: [*d.meta.get(ALTERED, ()), *altered]})
            if isinstance(d, Sample) else d for d in chosen]  # the draft's own alterations, then the image's


def as_text(value: Any) -> str | None:
    """A text field's value as text: strings as they are, numbers (``"answer": 42``) written out; else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    return None


def json_lines(file: Path) -> Iterator[tuple[int, str | None]]:
    """(line number, text) of each non-blank line; text None for a line that is not UTF-8 (decoded per line, so
    one such line is one counted row rather than text quietly full of U+FFFD)."""
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield number, None


def inside(root: str | Path, folder: str | Path, name: str) -> str | None:
    """``name`` resolved against ``folder``, or None when it points outside ``root`` (symlinks followed). A URL
    is left as it is: images.py refuses it with its own reason."""
    if is_url(name):
        return name
    candidate = Path(os.path.realpath(Path(folder) / name))
    return str(candidate) if candidate.is_relative_to(os.path.realpath(root)) else None


def rooted(image: Any, root: str | None) -> Any:
    """An image value whose file path (a string, or an undecoded image without bytes) is read against the
    dataset folder ``root`` and must stay inside it, as JSON lines paths do; None: left as it is (hub rows)."""
    if root is None:
        return image
    path = image.get("path") if isinstance(image, dict) and image.get("bytes") is None else image
    if not isinstance(path, str) or not path:
        return image
    resolved = inside(root, root, path)
    if resolved is None:
        raise BadSample("path_outside_dataset")
    return resolved


def single_image(row: dict[str, Any], draft: int | None = None,
                 root: str | None = None) -> tuple[Image.Image, tuple[str, ...]]:
    """``Adapter.image`` of a row with one page in its ``image`` column (DocVQA, JSON lines, task rows)."""
    if not row.get("image"):
        raise BadSample("no_image")
    return open_image(rooted(row["image"], root), draft=draft), ()


def fingerprint(row: dict[str, Any], image_columns: tuple[str, ...]) -> str:
    """A short content hash of a row: its text fields and its image bytes (or paths).

    Identifies Cauldron turns across runs, and lets a streamed train split leave out the rows held
    out for validation without knowing their position.
    """
    digest = hashlib.sha1()
    text = {k: v for k, v in row.items() if k not in image_columns}
    digest.update(json.dumps(text, sort_keys=True, default=str).encode())
    for column in image_columns:
        value = row.get(column)
        for image in value if isinstance(value, list) else [value]:
            _hash_image(digest, image)
    return digest.hexdigest()[:12]


def _hash_image(digest, image: Any) -> None:
    if isinstance(image, dict):
        data, path = image.get("bytes"), image.get("path")
        digest.update(data if isinstance(data, bytes) else str(path).encode())
    else:
        digest.update(str(image).encode())

"""What ``predict`` answers about: one image, a folder, a glob, a PDF's pages or JSON lines of questions.

    florence-tune predict --model runs/demo --image scans/ --question "What is the total?" --output preds.jsonl

``find(spec)`` decides once which of these a spec is and lists its items before any model loads: folders are
walked (recursively, sorted, hidden names left out), globs expanded, PDFs opened to count their pages, JSON lines
read. A spec that names nothing usable is a ``UsageError``; an item that turns out unreadable later (a corrupt
image, a page that does not render) is one ``BadImage`` for its line, never the end of the run. Images are
decoded by ``images.open_image`` alone; PDF pages are rendered by pypdfium2 (PDFium) and then go through it too.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pypdfium2
from PIL import Image

from florence_tune.data.images import ALLOWED_FORMATS, MAX_PIXELS, MAX_SIDE, BadImage, open_image
from florence_tune.data.rows import inside, json_lines
from florence_tune.errors import UsageError

PDF_SUFFIX = ".pdf"
ROWS_SUFFIX = ".jsonl"
POINTS_PER_INCH = 72  # PDF page sizes are in points
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class Item:
    """One answer to give: an image file, or a PDF's page (1-based). ``image``: as the user named it (the row's
    own value for JSON lines). A JSON lines row brings its ``question`` or ``task`` (else the command's own);
    ``error``: why the item cannot be answered, known before anything is decoded."""

    image: str | None
    path: str | None = None
    page: int | None = None
    question: str | None = None
    task: str | None = None
    error: str | None = None


@dataclass
class Inputs:
    """The items of one spec, and what an output file must not overwrite or land in."""

    items: list[Item]
    files: list[Path] = field(default_factory=list)  # every file read, resolved
    folders: list[Path] = field(default_factory=list)  # folders walked: an output there is read next time
    single: bool = False  # one image file named as itself: today's one plain answer
    rows: bool = False  # the items carry their own question or task (JSON lines)


@functools.cache
def image_suffixes() -> frozenset[str]:
    """File name endings of the formats open_image decodes (.png, .jpg, .jpeg, .tif...)."""
    return frozenset(suffix for suffix, name in Image.registered_extensions().items() if name in ALLOWED_FORMATS)


def find(spec: str) -> Inputs:
    """The items ``spec`` names; raises UsageError when it names none (see the module's docstring)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return _folder(path)
    if path.is_file() and path.suffix.lower() == PDF_SUFFIX:
        items = _pdf_pages(path)
        if items[0].error:
            raise UsageError(f"cannot open PDF '{spec}' ({items[0].error}); is it a PDF, and not encrypted?")
        return Inputs(items, files=[_resolved(path)])
    if path.is_file() and path.suffix.lower() == ROWS_SUFFIX:
        return _rows(path)
    if not path.exists() and _GLOB_CHARACTERS & set(spec):
        return _glob(spec)
    return Inputs([Item(image=spec, path=str(path))], files=[_resolved(path)], single=True)


def _folder(folder: Path) -> Inputs:
    found = []
    for parent, folders, names in os.walk(folder):  # symlinked folders are not followed (no loops)
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [Path(parent) / name for name in names if not name.startswith(".") and _readable_kind(name)]
    if not found:
        raise UsageError(f"--image folder '{folder}' holds no image or PDF file (looked for "
                         f"{', '.join(sorted(image_suffixes()))}, .pdf, in every folder below it)")
    return _files(sorted(found, key=lambda p: p.relative_to(folder).parts), folders=[_resolved(folder)])


def _glob(spec: str) -> Inputs:
    found = [Path(name) for name in sorted(glob.glob(os.path.expanduser(spec), recursive=True))]
    found = [path for path in found if path.is_file() and _readable_kind(path.name)]
    if not found:
        raise UsageError(f"--image '{spec}' matches no image or PDF file (quote a glob so the shell leaves it "
                         "to florence-tune)")
    return _files(found)


def _readable_kind(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return suffix == PDF_SUFFIX or suffix in image_suffixes()


def _files(found: list[Path], folders: list[Path] | None = None) -> Inputs:
    items = []
    for path in found:
        items += _pdf_pages(path) if path.suffix.lower() == PDF_SUFFIX else [Item(image=str(path), path=str(path))]
    return Inputs(items, files=[_resolved(path) for path in found], folders=folders or [])


def _pdf_pages(path: Path) -> list[Item]:
    """One item per page; one item with an error when the PDF cannot be opened (or has no page)."""
    try:
        count = _page_count(path)
    except BadImage as exc:
        return [Item(image=str(path), path=str(path), error=f"pdf_{exc.reason}")]
    if not count:
        return [Item(image=str(path), path=str(path), error="pdf_empty")]
    return [Item(image=str(path), path=str(path), page=number) for number in range(1, count + 1)]


def _rows(file: Path) -> Inputs:
    items = [_row(line, file) for _, line in json_lines(file)]
    if not items:
        raise UsageError(f"--image '{file}' holds no JSON line; write one "
                         '{"image": "p.png", "question": "..."} (or "task": "<OD>") per line')
    files = [_resolved(file)] + sorted({_resolved(Path(i.path)) for i in items if i.path and not i.error})
    return Inputs(items, files=files, rows=True)


def _row(line: str | None, file: Path) -> Item:
    """One JSON line → its item; the error names are those of training's JSON lines (local.py, rows.py)."""
    if line is None:
        return Item(image=None, error="not_utf8")
    try:
        row = json.loads(line)
    except ValueError:
        row = None
    if not isinstance(row, dict):
        return Item(image=None, error="bad_json_line")
    name = row.get("image")
    if not isinstance(name, str) or not name:
        return Item(image=None, error="no_image")
    question, task = (row.get(key) if isinstance(row.get(key), str) else None for key in ("question", "task"))
    asked = {"question": question, "task": task}
    path = inside(file.parent, file.parent, name)
    if path is None:
        return Item(image=name, **asked, error="path_outside_dataset")
    if (question is None) == (task is None):
        return Item(image=name, **asked, error="no_question" if question is None else "question_and_task")
    page = row.get("page")
    if name.lower().endswith(PDF_SUFFIX) or page is not None:
        if not (isinstance(page, int) and not isinstance(page, bool) and page >= 1):
            return Item(image=name, **asked, error="bad_page")  # a PDF row names its page: "page": 1 is the first
        return Item(image=name, path=path, page=page, **asked)
    return Item(image=name, path=path, **asked)


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path.expanduser()))


class Reader:
    """Decodes the items' images in order, keeping the last PDF open (pages of one PDF come together)."""

    def __init__(self, dpi: float) -> None:
        self.scale = dpi / POINTS_PER_INCH
        self._pdf: tuple[str, Any] | None = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pdf is not None:
            self._pdf[1].close()
            self._pdf = None

    def image(self, item: Item) -> Image.Image:
        """The item's RGB image; raises BadImage (a page that does not render is ``corrupt``)."""
        if item.page is None:
            return open_image(item.path)
        document = self._document(item.path)
        if item.page > len(document):
            raise BadImage("missing", f"{item.image}: no page {item.page} (it has {len(document)})")
        return open_image(self._render(document, item))

    def _document(self, path: str):
        if self._pdf is None or self._pdf[0] != path:
            self.__exit__()
            self._pdf = (path, _open_pdf(path))
        return self._pdf[1]

    def _render(self, document, item: Item) -> Image.Image:
        try:
            page = document[item.page - 1]
            width, height = (round(side * self.scale) for side in page.get_size())
            # Checked before rendering, against open_image's own limits: a poster-sized page would allocate first.
            if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
                raise BadImage("too_large", f"{item.image} page {item.page}: {width} x {height} px at this DPI")
            return page.render(scale=self.scale).to_pil()
        except pypdfium2.PdfiumError as exc:
            raise BadImage("corrupt", f"{item.image} page {item.page}: {exc}") from exc


def _open_pdf(path: str):
    try:
        return pypdfium2.PdfDocument(path)
    except FileNotFoundError as exc:
        raise BadImage("missing", f"{path}: no such file") from exc
    except OSError as exc:
        raise BadImage("unreadable", f"{path}: {exc.strerror or exc}") from exc
    except pypdfium2.PdfiumError as exc:
        raise BadImage("corrupt", f"{path}: {exc}") from exc


def _page_count(path: Path) -> int:
    document = _open_pdf(str(path))
    try:
        return len(document)
    finally:
        document.close()


def batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    """The items in order, ``size`` at a time."""
    for start in range(0, len(items), size):
        yield items[start:start + size]

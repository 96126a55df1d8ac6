"""Synthetic document pages with DocVQA-style questions, generated offline and deterministically.

Each document is an invoice, a receipt, a form or a small table, drawn with PIL on a page whose
whole background carries one of six colour tints. Every document yields three or four questions:

* ``page_colour``   - the page tint; easy enough for a tiny randomly initialised vision model
                      looking at a 128x128 thumbnail, so a training loop can prove it learns;
* ``document_type`` - invoice / receipt / form / table, told apart by visibly different layouts;
* ``total``, ``date``, ``name``, ``number`` - text-reading questions whose answer is drawn on the
                      page verbatim, for checking real (pretrained) models.

Records follow the DocVQA schema (``questionId``, ``question``, ``question_types``, ``image``,
``docId``, ``answers``). :func:`write_dataset` stores the splits as parquet files in the Hugging Face
hub layout so ``datasets.load_dataset(path, split=...)`` reads them like any hub dataset.

Everything is a pure function of ``(split, document index, seed)``: each document draws from its own
``random.Random`` seeded with a string, so the output does not depend on the process, on
``PYTHONHASHSEED`` or on how many documents were requested before it.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from florence_tune import tasks
from florence_tune.data.synthetic.layouts import DESIGN_HEIGHT, DESIGN_WIDTH, LAYOUTS, Page
from florence_tune.paths import cache_root

# Bump whenever rendering, questions or stored columns change: the READY marker embeds it, so cached
# datasets built by an older generator are rebuilt instead of silently reused.
# 2: per-page regions (header, table, total, fields, signature) with pixel boxes, a caption and the
#    drawn text, stored in documents/ for the <OD>, <CAPTION> and <OCR> tasks; pages and questions unchanged.
# 3: documents/ also holds each drawn line with its box, a phrase per region, the three caption levels and
#    the key-value record of the page (every Florence-2 task, and extraction); pages and questions unchanged.
GENERATOR_VERSION = "3"

FAMILIES: tuple[str, ...] = ("page_colour", "document_type", "total", "date", "name", "number")
DOCUMENT_TYPES: tuple[str, ...] = ("invoice", "receipt", "form", "table")

# Light but saturated tints: text stays readable on all of them, and they are far apart in RGB so
# even a heavily downsampled page keeps its colour identity.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (238, 140, 140),
    "green": (140, 215, 140),
    "blue": (140, 180, 245),
    "yellow": (240, 232, 120),
    "purple": (205, 145, 235),
    "orange": (250, 180, 95),
}
# Small per-page jitter so a model has to learn a colour region, not six exact RGB values.
_TINT_JITTER = 6

DEFAULT_IMAGE_SIZE: tuple[int, int] = (DESIGN_WIDTH, DESIGN_HEIGHT)

DEFAULT_SIZES: dict[str, int] = {"train": 600, "validation": 60, "test": 60}
# docId = split number * _DOCS_PER_SPLIT + index, so ids never collide between splits.
_SPLIT_NUMBERS = {"train": 1, "validation": 2, "test": 3}
_DOCS_PER_SPLIT = 1_000_000
# questionId = docId * _QUESTIONS_PER_DOC + question index.
_QUESTIONS_PER_DOC = 10

FEATURES = datasets.Features(
    {
        "questionId": datasets.Value("int64"),
        "question": datasets.Value("string"),
        "question_types": datasets.Sequence(datasets.Value("string")),
        "image": datasets.Image(),
        "docId": datasets.Value("int64"),
        "answers": datasets.Sequence(datasets.Value("string")),
    }
)

# One row per page for the page-level tasks (<OD>, <CAPTION>, <OCR>). It lives outside data/ so that
# ``datasets.load_dataset(root)`` keeps reading the question files only.
DOCUMENTS_FOLDER = "documents"
DOCUMENT_FEATURES = datasets.Features(
    {
        "docId": datasets.Value("int64"),
        "image": datasets.Image(),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "labels": datasets.Sequence(datasets.Value("string")),
        "boxes": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=4)),
        "caption": datasets.Value("string"),
        "text": datasets.Value("string"),
        # a phrase per region ("the total", "the phone field"): dense captions, referring expressions
        "descriptions": datasets.Sequence(datasets.Value("string")),
        # each region's outline as polygons (flat x, y lists): segmentation
        "polygons": datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("float32")))),
        # every drawn string and its quad (x1, y1, ..., x4, y4 clockwise from the top left): OCR with regions
        "texts": datasets.Sequence(datasets.Value("string")),
        "quad_boxes": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=8)),
        "detailed_caption": datasets.Value("string"),
        "more_detailed_caption": datasets.Value("string"),
        "fields": datasets.Value("string"),  # the page's key-value record as a JSON object
    }
)
OBJECT_LABELS: tuple[str, ...] = ("header", "table", "total", "field", "signature")

# --- question wording ---------------------------------------------------------------------------

_COLOUR_QUESTIONS = (
    "What colour is the page?",
    "What is the background colour of this page?",
    "What colour is the paper of this document?",
)
_TYPE_QUESTIONS = (
    "What type of document is this?",
    "What kind of document is shown?",
    "Is this an invoice, a receipt, a form or a table?",
)
_TEXT_QUESTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("invoice", "total"): ("What is the total amount?", "How much is due on this invoice?"),
    ("receipt", "total"): ("What is the total amount?", "How much was paid in total?"),
    ("invoice", "date"): ("What is the invoice date?", "When was this invoice issued?"),
    ("receipt", "date"): ("What is the date on the receipt?", "On what date was this purchase made?"),
    ("form", "date"): ("What date is written on the form?", "When was this form filled in?"),
    ("table", "date"): ("What is the date of the report?", "When was this table prepared?"),
    ("invoice", "name"): ("Who is the customer?", "Who is the invoice billed to?"),
    ("receipt", "name"): ("Which store issued this receipt?", "What is the name of the shop?"),
    ("form", "name"): ("What name is entered on the form?", "Who filled in this form?"),
    ("table", "name"): ("Who prepared this table?", "Whose name is given as the preparer?"),
    ("invoice", "number"): ("What is the invoice number?",),
    ("receipt", "number"): ("What is the receipt number?",),
    ("form", "number"): ("What is the form number?",),
    ("table", "number"): ("What is the report number?",),
}


@dataclass(frozen=True)
class SyntheticDocument:
    """One rendered page plus the ground truth behind its questions.

    ``fields`` maps each text-reading family to the exact string drawn for it, and ``drawn_text``
    lists every string drawn on the page, so tests can check answers without OCR.
    ``questions`` holds ``(family, question, answers)`` triples in record order.
    """

    doc_id: int
    doc_type: str
    colour: str
    image: Image.Image
    fields: dict[str, str]
    drawn_text: tuple[str, ...]
    questions: tuple[tuple[str, str, tuple[str, ...]], ...]
    # (label, (x1, y1, x2, y2)) in pixels of ``image``: the tight box around everything drawn for a region.
    objects: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()
    descriptions: tuple[str, ...] = ()  # per object: the phrase naming it ("the total", "the phone field")
    lines: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()  # every drawn string and its pixel box
    extracted: dict[str, Any] | None = None  # the page's key-value record (JSON-ready)

    @property
    def caption(self) -> str:
        return f"a {self.doc_type} on {self.colour} paper"

    @property
    def detailed_caption(self) -> str:
        parts = list(dict.fromkeys(label for label, _ in self.objects))
        listed = ", ".join(f"a {p}" for p in parts[:-1]) + (f" and a {parts[-1]}" if len(parts) > 1 else
                                                            f"a {parts[0]}" if parts else "")
        return f"{_article(self.doc_type)} {self.doc_type} on {self.colour} paper, with {listed}."

    @property
    def more_detailed_caption(self) -> str:
        sentences = [self.detailed_caption]
        if "name" in self.fields:
            sentences.append(f"It names {self.fields['name']} and is dated {self.fields['date']}.")
        if "total" in self.fields:
            sentences.append(f"The total is {self.fields['total']}.")
        sentences.append(f"Its number is {self.fields['number']}.")
        return " ".join(sentences)


def _article(word: str) -> str:
    return "An" if word[0] in "aeiou" else "A"


# The text-reading families each layout can answer, in FAMILIES order.
_TEXT_FAMILIES = {
    "invoice": ("total", "date", "name", "number"),
    "receipt": ("total", "date", "name", "number"),
    "form": ("date", "name", "number"),
    "table": ("date", "name", "number"),
}

# Only invoices and receipts carry a total, so it is drawn more often there to keep the
# text-reading families roughly balanced over a split.
_TEXT_FAMILY_WEIGHTS = {"total": 3}

# --- questions ----------------------------------------------------------------------------------


def _accepted_answers(family: str, drawn: str) -> tuple[str, ...]:
    """The drawn string first, plus one lenient variant where a reader may reasonably drop a prefix."""
    if family == "total":
        return drawn, drawn.lstrip("$")
    if family == "number":
        return drawn, drawn.split("-", 1)[1]
    return (drawn,)


def _pick_text_families(available: tuple[str, ...], count: int, rng: random.Random) -> list[str]:
    """Weighted draw without replacement, returned in FAMILIES order."""
    pool, chosen = list(available), []
    for _ in range(count):
        family = rng.choices(pool, weights=[_TEXT_FAMILY_WEIGHTS.get(name, 1) for name in pool])[0]
        pool.remove(family)
        chosen.append(family)
    return sorted(chosen, key=FAMILIES.index)


def _questions_for(doc_type: str, colour: str, fields: dict[str, str], rng: random.Random):
    questions = [
        ("page_colour", rng.choice(_COLOUR_QUESTIONS), (colour,)),
        ("document_type", rng.choice(_TYPE_QUESTIONS), (doc_type,)),
    ]
    for family in _pick_text_families(_TEXT_FAMILIES[doc_type], rng.randint(1, 2), rng):
        question = rng.choice(_TEXT_QUESTIONS[(doc_type, family)])
        questions.append((family, question, _accepted_answers(family, fields[family])))
    return tuple(questions)


# --- documents and splits -----------------------------------------------------------------------


def _check_split(split: str, n_docs: int):
    if split not in _SPLIT_NUMBERS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_NUMBERS)}")
    if not 0 <= n_docs < _DOCS_PER_SPLIT:
        raise ValueError(f"n_docs must be in [0, {_DOCS_PER_SPLIT}), got {n_docs}")


def _tint(rng: random.Random, colour: str) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-_TINT_JITTER, _TINT_JITTER))) for c in COLOURS[colour])


def _make_document(split: str, index: int, seed: int, image_size: tuple[int, int]) -> SyntheticDocument:
    # A private stream per document: different splits never share pages, and document i is the
    # same whatever n_docs was asked for. String seeds are hashed with SHA-512, not hash().
    rng = random.Random(f"{seed}:{split}:{index}")
    doc_type = rng.choice(DOCUMENT_TYPES)
    colour = rng.choice(tuple(COLOURS))
    page = Page(tuple(image_size), _tint(rng, colour))
    fields = LAYOUTS[doc_type](page, rng)
    return SyntheticDocument(
        doc_id=_SPLIT_NUMBERS[split] * _DOCS_PER_SPLIT + index,
        doc_type=doc_type,
        colour=colour,
        image=page.image,
        fields=fields,
        drawn_text=tuple(page.drawn_text),
        questions=_questions_for(doc_type, colour, fields, rng),
        objects=tuple(page.objects),
        descriptions=tuple(page.descriptions),
        lines=tuple(page.lines),
        extracted=dict(page.extracted),
    )


def generate_documents(
    split: str, n_docs: int, seed: int = 0, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
) -> list[SyntheticDocument]:
    """Render ``n_docs`` documents of ``split`` with their ground truth (see :class:`SyntheticDocument`)."""
    _check_split(split, n_docs)
    return [_make_document(split, index, seed, image_size) for index in range(n_docs)]


def _records_of(document: SyntheticDocument, image: Any) -> list[dict]:
    return [
        {
            "questionId": document.doc_id * _QUESTIONS_PER_DOC + number,
            "question": question,
            "question_types": [family],
            "image": image,
            "docId": document.doc_id,
            "answers": list(answers),
        }
        for number, (family, question, answers) in enumerate(document.questions)
    ]


def generate_split(
    split: str, n_docs: int, seed: int = 0, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
) -> list[dict]:
    """DocVQA-style records for ``n_docs`` documents; the questions of one page share its image object."""
    _check_split(split, n_docs)
    records: list[dict] = []
    for index in range(n_docs):
        document = _make_document(split, index, seed, image_size)
        records.extend(_records_of(document, document.image))
    return records


# --- parquet dataset on disk --------------------------------------------------------------------

_MARKER_NAME = "READY"
_MARKER_GENERATOR = "florence-tune synthetic documents"


def _marker_text(sizes: dict[str, int], seed: int) -> str:
    content = {
        "generator": _MARKER_GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "sizes": sizes,
        "image_size": list(DEFAULT_IMAGE_SIZE),
    }
    return json.dumps(content, sort_keys=True, indent=2) + "\n"


def _read_marker(root: Path) -> str | None:
    try:
        return (root / _MARKER_NAME).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _built_by_us(root: Path) -> bool:
    try:
        return json.loads(_read_marker(root) or "").get("generator") == _MARKER_GENERATOR
    except (ValueError, AttributeError):
        return False


def _refuse_foreign_folder(root: Path):
    # Replacing root deletes it; only do that to an empty folder or to one this function built.
    if not root.exists():
        return
    if not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder")
    if any(root.iterdir()) and not _built_by_us(root):
        raise FileExistsError(f"{root} is not empty and was not written by write_dataset; not replacing it")


def _png_bytes(image: Image.Image) -> dict[str, Any]:
    # Encoding once per page (rather than once per question) keeps the build a few times faster.
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _write_splits(folder: Path, sizes: dict[str, int], seed: int):
    (folder / "data").mkdir(parents=True)
    (folder / DOCUMENTS_FOLDER).mkdir()
    for split, n_docs in sizes.items():
        records: list[dict] = []
        pages: list[dict] = []
        for index in range(n_docs):
            document = _make_document(split, index, seed, DEFAULT_IMAGE_SIZE)
            image = _png_bytes(document.image)
            records.extend(_records_of(document, image))
            pages.append(_document_record(document, image))
        dataset = datasets.Dataset.from_list(records, features=FEATURES)
        dataset.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
        documents = datasets.Dataset.from_list(pages, features=DOCUMENT_FEATURES)
        documents.to_parquet(str(documents_file(folder, split)))


def documents_file(root: Path, split: str) -> Path:
    """The one-row-per-page file of a split (objects, caption, text), beside the question files."""
    return Path(root) / DOCUMENTS_FOLDER / f"{split}.parquet"


def _document_record(document: SyntheticDocument, image: Any) -> dict:
    return {
        "docId": document.doc_id,
        "image": image,
        "width": document.image.size[0],
        "height": document.image.size[1],
        "labels": [label for label, _ in document.objects],
        "boxes": [list(box) for _, box in document.objects],
        "caption": document.caption,
        "text": " ".join(document.drawn_text),
        "descriptions": list(document.descriptions),
        "polygons": [[tasks.quad_of(box)] for _, box in document.objects],
        "texts": [text for text, _ in document.lines],
        "quad_boxes": [tasks.quad_of(box) for _, box in document.lines],
        "detailed_caption": document.detailed_caption,
        "more_detailed_caption": document.more_detailed_caption,
        "fields": json.dumps(document.extracted, ensure_ascii=False),
    }


def _move_into_place(staging: Path, root: Path, marker: str):
    if _read_marker(root) == marker:
        return  # a concurrent build of the same dataset finished first; keep it
    if root.exists():
        retired = root.with_name(f".{root.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(root, retired)
        os.rename(staging, root)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, root)


def default_root() -> Path:
    """Where the built-in set is materialised (``write_dataset``'s marker says which build it holds)."""
    return cache_root() / "synthetic-v1"


def write_dataset(root: str | os.PathLike, sizes: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write the synthetic splits to ``root/data/{split}-00000-of-00001.parquet`` and return ``root``.

    ``sizes`` maps split name to number of documents (default: train 600, validation 60, test 60).
    A ``READY`` marker recording version, sizes and seed is written last; if it already matches, the
    call returns at once. The build happens in a sibling folder that is renamed into place, so
    ``root`` is either absent, the previous complete build, or the new complete build.
    """
    root = Path(root)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    for split, n_docs in sizes.items():
        _check_split(split, n_docs)
    marker = _marker_text(sizes, seed)
    if _read_marker(root) == marker:
        return root
    _refuse_foreign_folder(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.with_name(f".{root.name}.building-{uuid.uuid4().hex[:8]}")
    try:
        _write_splits(staging, sizes, seed)
        (staging / _MARKER_NAME).write_text(marker)
        _move_into_place(staging, root, marker)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root

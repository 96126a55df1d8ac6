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
import math
import os
import random
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import datasets
from PIL import Image, ImageDraw, ImageFont

# Bump whenever rendering, questions or stored columns change: the READY marker embeds it, so cached
# datasets built by an older generator are rebuilt instead of silently reused.
# 2: per-page regions (header, table, total, fields, signature) with pixel boxes, a caption and the
#    drawn text, stored in documents/ for the <OD>, <CAPTION> and <OCR> tasks; pages and questions unchanged.
GENERATOR_VERSION = "2"

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

_INK = (28, 28, 36)
_RULE = (55, 55, 65)

# Layouts are written for this canvas and scaled to the requested image size.
_DESIGN_WIDTH, _DESIGN_HEIGHT = 384, 512
DEFAULT_IMAGE_SIZE: tuple[int, int] = (_DESIGN_WIDTH, _DESIGN_HEIGHT)

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
    }
)
OBJECT_LABELS: tuple[str, ...] = ("header", "table", "total", "field", "signature")

# --- invented vocabulary ------------------------------------------------------------------------

_FIRST_NAMES = (
    "Alvie",
    "Brannoc",
    "Corisande",
    "Dellan",
    "Emmeline",
    "Fenwick",
    "Galia",
    "Hollis",
    "Isaura",
    "Jorund",
    "Kestra",
    "Lowen",
    "Marisol",
    "Nerys",
    "Orrin",
    "Perrin",
    "Quilla",
    "Rowenna",
    "Saoirse",
    "Tamsin",
    "Ulric",
    "Veda",
    "Wrenna",
    "Yestin",
    "Zarek",
)
_LAST_NAMES = (
    "Ambleworth",
    "Brackenridge",
    "Colvane",
    "Dunstray",
    "Ellerby",
    "Farrowdale",
    "Greyholt",
    "Hesketh",
    "Ivelle",
    "Jessamy",
    "Kettleby",
    "Lorimer",
    "Marchbank",
    "Northey",
    "Oakhurst",
    "Pellow",
    "Quarrington",
    "Ravensdale",
    "Selwick",
    "Tremayne",
    "Underhay",
    "Vantreight",
)
_COMPANY_WORDS = (
    "Amberlight",
    "Bluefen",
    "Copperleaf",
    "Dovecote",
    "Emberline",
    "Foxmoor",
    "Glasswing",
    "Hazelmere",
    "Ironvale",
    "Juniper",
    "Kestrel",
    "Lanternfield",
    "Mossgate",
    "Nimbleway",
    "Oriel",
    "Pinecrest",
    "Quillstone",
    "Rookwood",
    "Saltmarsh",
    "Thistledown",
    "Wickham",
)
_COMPANY_KINDS = (
    "Trading",
    "Supply",
    "Works",
    "Goods",
    "Market",
    "Studio",
    "Labs",
    "Hardware",
    "Bakery",
    "Outfitters",
    "Provisions",
    "Printing",
)
_STREETS = (
    "Harrow Lane",
    "Quillon Street",
    "Mossbank Road",
    "Tiller Avenue",
    "Brackwater Way",
    "Ferrow Court",
    "Lindle Row",
    "Copse Hill",
    "Marram Walk",
)
_CITIES = (
    "Eastmere",
    "Dunhollow",
    "Brightwell",
    "Ostridge",
    "Wrenford",
    "Calderby",
    "Fallowmouth",
    "Hexley",
    "Pennock",
)
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_INVOICE_ITEMS = (
    "Paper reams",
    "Toner cartridge",
    "Desk lamp",
    "Cable set",
    "Consulting hours",
    "Delivery",
    "Shelf brackets",
    "Label rolls",
    "Storage boxes",
    "Repair service",
    "Site visit",
    "Software seat",
)
_RECEIPT_ITEMS = (
    "Coffee",
    "Bagel",
    "Milk 1L",
    "Apples",
    "Bread",
    "Batteries",
    "Notebook",
    "Pens",
    "Soap",
    "Tea box",
    "Rice 2kg",
    "Honey",
    "Lemons",
    "Matches",
)
_FORM_TITLES = ("Registration Form", "Application Form", "Membership Form", "Service Request Form")
_FORM_OPTIONS = ("New", "Renewal", "Transfer", "Update", "Cancel")
# (title, header row, row labels) for the table layout.
_TABLE_KINDS = (
    (
        "Quarterly Sales by Region",
        ("Region", "Q1", "Q2", "Q3", "Q4"),
        ("North", "South", "East", "West", "Central", "Coast", "Uplands", "Islands", "Metro"),
    ),
    (
        "Stock Count Summary",
        ("Item", "Jan", "Feb", "Mar"),
        ("Bolts", "Hinges", "Brackets", "Washers", "Clamps", "Rivets", "Springs", "Gaskets", "Pins"),
    ),
    (
        "Weekly Visitor Log",
        ("Site", "Mon", "Tue", "Wed", "Thu"),
        ("Library", "Museum", "Gallery", "Garden", "Archive", "Harbour", "Tower", "Market", "Mill"),
    ),
)

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

    @property
    def caption(self) -> str:
        return f"a {self.doc_type} on {self.colour} paper"


# --- drawing surface ----------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _font(pixel_size: int) -> ImageFont.FreeTypeFont:
    # Loading the bundled font parses it from scratch; caching keeps a page within a few ms.
    return ImageFont.load_default(size=pixel_size)


class _Page:
    """A canvas addressed in design units (384x512) that records every string drawn on it."""

    def __init__(self, image_size: tuple[int, int], background: tuple[int, int, int]):
        self.image = Image.new("RGB", image_size, background)
        self._draw = ImageDraw.Draw(self.image)
        self._scale_x = image_size[0] / _DESIGN_WIDTH
        self._scale_y = image_size[1] / _DESIGN_HEIGHT
        # One font scale for both axes keeps glyphs undistorted; the smaller one keeps text inside.
        self._font_scale = min(self._scale_x, self._scale_y)
        self.drawn_text: list[str] = []
        self.objects: list[tuple[str, tuple[int, int, int, int]]] = []
        self._open_regions: list[list[float]] = []

    @contextmanager
    def region(self, label: str):
        """Record the pixel box around everything drawn inside the block as one ``label`` object.

        Recording draws nothing and draws no random numbers, so pages are the same with or without it.
        """
        bounds = [math.inf, math.inf, -math.inf, -math.inf]
        self._open_regions.append(bounds)
        try:
            yield
        finally:
            self._open_regions.pop()
        if bounds[0] < bounds[2] and bounds[1] < bounds[3]:
            width, height = self.image.size
            x1, y1 = max(0, math.floor(bounds[0])), max(0, math.floor(bounds[1]))
            x2, y2 = min(width, math.ceil(bounds[2])), min(height, math.ceil(bounds[3]))
            self.objects.append((label, (x1, y1, x2, y2)))

    def _cover(self, x0: float, y0: float, x1: float, y1: float):
        for bounds in self._open_regions:
            bounds[:] = [min(bounds[0], x0), min(bounds[1], y0), max(bounds[2], x1), max(bounds[3], y1)]

    def _point(self, x: float, y: float) -> tuple[int, int]:
        return round(x * self._scale_x), round(y * self._scale_y)

    def _font_for(self, size: float) -> ImageFont.FreeTypeFont:
        return _font(max(8, round(size * self._font_scale)))

    def text_width(self, text: str, size: float) -> float:
        return self._font_for(size).getlength(text) / self._font_scale

    def fitted_size(self, text: str, size: int, max_width: float, min_size: int = 12) -> int:
        """Largest font size <= ``size`` at which ``text`` fits in ``max_width``."""
        while size > min_size and self.text_width(text, size) > max_width:
            size -= 1
        return size

    def text(self, x: float, y: float, text: str, size: float = 14, anchor: str = "la", bold: bool = False):
        font, (px, py) = self._font_for(size), self._point(x, y)
        self._draw.text((px, py), text, fill=_INK, font=font, anchor=anchor)
        left, top, right, bottom = self._draw.textbbox((px, py), text, font=font, anchor=anchor)
        self._cover(left, top, right + (1 if bold else 0), bottom)
        if bold:
            # Pillow's bundled font has no bold face; a second pass one pixel to the right reads as
            # bold and stays crisper at 14 px than a stroke does.
            self._draw.text((px + 1, py), text, fill=_INK, font=font, anchor=anchor)
        self.drawn_text.append(text)

    def labelled(self, x: float, y: float, label: str, value: str, size: float = 14, align: str = "left"):
        """Draw ``label`` and ``value`` as separate strings so the value is an exact drawn answer."""
        gap = 6
        if align == "left":
            self.text(x, y, label, size)
            self.text(x + self.text_width(label, size) + gap, y, value, size)
        else:
            self.text(x, y, value, size, anchor="ra")
            self.text(x - self.text_width(value, size) - gap, y, label, size, anchor="ra")

    def line(self, x0: float, y0: float, x1: float, y1: float, width: int = 1):
        (px0, py0), (px1, py1) = self._point(x0, y0), self._point(x1, y1)
        self._draw.line([(px0, py0), (px1, py1)], fill=_RULE, width=width)
        half = width / 2
        self._cover(min(px0, px1) - half, min(py0, py1) - half, max(px0, px1) + half, max(py0, py1) + half)

    def dashed_line(self, x0: float, x1: float, y: float, dash: float = 6):
        x = x0
        while x < x1:
            self.line(x, y, min(x + dash, x1), y)
            x += 2 * dash

    def box(self, x0: float, y0: float, x1: float, y1: float, width: int = 1):
        # Outline only: filling boxes would cover the tint that the page_colour family relies on.
        (px0, py0), (px1, py1) = self._point(x0, y0), self._point(x1, y1)
        self._draw.rectangle([(px0, py0), (px1, py1)], outline=_RULE, width=width)
        self._cover(px0, py0, px1 + 1, py1 + 1)  # the outline includes its last pixel row and column


# --- invented values ----------------------------------------------------------------------------


def _person_name(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"


def _company_name(rng: random.Random) -> str:
    return f"{rng.choice(_COMPANY_WORDS)} {rng.choice(_COMPANY_KINDS)}"


def _street_line(rng: random.Random) -> str:
    return f"{rng.randint(1, 240)} {rng.choice(_STREETS)}"


def _date_text(rng: random.Random) -> str:
    # Day <= 28 keeps every date valid without calendar arithmetic.
    year, month, day = rng.randint(2015, 2024), rng.randint(1, 12), rng.randint(1, 28)
    if rng.random() < 0.5:
        return f"{month:02d}/{day:02d}/{year}"
    return f"{_MONTHS[month - 1]} {day}, {year}"


def _money(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


def _document_number(rng: random.Random, prefix: str) -> str:
    return f"{prefix}-{rng.randint(10000, 99999)}"


def _line_items(rng: random.Random, names: tuple[str, ...], count: int, max_unit_cents: int):
    """``count`` distinct (name, quantity, unit price in cents) rows."""
    return [(name, rng.randint(1, 9), rng.randint(99, max_unit_cents)) for name in rng.sample(names, count)]


# --- layouts: each draws one document type and returns {family: drawn answer} ----------------------


def _draw_invoice(page: _Page, rng: random.Random) -> dict[str, str]:
    margin = 24 + rng.randint(-4, 4)
    right = _DESIGN_WIDTH - margin
    seller, customer = _company_name(rng), _person_name(rng)
    number, date = _document_number(rng, "INV"), _date_text(rng)
    items = _line_items(rng, _INVOICE_ITEMS, count=rng.randint(3, 6), max_unit_cents=40_000)
    total = _money(sum(quantity * unit for _, quantity, unit in items))

    # Header block: seller on the left, the word INVOICE on the right, a heavy rule under both.
    with page.region("header"):
        page.text(right, 20, "INVOICE", 20, anchor="ra", bold=True)
        seller_room = right - margin - page.text_width("INVOICE", 20) - 16
        page.text(margin, 20, seller, page.fitted_size(seller, 18, seller_room), bold=True)
        page.text(margin, 46, f"{_street_line(rng)}, {rng.choice(_CITIES)}", 14)
        page.line(margin, 72, right, 72, width=2)

    # Customer block on the left, invoice reference on the right.
    page.text(margin, 86, "Bill to:", 14)
    reference_width = page.text_width("Date:", 14) + 6 + page.text_width(date, 14)
    page.text(margin, 106, customer, page.fitted_size(customer, 16, right - margin - reference_width - 12))
    page.text(margin, 128, _street_line(rng), 14)
    page.labelled(right, 86, "Invoice No:", number, align="right")
    page.labelled(right, 106, "Date:", date, align="right")

    # Line items and the total.
    y = 166
    quantity_right = right - 110
    with page.region("table"):
        page.text(margin, y, "Description", 14, bold=True)
        page.text(quantity_right, y, "Qty", 14, anchor="ra", bold=True)
        page.text(right, y, "Amount", 14, anchor="ra", bold=True)
        page.line(margin, y + 20, right, y + 20)
        y += 28
        for name, quantity, unit in items:
            page.text(margin, y, name, 14)
            page.text(quantity_right, y, str(quantity), 14, anchor="ra")
            page.text(right, y, _money(quantity * unit), 14, anchor="ra")
            y += 22
        page.line(margin, y + 2, right, y + 2)
    with page.region("total"):
        page.labelled(right, y + 12, "Total due:", total, size=16, align="right")
    page.text(margin, 474, "Payment is due within 30 days.", 14)
    return {"total": total, "date": date, "name": customer, "number": number}


def _draw_receipt(page: _Page, rng: random.Random) -> dict[str, str]:
    # A narrow centred strip, like till paper, is what tells a receipt apart at a glance.
    width = rng.randint(220, 250)
    left = (_DESIGN_WIDTH - width) / 2
    right = left + width
    inner_left, inner_right, centre = left + 12, right - 12, _DESIGN_WIDTH / 2
    store, number, date = _company_name(rng), _document_number(rng, "R"), _date_text(rng)
    items = [(name, unit) for name, _, unit in _line_items(rng, _RECEIPT_ITEMS, rng.randint(3, 6), 2_500)]
    subtotal = sum(unit for _, unit in items)
    tax = round(subtotal * 0.08)
    total = _money(subtotal + tax)

    top = 16
    y = top + 14
    with page.region("header"):
        page.text(centre, y, store, page.fitted_size(store, 17, inner_right - inner_left), anchor="ma", bold=True)
        page.text(centre, y + 24, _street_line(rng), 14, anchor="ma")
        page.text(centre, y + 42, rng.choice(_CITIES), 14, anchor="ma")
    y += 70
    page.labelled(inner_left, y, "Receipt No:", number)
    page.labelled(inner_left, y + 20, "Date:", date)
    y += 46
    page.dashed_line(inner_left, inner_right, y)
    y += 10
    with page.region("table"):
        for name, unit in items:
            page.text(inner_left, y, name, 14)
            page.text(inner_right, y, _money(unit), 14, anchor="ra")
            y += 20
    page.dashed_line(inner_left, inner_right, y + 2)
    y += 12
    for label, amount in (("Subtotal", _money(subtotal)), ("Tax 8%", _money(tax))):
        page.text(inner_left, y, label, 14)
        page.text(inner_right, y, amount, 14, anchor="ra")
        y += 20
    with page.region("total"):
        page.text(inner_left, y + 2, "TOTAL", 16, bold=True)
        page.text(inner_right, y + 2, total, 16, anchor="ra", bold=True)
    y += 32
    page.dashed_line(inner_left, inner_right, y)
    page.text(centre, y + 12, "Thank you!", 14, anchor="ma")
    page.box(left, top, right, y + 40)
    return {"total": total, "date": date, "name": store, "number": number}


def _draw_checkboxes(page: _Page, rng: random.Random, x: float, y: float):
    options = rng.sample(_FORM_OPTIONS, 3)
    ticked = rng.randrange(len(options))
    for index, option in enumerate(options):
        page.box(x, y + 1, x + 14, y + 15)
        if index == ticked:
            page.line(x + 3, y + 4, x + 11, y + 12)
            page.line(x + 11, y + 4, x + 3, y + 12)
        page.text(x + 20, y, option, 14)
        x += 20 + page.text_width(option, 14) + 18


def _draw_form(page: _Page, rng: random.Random) -> dict[str, str]:
    margin = 26 + rng.randint(-4, 4)
    right = _DESIGN_WIDTH - margin
    name, date, number = _person_name(rng), _date_text(rng), _document_number(rng, "F")
    phone = f"{rng.randint(200, 989)}-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"

    with page.region("header"):
        page.text(_DESIGN_WIDTH / 2, 22, rng.choice(_FORM_TITLES), 20, anchor="ma", bold=True)
        page.labelled(right, 54, "Form No:", number, align="right")
        page.line(margin, 78, right, 78, width=2)

    # Labelled boxes are the form's signature look; the signature box is left empty on purpose.
    label_width = 88
    y = 96
    for label, value in (
        ("Full name", name),
        ("Date", date),
        ("Phone", phone),
        ("City", rng.choice(_CITIES)),
        ("Signature", ""),
    ):
        # The empty signature box is its own object class; the filled boxes are form fields.
        with page.region("signature" if label == "Signature" else "field"):
            page.text(margin, y + 6, f"{label}:", 14)
            page.box(margin + label_width, y, right, y + 28)
            if value:
                page.text(margin + label_width + 6, y + 6, value, 15)
        y += 44
    page.text(margin, y + 4, "Type:", 14)
    _draw_checkboxes(page, rng, margin + label_width, y + 4)
    y += 44
    page.box(margin, y, right, y + 72)
    page.text(margin + 8, y + 8, "For office use only", 14)
    return {"date": date, "name": name, "number": number}


def _draw_grid(page: _Page, rng: random.Random, left: float, right: float, top: float, header, labels):
    row_height, first_column = 26, 110
    other_width = (right - left - first_column) / (len(header) - 1)
    column_edges = [left, left + first_column] + [
        left + first_column + other_width * (i + 1) for i in range(len(header) - 1)
    ]
    rows = [header] + [(label, *(str(rng.randint(10, 999)) for _ in header[1:])) for label in labels]
    bottom = top + row_height * len(rows)
    for row_index in range(len(rows) + 1):
        page.line(left, top + row_index * row_height, right, top + row_index * row_height)
    for x in column_edges:
        page.line(x, top, x, bottom)
    for row_index, row in enumerate(rows):
        y = top + row_index * row_height + 6
        page.text(left + 6, y, row[0], 14, bold=row_index == 0)
        # Numbers are right-aligned in their cells, as in a printed spreadsheet.
        for column, cell in enumerate(row[1:], start=1):
            page.text(column_edges[column + 1] - 6, y, cell, 14, anchor="ra", bold=row_index == 0)
    return bottom


def _draw_table(page: _Page, rng: random.Random) -> dict[str, str]:
    margin = 22 + rng.randint(-4, 4)
    right = _DESIGN_WIDTH - margin
    title, header, row_labels = rng.choice(_TABLE_KINDS)
    name, date, number = _person_name(rng), _date_text(rng), _document_number(rng, "RPT")

    with page.region("header"):
        page.text(margin, 20, title, page.fitted_size(title, 19, right - margin), bold=True)
        page.labelled(margin, 52, "Report No:", number)
        page.labelled(right, 52, "Date:", date, align="right")
        page.labelled(margin, 74, "Prepared by:", name)
    labels = rng.sample(row_labels, rng.randint(5, 9))
    with page.region("table"):
        bottom = _draw_grid(page, rng, margin, right, 106, header, labels)
    page.text(margin, bottom + 12, "All figures are unit counts.", 14)
    return {"date": date, "name": name, "number": number}


_LAYOUTS = {"invoice": _draw_invoice, "receipt": _draw_receipt, "form": _draw_form, "table": _draw_table}
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
    page = _Page(tuple(image_size), _tint(rng, colour))
    fields = _LAYOUTS[doc_type](page, rng)
    return SyntheticDocument(
        doc_id=_SPLIT_NUMBERS[split] * _DOCS_PER_SPLIT + index,
        doc_type=doc_type,
        colour=colour,
        image=page.image,
        fields=fields,
        drawn_text=tuple(page.drawn_text),
        questions=_questions_for(doc_type, colour, fields, rng),
        objects=tuple(page.objects),
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

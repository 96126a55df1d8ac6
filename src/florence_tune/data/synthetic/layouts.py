"""Drawing the synthetic documents: an invented vocabulary, a page canvas and one layout per type.

Used by ``florence_tune.data.synthetic``; each layout draws a document on a ``Page`` and returns the
exact strings it drew for the text-reading question families.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from florence_tune.data.synthetic.vocabulary import (
    CITIES,
    FORM_OPTIONS,
    FORM_TITLES,
    INVOICE_ITEMS,
    RECEIPT_ITEMS,
    TABLE_KINDS,
    company_name,
    date_text,
    document_number,
    line_items,
    money,
    person_name,
    street_line,
)

INK = (28, 28, 36)
RULE = (55, 55, 65)
# Layouts are written for this canvas and scaled to the requested image size.
DESIGN_WIDTH, DESIGN_HEIGHT = 384, 512


# --- drawing surface ----------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _font(pixel_size: int) -> ImageFont.FreeTypeFont:
    # Loading the bundled font parses it from scratch; caching keeps a page within a few ms.
    return ImageFont.load_default(size=pixel_size)


class Page:
    """A canvas addressed in design units (384x512) that records every string drawn on it."""

    def __init__(self, image_size: tuple[int, int], background: tuple[int, int, int]):
        self.image = Image.new("RGB", image_size, background)
        self._draw = ImageDraw.Draw(self.image)
        self._scale_x = image_size[0] / DESIGN_WIDTH
        self._scale_y = image_size[1] / DESIGN_HEIGHT
        # One font scale for both axes keeps glyphs undistorted; the smaller one keeps text inside.
        self._font_scale = min(self._scale_x, self._scale_y)
        self.drawn_text: list[str] = []
        # (text, (x1, y1, x2, y2)) in pixels: every string drawn, with the box Pillow says it covers
        self.lines: list[tuple[str, tuple[int, int, int, int]]] = []
        self.objects: list[tuple[str, tuple[int, int, int, int]]] = []
        self.descriptions: list[str] = []  # one phrase per object, naming it on its page
        # What a key-value extraction reads off the page, as the layout filled it in (JSON-ready values).
        self.extracted: dict[str, object] = {}
        self._open_regions: list[list[float]] = []

    @contextmanager
    def region(self, label: str, description: str | None = None):
        """Record the pixel box around everything drawn inside the block as one ``label`` object, with a
        phrase that names it on its page (``description``, by default "the <label>").

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
            self.descriptions.append(description or f"the {label}")

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
        self._draw.text((px, py), text, fill=INK, font=font, anchor=anchor)
        left, top, right, bottom = self._draw.textbbox((px, py), text, font=font, anchor=anchor)
        self._cover(left, top, right + (1 if bold else 0), bottom)
        width, height = self.image.size
        line = (max(0, left), max(0, top), min(width, right + (1 if bold else 0)), min(height, bottom))
        if text.strip() and line[0] < line[2] and line[1] < line[3]:
            self.lines.append((text, line))
        if bold:
            # Pillow's bundled font has no bold face; a second pass one pixel to the right reads as
            # bold and stays crisper at 14 px than a stroke does.
            self._draw.text((px + 1, py), text, fill=INK, font=font, anchor=anchor)
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
        self._draw.line([(px0, py0), (px1, py1)], fill=RULE, width=width)
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
        self._draw.rectangle([(px0, py0), (px1, py1)], outline=RULE, width=width)
        self._cover(px0, py0, px1 + 1, py1 + 1)  # the outline includes its last pixel row and column


# --- layouts: each draws one document type and returns {family: drawn answer} ----------------------


def _draw_invoice(page: Page, rng: random.Random) -> dict[str, str]:
    margin = 24 + rng.randint(-4, 4)
    right = DESIGN_WIDTH - margin
    seller, customer = company_name(rng), person_name(rng)
    number, date = document_number(rng, "INV"), date_text(rng)
    items = line_items(rng, INVOICE_ITEMS, count=rng.randint(3, 6), max_unit_cents=40_000)
    total = money(sum(quantity * unit for _, quantity, unit in items))
    page.extracted = {"document_type": "invoice", "seller": seller, "invoice_number": number, "date": date,
                      "bill_to": customer,
                      "items": [{"description": name, "quantity": quantity, "amount": money(quantity * unit)}
                                for name, quantity, unit in items],
                      "total_due": total}

    # Header block: seller on the left, the word INVOICE on the right, a heavy rule under both.
    with page.region("header"):
        page.text(right, 20, "INVOICE", 20, anchor="ra", bold=True)
        seller_room = right - margin - page.text_width("INVOICE", 20) - 16
        page.text(margin, 20, seller, page.fitted_size(seller, 18, seller_room), bold=True)
        page.text(margin, 46, f"{street_line(rng)}, {rng.choice(CITIES)}", 14)
        page.line(margin, 72, right, 72, width=2)

    # Customer block on the left, invoice reference on the right.
    page.text(margin, 86, "Bill to:", 14)
    reference_width = page.text_width("Date:", 14) + 6 + page.text_width(date, 14)
    page.text(margin, 106, customer, page.fitted_size(customer, 16, right - margin - reference_width - 12))
    page.text(margin, 128, street_line(rng), 14)
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
            page.text(right, y, money(quantity * unit), 14, anchor="ra")
            y += 22
        page.line(margin, y + 2, right, y + 2)
    with page.region("total"):
        page.labelled(right, y + 12, "Total due:", total, size=16, align="right")
    page.text(margin, 474, "Payment is due within 30 days.", 14)
    return {"total": total, "date": date, "name": customer, "number": number}


def _draw_receipt(page: Page, rng: random.Random) -> dict[str, str]:
    # A narrow centred strip, like till paper, is what tells a receipt apart at a glance.
    width = rng.randint(220, 250)
    left = (DESIGN_WIDTH - width) / 2
    right = left + width
    inner_left, inner_right, centre = left + 12, right - 12, DESIGN_WIDTH / 2
    store, number, date = company_name(rng), document_number(rng, "R"), date_text(rng)
    items = [(name, unit) for name, _, unit in line_items(rng, RECEIPT_ITEMS, rng.randint(3, 6), 2_500)]
    subtotal = sum(unit for _, unit in items)
    tax = round(subtotal * 0.08)
    total = money(subtotal + tax)
    page.extracted = {"document_type": "receipt", "store": store, "receipt_number": number, "date": date,
                      "items": [{"description": name, "amount": money(unit)} for name, unit in items],
                      "subtotal": money(subtotal), "tax": money(tax), "total": total}

    top = 16
    y = top + 14
    with page.region("header"):
        page.text(centre, y, store, page.fitted_size(store, 17, inner_right - inner_left), anchor="ma", bold=True)
        page.text(centre, y + 24, street_line(rng), 14, anchor="ma")
        page.text(centre, y + 42, rng.choice(CITIES), 14, anchor="ma")
    y += 70
    page.labelled(inner_left, y, "Receipt No:", number)
    page.labelled(inner_left, y + 20, "Date:", date)
    y += 46
    page.dashed_line(inner_left, inner_right, y)
    y += 10
    with page.region("table"):
        for name, unit in items:
            page.text(inner_left, y, name, 14)
            page.text(inner_right, y, money(unit), 14, anchor="ra")
            y += 20
    page.dashed_line(inner_left, inner_right, y + 2)
    y += 12
    for label, amount in (("Subtotal", money(subtotal)), ("Tax 8%", money(tax))):
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


def _draw_checkboxes(page: Page, rng: random.Random, x: float, y: float) -> str:
    options = rng.sample(FORM_OPTIONS, 3)
    ticked = rng.randrange(len(options))
    for index, option in enumerate(options):
        page.box(x, y + 1, x + 14, y + 15)
        if index == ticked:
            page.line(x + 3, y + 4, x + 11, y + 12)
            page.line(x + 11, y + 4, x + 3, y + 12)
        page.text(x + 20, y, option, 14)
        x += 20 + page.text_width(option, 14) + 18
    return options[ticked]


def _draw_form(page: Page, rng: random.Random) -> dict[str, str]:
    margin = 26 + rng.randint(-4, 4)
    right = DESIGN_WIDTH - margin
    name, date, number = person_name(rng), date_text(rng), document_number(rng, "F")
    phone = f"{rng.randint(200, 989)}-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"

    title = rng.choice(FORM_TITLES)
    with page.region("header"):
        page.text(DESIGN_WIDTH / 2, 22, title, 20, anchor="ma", bold=True)
        page.labelled(right, 54, "Form No:", number, align="right")
        page.line(margin, 78, right, 78, width=2)

    # Labelled boxes are the form's signature look; the signature box is left empty on purpose.
    label_width = 88
    y = 96
    city = rng.choice(CITIES)
    for label, value in (
        ("Full name", name),
        ("Date", date),
        ("Phone", phone),
        ("City", city),
        ("Signature", ""),
    ):
        # The empty signature box is its own object class; the filled boxes are form fields.
        kind = "signature" if label == "Signature" else "field"
        with page.region(kind, f"the {label.lower()} {kind}" if kind == "field" else "the signature box"):
            page.text(margin, y + 6, f"{label}:", 14)
            page.box(margin + label_width, y, right, y + 28)
            if value:
                page.text(margin + label_width + 6, y + 6, value, 15)
        y += 44
    page.text(margin, y + 4, "Type:", 14)
    ticked = _draw_checkboxes(page, rng, margin + label_width, y + 4)
    page.extracted = {"document_type": "form", "title": title, "form_number": number, "full_name": name,
                      "date": date, "phone": phone, "city": city, "type": ticked}
    y += 44
    page.box(margin, y, right, y + 72)
    page.text(margin + 8, y + 8, "For office use only", 14)
    return {"date": date, "name": name, "number": number}


def _draw_grid(page: Page, rng: random.Random, left: float, right: float, top: float, header, labels):
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
    return bottom, rows


def _draw_table(page: Page, rng: random.Random) -> dict[str, str]:
    margin = 22 + rng.randint(-4, 4)
    right = DESIGN_WIDTH - margin
    title, header, row_labels = rng.choice(TABLE_KINDS)
    name, date, number = person_name(rng), date_text(rng), document_number(rng, "RPT")

    with page.region("header"):
        page.text(margin, 20, title, page.fitted_size(title, 19, right - margin), bold=True)
        page.labelled(margin, 52, "Report No:", number)
        page.labelled(right, 52, "Date:", date, align="right")
        page.labelled(margin, 74, "Prepared by:", name)
    labels = rng.sample(row_labels, rng.randint(5, 9))
    with page.region("table"):
        bottom, rows = _draw_grid(page, rng, margin, right, 106, header, labels)
    page.extracted = {"document_type": "table", "title": title, "report_number": number, "date": date,
                      "prepared_by": name, "columns": list(header), "items": [row[0] for row in rows[1:]]}
    page.text(margin, bottom + 12, "All figures are unit counts.", 14)
    return {"date": date, "name": name, "number": number}


LAYOUTS = {"invoice": _draw_invoice, "receipt": _draw_receipt, "form": _draw_form, "table": _draw_table}

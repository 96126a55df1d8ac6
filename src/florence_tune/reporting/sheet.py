"""A contact sheet: a grid of sample thumbnails with their question and answer written under them.

Written by ``florence-tune data inspect`` so a user can look at what the model will be trained on
(right image with the right question? answers cut? pages tiled sensibly?) before spending GPU hours.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from florence_tune.errors import UsageError

CELL = 300  # thumbnail box, pixels a side
TEXT_LINES = 6
LINE_HEIGHT = 16
PAD = 10
COLUMNS = 4


@dataclass
class Card:
    """What the sheet shows of one sample (a thumbnail, not the full image, to keep memory small)."""

    thumbnail: Image.Image
    question: str
    answer: str
    label: str  # id and original size

    @classmethod
    def of(cls, sample) -> Card:
        thumbnail = sample.image.copy()
        thumbnail.thumbnail((CELL, CELL))
        label = f"{sample.id}  {sample.image.width}x{sample.image.height}"
        return cls(thumbnail, sample.meta.get("question") or sample.prompt, sample.target, label)


def draw(cards: list[Card], title: str, path: str | Path) -> Path:
    """Save the sheet of ``cards`` at ``path``, in the format its suffix names (an empty sheet says there was
    nothing to show)."""
    image_format = format_of(path)
    font = ImageFont.load_default(size=13)
    columns = max(1, min(COLUMNS, len(cards)))
    rows = max(1, -(-len(cards) // columns))
    cell_w, cell_h = CELL + 2 * PAD, CELL + (TEXT_LINES + 1) * LINE_HEIGHT + 2 * PAD
    sheet = Image.new("RGB", (columns * cell_w, 30 + rows * cell_h), "white")
    canvas = ImageDraw.Draw(sheet)
    canvas.text((PAD, 8), title if cards else f"{title}: no usable samples", fill="black", font=font)
    for index, card in enumerate(cards):
        x, y = (index % columns) * cell_w + PAD, 30 + (index // columns) * cell_h + PAD
        sheet.paste(card.thumbnail, (x + (CELL - card.thumbnail.width) // 2, y))
        canvas.rectangle([x - 1, y - 1, x + CELL, y + CELL], outline="#bbbbbb")
        _caption(canvas, font, card, x, y + CELL + 4)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format=image_format)
    return path


def format_of(path: str | Path) -> str:
    """The image format Pillow writes for the file name's suffix (.png, .jpg, .webp...)."""
    suffix = Path(path).suffix.lower()
    found = Image.registered_extensions().get(suffix)
    if found not in Image.SAVE:
        raise UsageError(f"--sheet '{path}': {f'{suffix!r} is' if suffix else 'a name without a suffix is'} not an "
                         "image format Pillow writes; end the name in .png, .jpg or .webp")
    return found


def _caption(canvas: ImageDraw.ImageDraw, font, card: Card, x: int, y: int) -> None:
    width = CELL // 7  # characters per line at this font size
    question = textwrap.wrap("Q: " + " ".join(card.question.split()), width) or ["Q:"]
    answer = textwrap.wrap("A: " + " ".join(card.answer.split()), width) or ["A:"]
    room = TEXT_LINES - 1  # the first line is the label
    question = _cut(question, max(1, room - min(len(answer), room // 2)))
    answer = _cut(answer, room - len(question))
    lines = [(card.label[:width], "#777777")] + [(q, "#222222") for q in question] + [(a, "#1565c0") for a in answer]
    for number, (line, colour) in enumerate(lines):
        canvas.text((x, y + number * LINE_HEIGHT), line, fill=colour, font=font)


def _cut(lines: list[str], room: int) -> list[str]:
    """At most ``room`` lines, the last one marked with an ellipsis when text was left out."""
    if len(lines) <= room:
        return lines
    return lines[: room - 1] + [lines[room - 1][:-1] + "…"] if room > 0 else []

"""Florence-2 tasks: their task tokens, how a box becomes text, and how generated text becomes boxes.

A box is written the way the pretrained checkpoints write it: ``label<loc_x1><loc_y1><loc_x2><loc_y2>``,
each coordinate quantised to one of 1000 bins of the image's width or height. The quantiser follows
the processor's rule (``Florence2PostProcessor.quantize``: floor, then clamp to 0..999), computed exactly,
so a coordinate equal to the image width lands in bin 999 and ``<loc_1000>`` (absent from the
vocabulary) is never written. Generated text is read by ``processor.post_process_generation``, and each
bin becomes its centre in pixels as a float (``dequantize``).

    >>> encode_objects(["table"], [[0, 0, 384, 512]], (384, 512))
    'table<loc_0><loc_0><loc_999><loc_999>'
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

VQA = "<VQA>"
OCR = "<OCR>"
CAPTION = "<CAPTION>"
DETAILED_CAPTION = "<DETAILED_CAPTION>"
MORE_DETAILED_CAPTION = "<MORE_DETAILED_CAPTION>"
OD = "<OD>"
GROUNDING = "<CAPTION_TO_PHRASE_GROUNDING>"
DENSE_REGION_CAPTION = "<DENSE_REGION_CAPTION>"
REGION_PROPOSAL = "<REGION_PROPOSAL>"

# Tasks whose answer is boxes with labels (scored with mAP, decoded with post-processing).
BOX_TASKS = frozenset({OD, GROUNDING, DENSE_REGION_CAPTION, REGION_PROPOSAL})
CAPTION_TASKS = frozenset({CAPTION, DETAILED_CAPTION, MORE_DETAILED_CAPTION})
# Tasks the processor replaces by a fixed sentence: their prompt must be the bare token, nothing else.
BARE_TOKEN_TASKS = frozenset({OCR, CAPTION, DETAILED_CAPTION, MORE_DETAILED_CAPTION, OD,
                              DENSE_REGION_CAPTION, REGION_PROPOSAL})
# Tasks whose generated text carries location tokens that the processor turns into pixel coordinates.
LOCATION_TASKS = BOX_TASKS | frozenset({"<OCR_WITH_REGION>", "<OPEN_VOCABULARY_DETECTION>",
                                        "<REFERRING_EXPRESSION_SEGMENTATION>", "<REGION_TO_SEGMENTATION>"})

BINS = 1000
_GENERATION_MARKERS = ("<s>", "</s>", "<pad>")
# What parse_boxes escapes (a character outside ASCII, and the backslash that starts an escape) and the
# escape itself: a backslash and the code point in six hex digits.
_UNSAFE = re.compile(r"[^\x00-\x7f]|\\")
_ESCAPED = re.compile(r"\\([0-9a-f]{6})")
# A location token as users write it, in the vocabulary's spelling or not (<loc_1000>, <loc_007>, <loc_+4>).
_LOCATION = re.compile(r"<loc_([+-]?\d+)>")


def task_of(meta: dict[str, Any] | None, prompt: str | None = None) -> str:
    """The task of a sample: ``meta["task"]``, else a known task token the prompt is made of (rows that
    spell it there, like maestro's ``{"prefix": "<OD>"}``), else VQA, as DocVQA samples are."""
    if (meta or {}).get("task"):
        return meta["task"]
    if prompt and prompt.startswith("<") and ">" in prompt:
        token = prompt[: prompt.index(">") + 1]
        if token in BARE_TOKEN_TASKS | LOCATION_TASKS:
            return token
    return VQA


def prompt_for(task: str, text: str = "") -> str:
    """Encoder text for a task: the bare token for fixed-prompt tasks, token + text otherwise."""
    if task in BARE_TOKEN_TASKS:
        return task
    return task + text


def quantize(value: float, size: float) -> int:
    """Bin of one coordinate: ``floor(value * 1000 / size)`` clamped to 0..999, the rule of
    ``Florence2PostProcessor.quantize``. Computed on the exact values (a float is a binary fraction), not
    in floating point as the processor does: its ``value / (size / 1000)`` lands one bin off when the
    quotient is at or next to a bin edge (33 px of 2200 gives bin 14, not 15; 6.6 px of 2200 held as
    float32, 6.5999999 exactly, gives bin 3, not 2, in float32 arithmetic)."""
    quotient = math.floor(_exact(value) * BINS / _exact(size))
    return min(max(quotient, 0), BINS - 1)


def _exact(number) -> Fraction:
    """The exact rational value of an int, a float, a NumPy or a 0-d torch number (float32 is exact as float)."""
    return Fraction(number) if isinstance(number, numbers.Rational) else Fraction(float(number))


def box_tokens(box: Sequence[float], image_size: tuple[int, int]) -> str:
    """``<loc_x1><loc_y1><loc_x2><loc_y2>`` for one ``[x1, y1, x2, y2]`` pixel box."""
    width, height = image_size
    bins = [quantize(box[0], width), quantize(box[1], height), quantize(box[2], width), quantize(box[3], height)]
    return "".join(f"<loc_{b}>" for b in bins)


def dequantize(index: int, size: float) -> float:
    """The centre of a bin in pixels: the processor's ``(index + 0.5) * size / 1000``, kept as a float (its
    ``dequantize`` truncates to whole pixels). An index past 999 (a ``<loc_1000>`` spelt out) is bin 999."""
    return (min(max(index, 0), BINS - 1) + 0.5) * size / BINS


def fit_locations(text: str) -> tuple[str, bool]:
    """``text`` with each ``<loc_N>`` made a token of the vocabulary (N clamped to 0..999 and written
    plainly: ``<loc_1000>`` → ``<loc_999>``, ``<loc_007>`` → ``<loc_7>``), and whether that changed it.
    maestro writes ``<loc_1000>`` for a coordinate in the last 0.05 % of a side; not being a token, it
    would be learnt as sub-word pieces."""
    fitted = _LOCATION.sub(lambda match: f"<loc_{min(max(int(match.group(1)), 0), BINS - 1)}>", text)
    return fitted, fitted != text


def encode_objects(labels: Sequence[str], boxes: Sequence[Sequence[float]], image_size: tuple[int, int]) -> str:
    """Target text of an ``<OD>``-style answer: each box after its own label, in the order given."""
    return "".join(clean_label(label) + box_tokens(box, image_size) for label, box in zip(labels, boxes, strict=True))


def clean_label(label: str) -> str:
    """A label as it can appear in a target: no '<' (it would open a token) and no outer spaces."""
    return " ".join(str(label).replace("<", " ").replace(">", " ").split())


def clip_box(box: Sequence[float], image_size: tuple[int, int]) -> list[float] | None:
    """The box cut to the image, or None when nothing of positive area is left."""
    width, height = image_size
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
    y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None
    return [x1, y1, x2, y2]


def strip_markers(text: str) -> str:
    """Generated text without the sequence markers (<s>, </s>, <pad>), location tokens kept."""
    for marker in _GENERATION_MARKERS:
        text = text.replace(marker, "")
    return text.strip()


def parse_boxes(processor, text: str, task: str, image_size: tuple[int, int]) -> dict[str, list]:
    """``{"boxes": [[x1, y1, x2, y2], ...], "labels": [...]}`` from generated text or a target.

    The processor's parser finds the labels and their bins, with two departures that would otherwise
    cost a perfect answer its score. It is asked for a 1000 x 1000 image, where its dequantize gives each
    bin back unchanged (``int(bin + 0.5)``), and ``dequantize`` maps the bins onto the real image: the
    processor's own pixels are truncated to integers, which moves a small box by up to a pixel. And it
    reads the text with every non-ASCII character escaped: its parsers end each label with
    ``phrase.encode("ascii", "ignore")`` (``parse_description_with_bboxes_from_text_and_spans`` and
    ``parse_phrase_grounding_from_text_and_spans`` in transformers' processing_florence2.py), so ``café``
    would come back as ``caf`` and two Japanese labels as the same empty one (transformers 5.24; the
    escape can go once that line does). Labels are stripped once restored, as the processor strips them.
    """
    ascii_text = _UNSAFE.sub(lambda match: f"\\{ord(match.group()):06x}", text)
    parsed = processor.post_process_generation(text=ascii_text, task=task, image_size=(BINS, BINS))[task]
    width, height = image_size
    boxes = [[dequantize(x1, width), dequantize(y1, height), dequantize(x2, width), dequantize(y2, height)]
             for x1, y1, x2, y2 in parsed.get("bboxes", [])]
    labels = parsed.get("labels", parsed.get("bboxes_labels", []))
    labels = [_ESCAPED.sub(lambda match: chr(int(match.group(1), 16)), str(label)).strip() for label in labels]
    return {"boxes": boxes, "labels": labels}

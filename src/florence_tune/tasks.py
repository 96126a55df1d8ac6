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
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

VQA = "<VQA>"
OCR = "<OCR>"
OCR_WITH_REGION = "<OCR_WITH_REGION>"
CAPTION = "<CAPTION>"
DETAILED_CAPTION = "<DETAILED_CAPTION>"
MORE_DETAILED_CAPTION = "<MORE_DETAILED_CAPTION>"
OD = "<OD>"
DENSE_REGION_CAPTION = "<DENSE_REGION_CAPTION>"
REGION_PROPOSAL = "<REGION_PROPOSAL>"
GROUNDING = "<CAPTION_TO_PHRASE_GROUNDING>"
OPEN_VOCABULARY_DETECTION = "<OPEN_VOCABULARY_DETECTION>"
REFERRING_SEGMENTATION = "<REFERRING_EXPRESSION_SEGMENTATION>"
REGION_TO_SEGMENTATION = "<REGION_TO_SEGMENTATION>"
REGION_TO_CATEGORY = "<REGION_TO_CATEGORY>"
REGION_TO_DESCRIPTION = "<REGION_TO_DESCRIPTION>"
REGION_TO_OCR = "<REGION_TO_OCR>"
# Not a Florence-2 token: key-value extraction to a JSON object, learnt from the prompt as any new task is.
EXTRACTION = "<EXTRACTION>"


@dataclass(frozen=True)
class Task:
    """What a task's prompt takes and what its answer is, as the pretrained checkpoints write it.

    ``prompt``: ``none`` (the bare token: the processor replaces it by a fixed sentence), ``text`` (a phrase
    or expression after the token), ``region`` (a box in location tokens after the token) or ``question``.
    ``answer``: ``text``; ``boxes`` (``label<loc_x1><loc_y1><loc_x2><loc_y2>`` per object, the label empty for
    region proposals); ``polygons`` (``<loc_x><loc_y>`` per vertex, polygons of one object joined by
    ``<sep>``); ``quads`` (``text`` and the line's four corners, eight location tokens, clockwise from the
    top left); ``region_text`` (the text, then the prompt's box again: ``car<loc_52><loc_332>...``).
    """

    prompt: str
    answer: str


TASKS: dict[str, Task] = {
    VQA: Task("question", "text"),
    EXTRACTION: Task("none", "text"),
    OCR: Task("none", "text"),
    CAPTION: Task("none", "text"),
    DETAILED_CAPTION: Task("none", "text"),
    MORE_DETAILED_CAPTION: Task("none", "text"),
    OCR_WITH_REGION: Task("none", "quads"),
    OD: Task("none", "boxes"),
    DENSE_REGION_CAPTION: Task("none", "boxes"),
    REGION_PROPOSAL: Task("none", "boxes"),
    GROUNDING: Task("text", "boxes"),
    OPEN_VOCABULARY_DETECTION: Task("text", "boxes"),
    REFERRING_SEGMENTATION: Task("text", "polygons"),
    REGION_TO_SEGMENTATION: Task("region", "polygons"),
    REGION_TO_CATEGORY: Task("region", "region_text"),
    REGION_TO_DESCRIPTION: Task("region", "region_text"),
    REGION_TO_OCR: Task("region", "text"),
}

BOX_TASKS = frozenset(t for t, spec in TASKS.items() if spec.answer == "boxes")
POLYGON_TASKS = frozenset(t for t, spec in TASKS.items() if spec.answer == "polygons")
REGION_TASKS = frozenset(t for t, spec in TASKS.items() if spec.prompt == "region")
CAPTION_TASKS = frozenset({CAPTION, DETAILED_CAPTION, MORE_DETAILED_CAPTION})
# Tasks the processor replaces by a fixed sentence: their prompt must be the bare token, nothing else.
BARE_TOKEN_TASKS = frozenset(t for t, spec in TASKS.items() if spec.prompt == "none" and t != EXTRACTION)
# Tasks whose generated text carries location tokens (plain decoding would drop them as special tokens).
LOCATION_TASKS = frozenset(t for t, spec in TASKS.items() if spec.answer != "text")

# How a question's answer is judged: the metric each benchmark publishes (evaluation/answer_metrics.py), picked
# per sample from its source (a Cauldron configuration, a ``metric`` field of a JSON line); ANLS otherwise.
ANSWER_METRICS = ("anls", "exact_match", "relaxed_accuracy", "vqa_accuracy", "multiple_choice_accuracy")

BINS = 1000
_GENERATION_MARKERS = ("<s>", "</s>", "<pad>")
# What parse_answer escapes (a character outside ASCII, and the backslash that starts an escape) and the
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
        if token in TASKS and token != VQA:
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


def point_tokens(points: Sequence[float], image_size: tuple[int, int]) -> str:
    """``<loc_x><loc_y>`` per vertex of a flat ``[x1, y1, x2, y2, ...]`` polygon (the processor quantises
    points with the same rule as boxes)."""
    width, height = image_size
    return "".join(f"<loc_{quantize(x, width)}><loc_{quantize(y, height)}>" for x, y in zip(points[0::2], points[1::2],
                                                                                           strict=True))


def encode_polygons(labels: Sequence[str], objects: Sequence[Sequence[Sequence[float]]],
                    image_size: tuple[int, int]) -> str:
    """Target text of a segmentation answer: per object its label (empty for referring expressions and
    regions, whose prompt names the object) and its polygons joined by ``<sep>``. Objects without a label
    are joined by ``<sep>`` too: run together, the parser would read their points as one polygon."""
    parts = []
    for label, polygons in zip(labels, objects, strict=True):
        label = clean_label(label)
        joined = "<sep>".join(point_tokens(polygon, image_size) for polygon in polygons)
        parts.append(("<sep>" if parts and not label else "") + label + joined)
    return "".join(parts)


def quad_of(box: Sequence[float]) -> list[float]:
    """The four corners of an ``[x1, y1, x2, y2]`` box, clockwise from the top left, as a text line's quad."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def encode_lines(texts: Sequence[str], quads: Sequence[Sequence[float]], image_size: tuple[int, int]) -> str:
    """Target text of ``<OCR_WITH_REGION>``: each line's text, then its quad's eight location tokens."""
    return "".join(clean_label(text) + point_tokens(quad, image_size) for text, quad in zip(texts, quads, strict=True))


def region_text(task: str, text: str, box: Sequence[float], image_size: tuple[int, int]) -> str:
    """Target of a region task answered in words: the text, followed by the prompt's box again where the
    checkpoints write it so (``<REGION_TO_CATEGORY>``, ``<REGION_TO_DESCRIPTION>``)."""
    text = clean_label(text)
    return text + box_tokens(box, image_size) if TASKS[task].answer == "region_text" else text


def answer_text(task: str, text: str) -> str:
    """The words of an answer: location tokens dropped from a region task's echoed box, markers stripped."""
    if TASKS.get(task, TASKS[VQA]).answer == "region_text":
        return " ".join(_LOCATION.sub(" ", strip_markers(text)).split())
    return text


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


def parse_answer(processor, text: str, task: str, image_size: tuple[int, int]) -> dict[str, list] | str:
    """What an answer says, in pixels, from generated text or a target, by the task's answer kind:
    ``{"boxes", "labels"}``, ``{"polygons", "labels"}`` (per object a list of flat polygons) or
    ``{"quads", "labels"}`` (labels: each line's text); for text answers, the words (``answer_text``).

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
    kind = TASKS.get(task, TASKS[VQA]).answer
    if kind in ("text", "region_text"):
        return answer_text(task, text)
    ascii_text = _UNSAFE.sub(lambda match: f"\\{ord(match.group()):06x}", text)
    parsed = processor.post_process_generation(text=ascii_text, task=task, image_size=(BINS, BINS))[task]
    width, height = image_size

    def pixels(bins: Sequence[float]) -> list[float]:  # x, y, x, y, ... bins → bin centres on the real image
        return [dequantize(int(b), width if i % 2 == 0 else height) for i, b in enumerate(bins)]

    if kind == "polygons":
        found = {"polygons": [[pixels(polygon) for polygon in polygons] for polygons in parsed.get("polygons", [])]}
    elif kind == "quads":
        found = {"quads": [pixels(quad) for quad in parsed.get("quad_boxes", [])]}
    else:
        found = {"boxes": [pixels(box) for box in parsed.get("bboxes", [])]}
    labels = parsed.get("labels", parsed.get("bboxes_labels", []))
    found["labels"] = [_ESCAPED.sub(lambda match: chr(int(match.group(1), 16)), str(label)).strip() for label in labels]
    return found

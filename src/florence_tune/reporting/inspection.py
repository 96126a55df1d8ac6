"""``florence-tune data inspect SPEC``: look at a dataset before training on it.

Reads the split exactly as training would (same adapters, same safe image decoding) and reports
how many samples are usable, the bad ones by reason, what was altered (tiled pages, answers longer
than ``--max-target-tokens``), question and answer lengths in tokens, the image sizes, and writes a
contact sheet of a few samples with their question and answer under them.

    florence-tune data inspect cauldron:chartqa --split validation --sheet chartqa.png

Memory stays flat however large the source: lengths and sizes are kept as histograms of small
integers, and only the sheet's thumbnails are held.
"""

from __future__ import annotations

import collections
from typing import Any

from florence_tune.data.sample import ALTERED, Sample
from florence_tune.reporting.sheet import Card

TOKENIZE_BATCH = 256


class Histogram:
    """Counts of integer values, with percentiles; memory bounded by the number of distinct values."""

    def __init__(self):
        self.counts: collections.Counter = collections.Counter()

    def add(self, values) -> None:
        self.counts.update(values)

    def percentiles(self, points=(50, 90, 99)) -> dict[str, int] | None:
        total = sum(self.counts.values())
        if not total:
            return None
        ordered = sorted(self.counts.items())
        result, running, index = {}, 0, 0
        for point in points:
            wanted = point / 100 * total
            while running + ordered[index][1] < wanted:
                running += ordered[index][1]
                index += 1
            result[f"p{point}"] = ordered[index][0]
        return {"min": ordered[0][0], **result, "max": ordered[-1][0]}


class Inspection:
    """Running statistics over the items of one split."""

    def __init__(self, tokenizer, max_target_tokens: int, sheet_samples: int):
        self.tokenizer, self.max_target_tokens, self.sheet_samples = tokenizer, max_target_tokens, sheet_samples
        self.seen = 0
        self.skipped: collections.Counter = collections.Counter()
        self.altered: collections.Counter = collections.Counter()
        self.question_tokens, self.answer_tokens = Histogram(), Histogram()
        self.widths, self.heights = Histogram(), Histogram()
        self.cards: list[Card] = []
        self._pending: list[tuple[str, str]] = []

    def add(self, item: Any) -> None:
        self.seen += 1
        if not isinstance(item, Sample):
            self.skipped[item.reason] += 1
            return
        self.altered.update(item.meta.get(ALTERED, ()))
        self.widths.add([item.image.width])
        self.heights.add([item.image.height])
        if len(self.cards) < self.sheet_samples:
            self.cards.append(Card.of(item))
        self._pending.append((item.prompt, item.target))  # text only from here: the image can go
        if len(self._pending) >= TOKENIZE_BATCH:
            self.flush()

    def flush(self) -> None:
        """Tokenize the waiting texts in one batch, as the collator would (specials included)."""
        if not self._pending:
            return
        questions = self.tokenizer([prompt for prompt, _ in self._pending])["input_ids"]
        answers = self.tokenizer([target for _, target in self._pending])["input_ids"]
        self.question_tokens.add(len(ids) for ids in questions)
        lengths = [len(ids) for ids in answers]
        self.answer_tokens.add(lengths)
        self.altered["truncated_answers"] += sum(n > self.max_target_tokens for n in lengths)
        self._pending = []

    def summary(self) -> dict[str, Any]:
        self.flush()
        usable = self.seen - sum(self.skipped.values())
        return {"samples": self.seen, "usable": usable, "skipped": dict(sorted(self.skipped.items())),
                "altered": {k: v for k, v in sorted(self.altered.items()) if v},
                "question_tokens": self.question_tokens.percentiles(),
                "answer_tokens": self.answer_tokens.percentiles(),
                "image_width": self.widths.percentiles((5, 50, 95)),
                "image_height": self.heights.percentiles((5, 50, 95))}


def describe(summary: dict[str, Any]) -> list[str]:
    """The report as lines for a person (the command prints the JSON after them)."""
    lines = [f"dataset {summary['dataset']}  split {summary['split']}  ({summary['kind']})",
             f"samples {summary['samples']}: {summary['usable']} usable, "
             f"{sum(summary['skipped'].values())} skipped, {sum(summary['altered'].values())} altered"]
    for name in ("question_tokens", "answer_tokens", "image_width", "image_height"):
        values = summary[name]
        shown = "  ".join(f"{k} {v}" for k, v in values.items()) if values else "n/a"
        lines.append(f"{name.replace('_', ' '):<16} {shown}")
    for title, counts in (("skipped by reason", summary["skipped"]), ("altered", summary["altered"])):
        lines.append(f"{title}: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    if summary.get("note"):
        lines.append(summary["note"])
    lines.append(f"contact sheet: {summary['contact_sheet']}")
    return lines

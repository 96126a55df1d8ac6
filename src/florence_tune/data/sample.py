"""The values every dataset adapter produces and the collator consumes: ``Sample`` and ``Skipped``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

# meta key listing what was changed to make a sample usable (e.g. "tiled_images"); the collator counts them
ALTERED = "altered"


@dataclass
class Sample:
    """One training or evaluation example, independent of where it came from.

    ``prompt`` is the full encoder text (task token + question), ``target`` the text the
    decoder learns to produce, ``references`` every accepted answer (for ANLS), and ``meta``
    free-form grouping information (question family, source configuration, page id...).
    """

    id: str
    image: Image.Image
    prompt: str
    target: str
    references: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Skipped:
    """Placeholder for a sample that could not be used; the collator drops it and counts ``reason``."""

    reason: str

"""The dataset spec string accepted wherever a dataset is named (train, evaluate, data inspect).

    synthetic | docvqa | cauldron | docmatix      built-in names (data/sources.py)
    cauldron:chartqa,ai2d                         chosen configurations of a multi-configuration source
    owner/name[:config,...]                       any hub dataset in one of the known schemas
    ./my.jsonl | ./folder | ./copy:config         local data (data/local.py)
    docvqa,cauldron:chartqa                       a mixture, interleaved
    docvqa=0.7,cauldron=0.3                       a weighted mixture (all parts weighted, or none)

After ``source:config``, a following bare word that is one of that source's configurations joins
its list; any other word starts a new dataset (so ``cauldron:chartqa,docvqa`` means the Cauldron's
own docvqa configuration, and ``docvqa,cauldron:chartqa`` mixes DocVQA in).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from florence_tune.errors import UsageError

DATASET_FORMS = (
    "'synthetic', 'docvqa', 'cauldron[:config,...]', 'docmatix', a hub id, a JSONL file, a folder (JSONL + "
    "images, parquet files or save_to_disk), or a mixture such as 'docvqa=0.7,cauldron:chartqa=0.3'; "
    "for detection, OCR and captions: 'synthetic:detection', a COCO JSON or JSON lines with boxes"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Entry:
    """One part of a spec: a source, optionally one of its configurations, optionally a weight."""

    base: str
    config: str | None = None
    weight: float | None = None


def is_path(text: str) -> bool:
    return Path(text).expanduser().exists()


def is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "/", "~")) and not is_path(text)


def parse(spec: str, registry: dict) -> list[Entry]:
    """Split a spec into entries; names are checked, nothing is loaded."""
    spec = spec.strip()
    if not spec:
        raise UsageError("--dataset is empty; name a dataset (e.g. synthetic, docvqa, cauldron:chartqa, ./data.jsonl)")
    if is_path(spec):  # a local path is taken whole, commas and all
        return [Entry(spec)]
    entries: list[Entry] = []
    open_base: str | None = None  # the source whose configuration list the next bare word may join
    for piece in spec.split(","):
        name, weight = _weighted(piece.strip(), spec)
        base, colon, config = name.partition(":")
        if colon and (base in registry or is_path(base) or is_hub_id(base)):
            entries.append(Entry(base, config or None, weight))
            open_base = base
        elif open_base is not None and _joins(open_base, name, registry):
            entries.append(Entry(open_base, name, weight))
        else:
            entries.append(Entry(name, None, weight))
            open_base = None
    for entry in entries:
        check(entry, registry)
    _check_weights(entries, spec)
    return entries


def _weighted(piece: str, spec: str) -> tuple[str, float | None]:
    name, equals, weight = piece.rpartition("=")
    if not equals:
        return piece, None
    try:
        value = float(weight)
    except ValueError:
        raise UsageError(f"weight '{weight}' in --dataset '{spec}' is not a number "
                         "(write docvqa=0.7,cauldron=0.3)") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"weight of '{name}' in --dataset '{spec}' must be a positive number (got {weight})")
    return name.strip(), value


def _joins(base: str, word: str, registry: dict) -> bool:
    known = registry[base].configs if base in registry else None
    if known:
        return word in known
    return bool(word) and word not in registry and not is_path(word) and "/" not in word


def check(entry: Entry, registry: dict) -> None:
    if not entry.base:
        raise UsageError(f"an empty dataset name in the mixture; accepted forms: {DATASET_FORMS}")
    if entry.base in registry:
        known = registry[entry.base].configs
        if entry.config is not None and entry.config not in (known or ()):
            choices = ", ".join(known) if known else "none"
            raise UsageError(f"dataset '{entry.base}' has no configuration '{entry.config}' (it has: {choices})")
    elif not (is_path(entry.base) or is_hub_id(entry.base)):
        raise UsageError(f"dataset '{entry.base}' not found; accepted forms: {DATASET_FORMS}")


def _check_weights(entries: list[Entry], spec: str) -> None:
    weighted = [e.weight is not None for e in entries]
    if any(weighted) and not all(weighted):
        raise UsageError(f"--dataset '{spec}' weights some parts only; weight every part "
                         "(docvqa=0.7,cauldron=0.3) or none")

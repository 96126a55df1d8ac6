"""Spec entries → ``Component``s: rows of one source configuration and split, with their adapter.

``REGISTRY`` maps the built-in names to where their rows live; every source, built-in or not, is
read through the real ``datasets`` loaders (``load_dataset`` on a hub id or a local folder,
``load_from_disk``), map-style or streamed. The columns pick the adapter.

Held-out validation: a source without a validation split (the Cauldron, Docmatix, a single JSONL
or parquet file) serves the first ``holdout_rows`` rows of its train split, per configuration, as
``validation``; its ``train`` split then leaves those rows out. Map-style this is a row range;
streamed, the train stream drops rows whose content fingerprint matches a held-out row (so an exact
duplicate of a held-out row is left out too).

    florence-tune data inspect cauldron:chartqa --split validation --holdout-rows 200
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import florence_tune.data.synthetic as synthetic
from florence_tune import tasks
from florence_tune.data.adapters import cauldron, docvqa, local
from florence_tune.data.adapters import tasks as task_rows
from florence_tune.data.options import DataOptions
from florence_tune.data.spec import Entry, is_hub_id, is_path
from florence_tune.errors import FlorenceTuneError, UsageError
from florence_tune.hub import prepare_for_hub

log = logging.getLogger(__name__)
VALIDATION_NAMES = ("validation", "valid", "val", "dev")
TEST_NAMES = ("test", "testing")


@dataclass(frozen=True)
class Source:
    """A built-in dataset name: where its rows live and what its configurations are."""

    location: Callable[[], str]  # a hub id or local folder; a callable so tests can point it at a copy
    configs: tuple[str, ...] | None = None  # every configuration (None: the source has just one)
    defaults: tuple[str | None, ...] | None = None  # used when the spec names none (None: all of ``configs``)
    predict_only: frozenset[str] = frozenset()  # splits without answers
    # A configuration that names a folder below ``location`` rather than one the loader knows (synthetic:ocr)
    folders: Callable[[str], str] | None = None
    on_hub: bool = True  # ``location`` is a hub dataset id (model cards name it)


def _synthetic_location() -> str:
    return str(synthetic.write_dataset(synthetic.default_root()))


REGISTRY: dict[str, Source] = {
    "synthetic": Source(_synthetic_location, configs=tuple(task_rows.TASK_NAMES), defaults=(None,),
                        folders=lambda config: synthetic.DOCUMENTS_FOLDER, on_hub=False),
    "docvqa": Source(lambda: docvqa.HUB_ID, predict_only=docvqa.PREDICT_ONLY_SPLITS),
    "cauldron": Source(lambda: cauldron.CAULDRON_ID, configs=cauldron.CAULDRON_CONFIGS),
    "docmatix": Source(lambda: cauldron.DOCMATIX_ID, configs=cauldron.DOCMATIX_CONFIGS,
                       defaults=cauldron.DOCMATIX_CONFIGS),
}


@dataclass
class Component:
    """The rows of one configuration and split of one source, and how they become samples."""

    name: str
    rows: Any  # datasets.Dataset (map-style, memory-mapped) or datasets.IterableDataset (streamed)
    adapter: Any
    weight: float | None = None
    size: int | None = None  # rows, when known
    first: int = 0  # streamed only: keep just the first N rows (a held-out validation slice)
    exclude_first: int = 0  # streamed only: leave out the first N rows (held out for validation)
    unsplit: Any = None  # streamed, with exclude_first: the stream the held-out rows are read from


def hub_datasets(entries: list[Entry]) -> list[str]:
    """The hub dataset ids a spec reads (built-in names resolved; local paths left out), in order, once each."""
    found = [REGISTRY[e.base].location() if e.base in REGISTRY else e.base for e in entries
             if (e.base in REGISTRY and REGISTRY[e.base].on_hub) or (e.base not in REGISTRY and is_hub_id(e.base))]
    return list(dict.fromkeys(found))


def predict_only(entries: list[Entry], split: str) -> bool:
    """Whether every part of the spec lacks answers in ``split`` (DocVQA's test split)."""
    return all(e.base in REGISTRY and split in REGISTRY[e.base].predict_only for e in entries)


def open_entries(entries: list[Entry], split: str, options: DataOptions) -> list[Component]:
    return [component for entry in entries for component in open_entry(entry, split, options)]


@dataclass(frozen=True)
class Where:
    """One configuration of an entry: its name, where its rows are, how to read them."""

    config: str | None  # the configuration as the spec names it (groups scores, picks a task)
    location: str
    kind: str  # 'hub', or local.kind_of's answer
    loader_config: str | None  # the configuration the datasets loader is asked for


def open_entry(entry: Entry, split: str, options: DataOptions) -> list[Component]:
    if entry.base in REGISTRY and split in REGISTRY[entry.base].predict_only:
        options = replace(options, require_answer=False)
    components = []
    for where in _where(entry):
        name = f"{entry.base}:{where.config}" if where.config else entry.base
        splits = _splits(where, options.streaming, name)
        component = _pick(splits, split, options.holdout_rows, name)
        component.adapter = adapter_for(component.rows, where.config or Path(entry.base).name, options, name,
                                        root=_root(where))
        components.append(component)
    _share_weight(components, entry.weight)
    return components


def _where(entry: Entry) -> list[Where]:
    """The configurations an entry reads."""
    if entry.base in REGISTRY:
        source = REGISTRY[entry.base]
        location = source.location()
        chosen = (entry.config,) if entry.config else (source.defaults or source.configs or (None,))
        found = []
        for config in chosen:
            place = str(Path(location) / source.folders(config)) if source.folders and config else location
            kind = local.kind_of(Path(place)) if is_path(place) else "hub"
            found.append(Where(config, place, kind, None if source.folders else config))
        return found
    if is_path(entry.base):
        path = Path(entry.base).expanduser().absolute()  # '.' has no name for the datasets loader to use
        kind = local.kind_of(path)
        if entry.config or kind != "files" or not path.is_dir():
            return [Where(entry.config, str(path), kind, entry.config)]
        return [Where(config, str(path), kind, config) for config in _local_configs(path)]
    return [Where(entry.config, entry.base, "hub", entry.config)]


def _root(where: Where) -> str | None:
    """The folder that relative image paths of parquet and save_to_disk rows are read against (JSON lines
    resolve theirs as they are read; hub rows carry their images)."""
    if where.kind not in ("files", "disk"):
        return None
    path = Path(where.location)
    return os.path.realpath(path if path.is_dir() else path.parent)


def _local_configs(folder: Path) -> list[str | None]:
    """A local copy of a multi-configuration hub dataset (README with configs) means all of them."""
    import datasets

    with contextlib.suppress(Exception):  # any folder datasets cannot describe is a plain set of files
        names = datasets.get_dataset_config_names(str(folder))
        if len(names) > 1:
            return names
    return [None]


# --- loading the splits -------------------------------------------------------------------------------


def _splits(where: Where, streaming: bool, name: str) -> dict[str, Callable]:
    """Split name → a function that returns its rows (lazy, so unused JSONL splits are not read)."""
    path = Path(where.location)
    if where.kind == "jsonl":
        return {split: (lambda rows=rows: _raw(rows())) for split, rows in local.jsonl_splits(path, streaming).items()}
    if where.kind == "tasks":
        return local.task_splits(path, streaming)
    with load_errors(name, hub=where.kind == "hub"):
        loaded = _load(where.kind, where.location, where.loader_config, streaming)
    return {split: (lambda rows=rows: _raw(rows)) for split, rows in loaded.items()}


def _raw(rows):
    """Streamed rows with images left as bytes (decoded later, safely, by images.py). Map-style rows
    are read as Arrow instead (mapped.py). Done first: ``decode`` starts a dataset at epoch 0."""
    return rows.decode(False) if hasattr(rows, "decode") else rows


def _load(kind: str, location: str, config: str | None, streaming: bool) -> dict[str, Any]:
    import datasets

    if kind == "disk":  # already memory-mapped Arrow: streamed or not, it is read in place
        loaded = datasets.load_from_disk(location)
        return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    if kind == "hub":

        prepare_for_hub()
    if Path(location).is_file():  # one parquet file: its name says its split
        files = {local.split_of(Path(location).relative_to(Path(location).parent)): location}
        return dict(datasets.load_dataset("parquet", data_files=files, streaming=streaming))
    return dict(datasets.load_dataset(location, config, streaming=streaming))


@contextlib.contextmanager
def load_errors(name: str, hub: bool) -> Iterator[None]:
    """The datasets library's failures as one line that says what to do."""
    try:
        yield
    except FlorenceTuneError:
        raise
    except ValueError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "config" in message.lower():
            raise UsageError(f"dataset '{name}': {message[:300]}") from None
        raise
    except (OSError, ConnectionError) as exc:
        where = "the Hugging Face hub" if hub else "disk"
        raise FlorenceTuneError(
            f"could not load dataset '{name}' from {where} ({str(exc).splitlines()[0][:160] if str(exc) else exc!r}); "
            "point --dataset at a local copy (a save_to_disk folder, its parquet files or JSON lines), "
            "or run the embedded demo with 'florence-tune train'"
        ) from None


def _named(splits: dict[str, Callable], split: str) -> str | None:
    """The source's own name for ``split`` ('valid' for validation, 'testing' for test...)."""
    for group in (VALIDATION_NAMES, TEST_NAMES):
        if split in group:
            return next((name for name in group if name in splits), None)
    return split if split in splits else None


def _pick(splits: dict[str, Callable], split: str, holdout: int, name: str) -> Component:
    own = _named(splits, split)
    has_validation = _named(splits, "validation") is not None
    if own is not None:
        rows = splits[own]()
        if split == "train" and not has_validation and holdout > 0:
            return _held_out(rows, holdout, name, keep=False)
        return Component(name, rows, adapter=None, size=_size(rows, own))
    if split in VALIDATION_NAMES and "train" in splits and holdout > 0:
        return _held_out(splits["train"](), holdout, name, keep=True)
    hint = ("; with --holdout-rows above 0 it lends rows of its train split, or pass --eval-split none"
            if split in VALIDATION_NAMES and "train" in splits and holdout <= 0 else "")
    raise UsageError(f"dataset '{name}' has no split '{split}' (it has: {', '.join(sorted(splits))}){hint}")


def _held_out(rows, holdout: int, name: str, keep: bool) -> Component:
    """The first rows lent to validation (keep=True) or all the others (keep=False): ``holdout`` of them, or a
    tenth (at least one) of a source smaller than that, so a small first try still has rows to train on."""
    import datasets

    mapped = isinstance(rows, datasets.Dataset)
    # a stream is counted only as far as it needs to be: up to ``holdout`` rows
    total = len(rows) if mapped else sum(1 for _ in rows.take(holdout))
    cut = holdout if total >= holdout else max(1, total // 10)
    if keep:
        lent = (f"{cut} of its {total} rows {'is' if cut == 1 else 'are'}" if total < holdout
                else f"its first {cut} rows are")
        log.warning("dataset '%s' has no validation split: %s held out for validation (--holdout-rows %d)",
                    name, lent, holdout)
    if mapped:  # a contiguous row range, no copy
        wanted = range(cut) if keep else range(cut, len(rows))
        chosen = rows.select(wanted) if len(wanted) else rows.select([])  # datasets rejects an empty range at the end
        return Component(name, chosen, adapter=None, size=len(chosen))
    if keep:
        return Component(name, rows.take(cut), adapter=None, size=None, first=cut)
    return Component(name, rows, adapter=None, size=_size(rows, "train"), exclude_first=cut, unsplit=rows.take(cut))


def _size(rows, split: str) -> int | None:
    if hasattr(rows, "__len__"):
        return len(rows)
    info = getattr(rows, "info", None)
    splits = getattr(info, "splits", None) or {}
    return splits[split].num_examples if split in splits else None


def _share_weight(components: list[Component], weight: float | None) -> None:
    """An entry's weight is shared by its configurations in proportion to their rows (equally if unknown)."""
    if weight is None:
        return
    sizes = [c.size for c in components]
    known = all(s for s in sizes)
    total = sum(sizes) if known else len(components)
    for component in components:
        component.weight = weight * ((component.size if known else 1) / total)


# --- which adapter -----------------------------------------------------------------------------------


def adapter_for(rows, config: str, options: DataOptions, name: str, root: str | None = None):
    """The adapter the columns call for; ``root``: the local folder that relative image paths are read against."""
    columns = set(rows.column_names or rows.features or [])
    if columns & task_rows.MARKER_COLUMNS and "question" not in columns:  # detection, grounding, OCR, captions
        return task_rows.Adapter(task_rows.TASK_NAMES.get(config, tasks.OD), root=root)
    if set(cauldron.COLUMNS) <= columns:
        return cauldron.Adapter(config, options.task_prompt, options.multi_image, root=root)
    if {"image", "prefix"} <= columns:  # maestro-style rows, and our own JSON-lines rows
        return local.Adapter(options.task_prompt, options.require_answer, options.clean_questions, root=root,
                             name=name)
    if {"image", "question"} <= columns:
        return docvqa.Adapter(options.task_prompt, options.require_answer, options.clean_questions, root=root,
                              name=name)
    raise UsageError(f"dataset '{name}' has columns {sorted(columns)}; expected DocVQA's (image, question, answers), "
                     "the Cauldron's (images, texts) or prompt/target (image, prefix, suffix)")

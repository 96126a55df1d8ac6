"""The Python API: ``train``, ``evaluate`` and ``load`` take the command line's settings, flag names underscored.

In a notebook cell::

    import florence_tune

    rows = [{"image": page, "question": "What is the total?", "answers": ["$12.50"]}, ...]  # PIL, path or bytes
    summary = florence_tune.train(dataset=rows, max_steps=200, batch_size=8, output_dir="runs/mine")
    florence_tune.evaluate(model="runs/mine", dataset="docvqa", split="validation", max_samples=500)["anls"]
    model = florence_tune.load("runs/mine")
    model.ask("invoice.png", "What is the total?")            # '$12.50'
    model.run(page, "<OD>")                                    # {'bboxes': [[x1, y1, x2, y2], ...], 'labels': [...]}

Settings go through ``config.build`` like a YAML file's: an unknown name is a ``UsageError`` with a
did-you-mean, a value of the wrong type one too (``max_steps="2"``), and every error is an exception with a
one-line message (``florence_tune.errors``), never an exit. Two spellings are Python's own: a ``pathlib.Path``
wherever a path is named, and ``True`` for a setting whose bare flag has a value (``resume=True`` is
``--resume``, ``page_cache=True`` is ``--page-cache``). ``config="run.yaml"`` reads settings as ``--config`` does
(the keyword arguments override it). Data held in memory is written once under the cache (``data/in_memory.py``)
and read from there like any local dataset.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from florence_tune import distributed
from florence_tune.commands import options, predict
from florence_tune.config import EvalConfig, PredictConfig, TrainConfig, build, check_bounds, load_yaml
from florence_tune.data import in_memory
from florence_tune.data.images import BadImage, open_image
from florence_tune.data.sample import Sample
from florence_tune.errors import UsageError
from florence_tune.evaluation.generation import answer
from florence_tune.model import loading

__all__ = ["Model", "evaluate", "load", "train"]
PER_CALL = ("image", "question", "task")  # predict's settings that ``Model.ask`` / ``Model.run`` take instead
EVAL_SPLIT = "validation"  # the split ``eval_dataset=`` becomes


def train(**settings: Any) -> dict[str, Any]:
    """Fine-tune, as ``florence-tune train`` does; returns the run's summary (also in its summary.json).

    ``dataset=`` takes every spec the command line takes, or data in memory: a ``datasets.Dataset`` or
    ``DatasetDict``, a pandas DataFrame, a list of dicts, or a dict of split name → any of those (a single set
    of rows is the train split and lends its first rows to validation, as a single JSON-lines file does).
    ``eval_dataset=`` (rows in memory, with ``dataset=`` in memory too) is written beside it as its
    validation split.

        summary = florence_tune.train(dataset=rows, eval_dataset=held_out, max_steps=100, output_dir="runs/a")
        summary["anls_before"], summary["anls_after"], summary["final"]
    """
    from florence_tune.commands import train as command

    values = _values(TrainConfig, settings, "florence_tune.train()")
    dataset, held_out = values.pop("dataset", None), values.pop("eval_dataset", None)
    config = build(TrainConfig, values, source="florence_tune.train()")  # names and types before data is written
    if held_out is not None:
        dataset = _with_validation(dataset, held_out, config)
    if dataset is not None:
        values["dataset"] = in_memory.spec_of(dataset, split=config.train_split)
        config = build(TrainConfig, values, source="florence_tune.train()")
    return command.run(config)


def evaluate(**settings: Any) -> dict[str, Any]:
    """Generate and score, as ``florence-tune evaluate`` does; returns the metrics summary (ANLS, counts of
    skipped rows, where the predictions went). ``dataset=`` as for ``train``; a single set of rows in memory is
    the split evaluated, all of it.

        florence_tune.evaluate(model="runs/a", dataset=rows, output="runs/a/mine.jsonl")["anls"]
    """
    from florence_tune.commands import evaluate as command

    values = _values(EvalConfig, settings, "florence_tune.evaluate()")
    dataset = values.pop("dataset", None)
    config = build(EvalConfig, values, source="florence_tune.evaluate()")
    if dataset is not None:
        values["dataset"] = in_memory.spec_of(dataset, split=config.split)
        config = build(EvalConfig, values, source="florence_tune.evaluate()")
    return command.run(config)


def load(model: str | os.PathLike, *, batch_size: int = 8, **settings: Any) -> Model:
    """A model to ask questions of: ``'tiny'``, a hub id, a run directory, or a final/ or checkpoint folder, on
    this process's device (its GPU when there is one). ``settings``: predict's (``num_beams``,
    ``max_new_tokens``, ``task_prompt``, ``trust_remote_code``); ``batch_size``: images per generation batch.

        model = florence_tune.load("runs/mine", num_beams=1)
        model.ask(["a.png", "b.png"], ["What is the total?", "What is the date?"])   # ['$12.50', '4 May']
    """
    source = "florence_tune.load()"
    config = build(PredictConfig, {**_values(PredictConfig, settings, source), "model": os.fspath(model)},
                   source=source)
    given = [name for name in PER_CALL if getattr(config, name) is not None]
    if given:
        raise UsageError(f"load() takes no '{given[0]}': give images, questions and tasks to ask() or run()")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be an int of at least 1 (got {batch_size!r})")
    check_bounds(config)
    found, processor = loading.load(config.model, trust_remote_code=config.trust_remote_code,
                                    device=distributed.device(),
                                    dtype=options.generation_dtype(config, distributed.device()))
    return Model(found, processor, config, batch_size)


class Model:
    """A Florence-2 model and its processor, answering through the one generation path (``predict``'s).

    ``ask`` and ``run`` take one image or a list (a PIL image, a path or the file's bytes), and one question,
    task text or a list of them; a single one is paired with every item of the other list. Lists give lists.
    ``model`` and ``processor`` are the transformers objects, for anything else.
    """

    def __init__(self, model, processor, settings: PredictConfig, batch_size: int = 8):
        self.model, self.processor = model, processor
        self.settings = settings
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"florence_tune.Model({self.settings.model!r}, device={self.device}, task_prompt={self.task_prompt!r})"

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def task_prompt(self) -> str:
        """The prompt before every question: the one given, else the one the run was trained with, else <VQA>."""
        return options.task_prompt(self.settings)

    def ask(self, image: Any, question: str | list[str]) -> str | list[str]:
        """The answer to ``question`` about ``image`` (``florence-tune predict --question``'s text).

            model.ask(page, "What is the total?")                          # '$12.50'
            model.ask(page, ["What is the total?", "What is the date?"])   # one page, two questions
        """
        images, questions, many = _paired(image, question)
        prompts = [predict.prompt_of(q, None, self._call(image, question=q))
                   for image, q in zip(images, questions, strict=True)]
        answers = self._respond(images, prompts)
        return answers if many else answers[0]

    def run(self, image: Any, task: str, text: str | list[str] | None = None) -> Any:
        """Florence-2's ``task`` token on ``image`` (``<CAPTION>``, ``<OCR>``, ``<OD>``...), with ``text`` for the
        tasks that read some (``<CAPTION_TO_PHRASE_GROUNDING>``): text, or for a location task the processor's
        parsed result, boxes in pixels of the image (what ``florence-tune predict --task`` prints).

            model.run(photo, "<OD>")                                        # {'bboxes': [...], 'labels': [...]}
            model.run(photo, "<CAPTION_TO_PHRASE_GROUNDING>", "a red car")
        """
        images, texts, many = _paired(image, text)
        prompts = [predict.prompt_of(None, task + (t or ""), self._call(image, task=task + (t or "")))
                   for image, t in zip(images, texts, strict=True)]
        found = self._respond(images, prompts)
        return found if many else found[0]

    def _call(self, image: Any, **change: str) -> PredictConfig:
        """predict's settings for one image and its question or task (its checks of the prompt, its words)."""
        return dataclasses.replace(self.settings, image=_label(image), **change)

    def _respond(self, images: list[Any], prompts: list[tuple[str, str | None]]) -> list[Any]:
        """What ``predict.run`` does after loading, for many images: one ``Sample`` each, answered by
        ``generation.answer`` in batches, read as predict reads them (``predict.reading``)."""
        pages = [_opened(image) for image in images]
        samples = [Sample(id=str(i), image=page, prompt=prompt, target="", meta={"task": task} if task else {})
                   for i, (page, (prompt, task)) in enumerate(zip(pages, prompts, strict=True))]
        decoding = options.decoding(self.settings)
        texts: list[str] = []
        for start in range(0, len(samples), self.batch_size):
            texts += answer(self.model, self.processor, samples[start: start + self.batch_size], decoding)
        return [predict.reading(self.processor, text, task, page.size)
                for text, page, (_, task) in zip(texts, pages, prompts, strict=True)]


def _values(cls: type, settings: dict[str, Any], source: str) -> dict[str, Any]:
    """The mapping ``config.build`` takes: ``config=``'s YAML first (checked as ``--config`` is), then the
    keyword arguments, paths as text and ``True`` for a bare flag's value."""
    values: dict[str, Any] = {}
    given = dict(settings)
    yaml_file = given.pop("config", None)
    if yaml_file is not None:
        if not isinstance(yaml_file, str | os.PathLike):
            raise UsageError(f"config in {source} is a YAML file's path, got {yaml_file!r}")
        values.update(load_yaml(yaml_file))
        build(cls, values, source=os.fspath(yaml_file))
    bare = {f.name: f.metadata["const"] for f in dataclasses.fields(cls) if f.metadata.get("const") is not None}
    for key, value in given.items():
        name = str(key).replace("-", "_")
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if name in bare and isinstance(value, bool):
            value = bare[name] if value else None
        values[name] = value
    return values


def _with_validation(dataset: Any, held_out: Any, config: TrainConfig) -> dict[str, Any]:
    """``dataset=`` and ``eval_dataset=`` as one set of splits, so they are written (and fingerprinted) together."""
    if dataset is None or isinstance(dataset, str | os.PathLike):
        raise UsageError("eval_dataset= goes with rows in memory for dataset=; with a dataset spec, name the "
                         "split to evaluate with eval_split=")
    if isinstance(dataset, Mapping):  # a dict of splits, a DatasetDict
        raise UsageError("dataset= already holds splits; put the evaluation rows in its 'validation' split "
                         "instead of eval_dataset=")
    if config.eval_split != EVAL_SPLIT:
        raise UsageError(f"eval_dataset= is evaluated as the '{EVAL_SPLIT}' split; leave eval_split out "
                         f"(got {config.eval_split!r})")
    if config.train_split == EVAL_SPLIT:
        raise UsageError(f"train_split '{EVAL_SPLIT}' would be eval_dataset=; leave train_split out")
    return {config.train_split: dataset, EVAL_SPLIT: held_out}


def _paired(images: Any, texts: Any) -> tuple[list[Any], list[Any], bool]:
    """(images, texts, whether a list was given): a single one repeated for every item of the other list."""
    many_images, many_texts = isinstance(images, list | tuple), isinstance(texts, list | tuple)
    images = list(images) if many_images else [images]
    texts = list(texts) if many_texts else [texts]
    if many_images and many_texts and len(images) != len(texts):
        raise UsageError(f"{len(images)} images and {len(texts)} questions or texts; give as many of each, "
                         "or one of either")
    if not many_images:
        images = images * len(texts)
    if not many_texts:
        texts = texts * len(images)
    return images, texts, many_images or many_texts


def _label(image: Any) -> str:
    """How an image is named in a message."""
    if isinstance(image, str | os.PathLike):
        return os.fspath(image)
    if isinstance(image, bytes | bytearray | memoryview):
        return f"<{len(image)} bytes>"
    return f"<{type(image).__name__}>"


def _opened(image: Any):
    try:
        return open_image(os.fspath(image) if isinstance(image, os.PathLike) else image)
    except BadImage as exc:
        raise UsageError(f"cannot read image '{_label(image)}': {exc}") from None

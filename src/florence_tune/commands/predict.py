"""``florence-tune predict``: answer a question, or run a Florence-2 task token, on one image or many.

    florence-tune predict --model runs/demo --image page.png --question "What is the total?"
    florence-tune predict --model florence-community/Florence-2-base --image photo.jpg --task "<OD>"
    florence-tune predict --model runs/demo --image scans/ --question "What is the total?" --output preds.jsonl
    florence-tune predict --model runs/demo --image report.pdf --task "<OCR>"
    florence-tune predict --model runs/demo --image questions.jsonl --batch-size 16

``--image`` is an image file, a folder (every image and PDF below it), a glob, a PDF (each page) or JSON lines of
``{"image": ..., "question": ...}`` / ``{"image": ..., "task": ...}`` rows (data/inputs.py). One image without
``--output`` prints its answer alone; anything else is one JSON line per image, page or row, to ``--output`` or
stdout, batched. The answers come from the same generation path as evaluation (``evaluation.generation``), on
this process's device; box tasks are read as evaluation reads them, other location tasks by the processor.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from florence_tune import distributed, paths, tasks
from florence_tune.commands import options
from florence_tune.config import PredictConfig, check_bounds
from florence_tune.data import inputs as found_inputs
from florence_tune.data.images import BadImage, open_image
from florence_tune.data.inputs import Inputs, Item
from florence_tune.data.sample import Sample
from florence_tune.errors import UsageError
from florence_tune.evaluation.generation import answer
from florence_tune.model import loading


@dataclass(frozen=True)
class Predicted:
    """What predict did: the ``answer`` of one image (no --output), or the ``summary`` of the lines it wrote:
    ``{"answered": n, "skipped": {reason: n}, "output": path or None}``."""

    answer: Any = None
    summary: dict[str, Any] | None = None


def run(config: PredictConfig, lines: IO[str] | None = None) -> Predicted:
    """One image and no --output: its answer (text, or the parsed result of a location task, boxes in pixels).
    Otherwise one JSON line per item, written to --output (else to ``lines``), and their summary."""
    found = validate(config)
    if found.single:
        image = read_named(config.image)  # an image named on the command line is readable, or nothing loads
        if config.output is None:
            prompt, task = prompt_of(config.question, config.task, config)
            model, processor = _load(config)
            sample = Sample(id="0", image=image, prompt=prompt, target="", meta={"task": task} if task else {})
            text = answer(model, processor, [sample], options.decoding(config))[0]
            return Predicted(answer=reading(processor, text, task, image.size))
    model, processor = _load(config)
    with _destination(config.output, lines) as write:
        counts = answer_all(model, processor, found, config, write)
    return Predicted(summary={"answered": counts.pop("answered", 0), "skipped": dict(sorted(counts.items())),
                              "output": config.output})


def validate(config: PredictConfig) -> Inputs:
    """Everything checked before the model loads: settings, the inputs found, where the lines go."""
    check_bounds(config)
    if not config.model:
        raise UsageError("predict needs --model (e.g. --model runs/demo or --model tiny)")
    options.generation_dtype(config, distributed.device())
    if not config.image:
        raise UsageError("predict needs --image PATH (an image, a folder, a glob, a PDF or a JSON lines file)")
    found = found_inputs.find(config.image)
    asked = config.question is not None or config.task is not None
    if found.rows and asked:
        raise UsageError(f"the rows of '{config.image}' carry their own question or task; leave out --question "
                         "and --task")
    if not found.rows and (config.question is None) == (config.task is None):
        raise UsageError("give exactly one of --question TEXT or --task <CAPTION>|<OCR>|<OD>|...")
    if not found.rows:
        prompt_of(config.question, config.task, config)  # a bad --task or --task-prompt fails here, once
    if config.output is not None:
        paths.check_output_file(config.output, "--output", inputs=[*paths.local_inputs(config.model), *found.files],
                                data=found.folders)
    return found


def prompt_of(question: str | None, task: str | None, config: PredictConfig) -> tuple[str, str | None]:
    """(prompt text, its task token or None for a question) of one question or one task text."""
    if question is not None:
        return options.task_prompt(config) + question, None
    task = task.strip()
    if not (task.startswith("<") and ">" in task):
        raise UsageError(f"--task must start with a Florence-2 task token such as <CAPTION> or <OD> (got {task!r})")
    token = task[: task.index(">") + 1]
    if token in tasks.BARE_TOKEN_TASKS and task[len(token):].strip():
        raise UsageError(f"--task {token} takes no text (got {task!r}); give the bare token, or a task that reads "
                         "text such as <CAPTION_TO_PHRASE_GROUNDING>")
    return task, token


def read_named(image: str):
    try:
        return open_image(image)
    except BadImage as exc:
        raise UsageError(f"cannot read image '{image}': {exc}") from None


def reading(processor, text: str, task: str | None, size: tuple[int, int]) -> Any:
    """What one-image predict prints: the text, or a location task's result in pixels, read as evaluation reads
    it (``tasks.parse_answer``: bin centres, labels outside ASCII kept) — ``bboxes``, ``polygons`` or
    ``quad_boxes`` with their ``labels``; a region task answered in words prints the words."""
    if task not in tasks.LOCATION_TASKS:
        return text
    parsed = tasks.parse_answer(processor, text, task, size)
    if isinstance(parsed, str):
        return parsed
    key = next(k for k in ("boxes", "polygons", "quads") if k in parsed)
    return {PRINTED[key]: parsed[key], "labels": parsed["labels"]}


# The processor's names for what an answer locates, which predict prints.
PRINTED = {"boxes": "bboxes", "polygons": "polygons", "quads": "quad_boxes"}


def answer_fields(processor, text: str, task: str | None, size: tuple[int, int]) -> dict[str, Any]:
    """The answer's part of a JSON line: what it locates (``boxes``, ``polygons`` or ``quad_boxes``) and its
    ``labels``, else ``answer`` (the text)."""
    result = reading(processor, text, task, size)
    if isinstance(result, dict):
        return {"boxes" if key == "bboxes" else key: value for key, value in result.items()}
    return {"answer": result}


def answer_all(model, processor, found: Inputs, config: PredictConfig, write) -> collections.Counter:
    """One line per item, in order, ``--batch-size`` items a generation; returns the counts by outcome."""
    from tqdm.auto import tqdm

    decoding, counts = options.decoding(config), collections.Counter()
    with found_inputs.Reader(config.pdf_dpi) as reader, tqdm(total=len(found.items), desc="predict",
                                                             unit="image") as bar:
        for chunk in found_inputs.batches(found.items, config.batch_size):
            prepared = [_prepared(item, reader, config, found.rows) for item in chunk]
            samples = [sample for _, sample in prepared if sample is not None]
            texts = iter(answer(model, processor, samples, decoding) if samples else [])
            for line, sample in prepared:
                if sample is not None:
                    line.update(answer_fields(processor, next(texts), sample.meta.get("task"), sample.image.size))
                counts[line.get("error", "answered")] += 1
                write(line)
            bar.update(len(chunk))
    return counts


def _prepared(item: Item, reader: found_inputs.Reader, config: PredictConfig,
              rows: bool) -> tuple[dict[str, Any], Sample | None]:
    """The item's line so far and its sample; no sample when it cannot be answered (its line says why)."""
    question, task = (item.question, item.task) if rows else (config.question, config.task)
    line: dict[str, Any] = {"image": item.image, "page": item.page}
    line.update({"question": question} if question is not None else {"task": task} if task is not None else {})
    if item.error:
        return {**line, "error": item.error}, None
    try:
        prompt, token = prompt_of(question, task, config)
    except UsageError:
        return {**line, "error": "bad_task"}, None
    try:
        image = reader.image(item)
    except BadImage as exc:
        return {**line, "error": f"image_{exc.reason}"}, None
    return line, Sample(id=item.image, image=image, prompt=prompt, target="", meta={"task": token} if token else {})


def _load(config: PredictConfig):
    return loading.load(config.model, trust_remote_code=config.trust_remote_code, device=distributed.device(),
                        dtype=options.generation_dtype(config, distributed.device()))


@contextlib.contextmanager
def _destination(output: str | None, lines: IO[str] | None):
    """A function writing one JSON line: to ``output`` through a staged file renamed over it at the end (a crash
    leaves the previous file whole), else to ``lines`` as each batch finishes."""
    if output is None:
        def write(record: dict[str, Any]) -> None:
            print(json.dumps(record, ensure_ascii=False), file=lines, flush=True)

        yield write
        return
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with staged.open("w", encoding="utf-8") as handle:
            yield lambda record: handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)

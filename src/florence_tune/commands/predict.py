"""``florence-tune predict``: answer one question about one image, or run a Florence-2 task token on it.

    florence-tune predict --model runs/demo --image page.png --question "What is the total?"
    florence-tune predict --model florence-community/Florence-2-base --image photo.jpg --task "<OD>"

The answer comes from the same generation path as evaluation (``evaluation.generation``), on this
process's device; location tasks are turned into pixel coordinates by the processor's post-processing.
"""

from __future__ import annotations

from typing import Any

from florence_tune import distributed, tasks
from florence_tune.commands import options
from florence_tune.config import PredictConfig, check_bounds
from florence_tune.data.images import BadImage, open_image
from florence_tune.data.sample import Sample
from florence_tune.errors import UsageError
from florence_tune.evaluation.generation import answer
from florence_tune.model import loading


def run(config: PredictConfig) -> Any:
    """Returns the answer: text, or the processor's parsed result for a location task (boxes in pixels)."""
    prompt, task = build_prompt(config)
    try:
        image = open_image(config.image)
    except BadImage as exc:
        raise UsageError(f"cannot read image '{config.image}': {exc}") from None
    model, processor = loading.load(config.model, trust_remote_code=config.trust_remote_code,
                                    device=distributed.device())
    sample = Sample(id="0", image=image, prompt=prompt, target="", meta={"task": task} if task else {})
    text = answer(model, processor, [sample], options.decoding(config))[0]
    if task in tasks.BOX_TASKS:  # read as evaluation reads them: bin centres, labels outside ASCII kept
        parsed = tasks.parse_boxes(processor, text, task, image.size)
        return {"bboxes": parsed["boxes"], "labels": parsed["labels"]}
    if task not in tasks.LOCATION_TASKS:
        return text
    return processor.post_process_generation(text, task=task, image_size=image.size)[task]


def build_prompt(config: PredictConfig) -> tuple[str, str | None]:
    """(prompt text, its task token or None for a question)."""
    check_bounds(config)
    if not config.model:
        raise UsageError("predict needs --model (e.g. --model runs/demo or --model tiny)")
    if not config.image:
        raise UsageError("predict needs --image PATH")
    if (config.question is None) == (config.task is None):
        raise UsageError("give exactly one of --question TEXT or --task <CAPTION>|<OCR>|<OD>|...")
    if config.question is not None:
        return options.task_prompt(config) + config.question, None
    task = config.task.strip()
    if not (task.startswith("<") and ">" in task):
        raise UsageError(f"--task must start with a Florence-2 task token such as <CAPTION> or <OD> (got {task!r})")
    token = task[: task.index(">") + 1]
    if token in tasks.BARE_TOKEN_TASKS and task[len(token):].strip():
        raise UsageError(f"--task {token} takes no text (got {task!r}); give the bare token, or a task that reads "
                         "text such as <CAPTION_TO_PHRASE_GROUNDING>")
    return task, token

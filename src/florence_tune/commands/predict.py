"""Answer one question about one image, or run a Florence-2 task token on it.

Run it: ``florence-tune predict --model runs/demo --image page.png --question "What is the total?"``
or ``florence-tune predict --model florence-community/Florence-2-base --image photo.jpg --task "<OD>"``.
"""

from __future__ import annotations

from typing import Any

import torch

from florence_tune.batch.collate import Collator, encoder_positions
from florence_tune.config import PredictConfig
from florence_tune.data.images import BadImage, open_image
from florence_tune.data.sample import Sample
from florence_tune.errors import FlorenceTuneError, UsageError
from florence_tune.evaluation.loop import generation_config
from florence_tune.model import loading

# Tasks whose output carries location tokens that the processor turns into pixel coordinates.
STRUCTURED_TASKS = {"<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>", "<CAPTION_TO_PHRASE_GROUNDING>",
                    "<OCR_WITH_REGION>", "<OPEN_VOCABULARY_DETECTION>", "<REFERRING_EXPRESSION_SEGMENTATION>",
                    "<REGION_TO_SEGMENTATION>"}


def predict(config: PredictConfig) -> Any:
    """The ``predict`` command: returns the answer (text, or a dict for structured tasks)."""
    prompt, task = build_prompt(config)
    try:
        image = open_image(config.image)
    except BadImage as exc:
        raise FlorenceTuneError(f"cannot read image '{config.image}': {exc}") from None
    model, processor = loading.load(config.model, trust_remote_code=config.trust_remote_code)
    collator = Collator(processor, max_positions=encoder_positions(model), with_labels=False)
    batch = collator.encode([Sample(id="0", image=image, prompt=prompt, target="")])
    gen = generation_config(processor, num_beams=config.num_beams, max_new_tokens=config.max_new_tokens)
    with torch.no_grad():
        output = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                pixel_values=batch["pixel_values"].to(model.dtype), generation_config=gen)
    if task is None:
        return processor.batch_decode(output, skip_special_tokens=True)[0].strip()
    raw = processor.batch_decode(output, skip_special_tokens=False)[0]
    parsed = processor.post_process_generation(raw, task=task, image_size=image.size)
    return parsed[task]


def build_prompt(config: PredictConfig) -> tuple[str, str | None]:
    """(prompt text, task token to post-process with or None for free text)."""
    if not config.model:
        raise UsageError("predict needs --model (e.g. --model runs/demo or --model tiny)")
    if not config.image:
        raise UsageError("predict needs --image PATH")
    if (config.question is None) == (config.task is None):
        raise UsageError("give exactly one of --question TEXT or --task <CAPTION>|<OCR>|<OD>|...")
    if config.question is not None:
        return config.task_prompt + config.question, None
    task = config.task.strip()
    if not (task.startswith("<") and ">" in task):
        raise UsageError(f"--task must start with a Florence-2 task token such as <CAPTION> or <OD> (got {task!r})")
    token = task[: task.index(">") + 1]
    return task, token if token in STRUCTURED_TASKS else None

"""The one generation path: decoding options set explicitly, answers generated on the model's device.

Training-time evaluation, ``evaluate``, ``predict`` and the benchmark all come through ``generate``:

    florence-tune predict --model runs/demo --image page.png --question "What is the total?"
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import torch

from florence_tune import tasks
from florence_tune.batch.collate import Collator, encoder_positions
from florence_tune.config import GenerationSettings
from florence_tune.data.sample import Sample


@dataclass(frozen=True)
class Decoding:
    """How answers are generated (the ``--num-beams`` / ``--max-new-tokens`` settings, their defaults)."""

    num_beams: int = GenerationSettings.num_beams
    max_new_tokens: int = GenerationSettings.max_new_tokens


def generation_config(processor, decoding: Decoding, **overrides: Any):
    """Decoding options set explicitly, so nothing is inherited from the checkpoint's generation config:
    transformers fills every option left None from it (a BART-style ``no_repeat_ngram_size=3`` would forbid
    answers such as "1,000,000,000"). The first and last tokens are forced to what every Florence-2 answer
    starts and ends with (``<s>``, ``</s>``), as Microsoft's checkpoints force them, whatever a given checkpoint
    says. ``overrides``: extra options (the benchmark fixes the answer length with them)."""
    from transformers import GenerationConfig

    tokenizer = processor.tokenizer
    config = GenerationConfig(
        max_new_tokens=decoding.max_new_tokens,
        num_beams=decoding.num_beams,
        do_sample=False,
        early_stopping=decoding.num_beams > 1,
        no_repeat_ngram_size=0,
        repetition_penalty=1.0,
        length_penalty=1.0,
        forced_bos_token_id=tokenizer.bos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.update(**overrides)
    return config


@torch.no_grad()
def generate(model, processor, inputs: dict[str, torch.Tensor], config, samples: list[Sample] | None = None,
             pages=None, counts: collections.Counter | None = None) -> list[str]:
    """Answers for one encoded batch, computed where the model's weights are.

    ``pages``: the per-page path (``model.page_path.PagePath``) when ``inputs`` come from the uint8
    ``PixelCollator``; None for the processor's ``pixel_values``. With ``samples``, answers of location
    tasks (<OD>, grounding, OCR with regions...) keep their location tokens, which plain decoding would
    drop as special tokens.
    """
    if pages is not None:
        output = pages.generate(model, inputs, config)
    else:
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        moved = {k: v.to(device) for k, v in inputs.items() if k in ("input_ids", "attention_mask", "pixel_values")}
        moved["pixel_values"] = moved["pixel_values"].to(dtype)
        output = model.generate(**moved, generation_config=config)
    if counts is not None:
        counts[CUT_ANSWERS] += cut_answers(output, config)
    return decode_answers(processor, output, samples)


CUT_ANSWERS = "cut_answers"  # answers that reached --max-new-tokens before they ended (counted, then warned of)


def cut_answers(output: torch.Tensor, config) -> int:
    """How many generated sequences were stopped by ``max_new_tokens`` rather than ending: ``max_new_tokens``
    long with no end token before the last one (which ``forced_eos_token_id`` puts there either way)."""
    body = output[:, 1:]  # after the decoder's start token
    if body.shape[1] < config.max_new_tokens or (config.min_new_tokens or 0) >= config.max_new_tokens:
        return 0  # shorter than the limit, or made that long on purpose (the benchmark fixes answer lengths)
    ended_early = (body[:, :-1] == config.eos_token_id).any(dim=1)
    padded = body[:, -1] == config.pad_token_id
    return int((~ended_early & ~padded).sum())


def decode_answers(processor, output: torch.Tensor, samples: list[Sample] | None = None) -> list[str]:
    """Generated ids → answer text (location tasks keep their location tokens; see ``generate``)."""
    plain = [text.strip() for text in processor.batch_decode(output, skip_special_tokens=True)]
    if not samples or not any(tasks.task_of(s.meta, s.prompt) in tasks.LOCATION_TASKS for s in samples):
        return plain
    raw = processor.batch_decode(output, skip_special_tokens=False)
    return [tasks.strip_markers(r) if tasks.task_of(s.meta, s.prompt) in tasks.LOCATION_TASKS else p
            for s, r, p in zip(samples, raw, plain, strict=True)]


def answer(model, processor, samples: list[Sample], decoding: Decoding) -> list[str]:
    """Answers for samples held in memory (``predict``, notebooks): encoded, then ``generate``."""
    inputs = Collator(processor, max_positions=encoder_positions(model), with_labels=False).encode(samples)
    return generate(model, processor, inputs, generation_config(processor, decoding), samples)

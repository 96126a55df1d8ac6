"""Samples → model tensors: pixels, prompt ids with attention mask, labels with -100 on padding.

The only place that tokenizes. Labels use the layout the pretrained checkpoints generate
(``<s> answer </s>``; the model prepends the decoder start token ``</s>`` itself), so a fine-tuned
model answers in the same format generation decodes.
"""

from __future__ import annotations

import collections
from typing import Any, NamedTuple

import torch
from PIL import Image

from florence_tune.batch.pages import PageSample, PixelSpec
from florence_tune.data.sample import ALTERED, Sample

IGNORE_INDEX = -100  # positions the loss must not see (transformers' cross-entropy convention)


class Batch(NamedTuple):
    """What a collator hands the training and evaluation loops.

    ``inputs``: tensors keyed by model-argument names (empty when every sample of the batch was
    unusable); ``stats``: counters of skipped samples by reason, truncated prompts and answers and
    other alterations (tiled images), kept apart from the model's inputs. A named tuple, because the
    data loader, pinned memory and accelerate's device placement all carry tuples through intact.
    """

    inputs: dict[str, Any]
    stats: dict[str, int]

    @property
    def empty(self) -> bool:
        """Every sample of the batch was unusable: nothing to run the model on."""
        return not self.inputs

    @property
    def size(self) -> int:
        return len(self.inputs["input_ids"]) if self.inputs else 0


class Collator:
    """Callable for ``DataLoader(collate_fn=...)``: usable samples → a ``Batch``; ``Skipped`` items counted."""

    def __init__(self, processor, *, max_positions: int, max_target_tokens: int = 128,
                 with_labels: bool = True, pad_to_multiple_of: int = 8):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_positions = max_positions
        self.max_target_tokens = max_target_tokens
        self.with_labels = with_labels
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: list[Any]) -> Batch:
        samples = [item for item in items if isinstance(item, Sample)]
        stats = collections.Counter(f"skipped_{item.reason}" for item in items if not isinstance(item, Sample))
        inputs = self.encode(samples, stats) if samples else {}
        return Batch(inputs, dict(stats))

    def encode(self, samples: list[Sample], stats: collections.Counter | None = None) -> dict[str, Any]:
        stats = stats if stats is not None else collections.Counter()
        stats.update(change for s in samples for change in s.meta.get(ALTERED, ()))  # e.g. tiled_images
        encoded = self.processor(text=[s.prompt for s in samples], images=[s.image for s in samples],
                                 return_tensors="pt", padding=True)
        input_ids, attention_mask = self._fit_prompts(encoded["input_ids"], encoded["attention_mask"], stats)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "pixel_values": encoded["pixel_values"]}
        if self.with_labels:
            batch["labels"] = self.labels([s.target for s in samples], stats)
        return batch

    def placeholder(self) -> dict[str, Any]:
        """Model inputs of one blank sample, for a step whose every sample was unusable: under DDP every rank
        must run the model (its collectives) even when it has nothing to learn from."""
        return self.encode([Sample(id="placeholder", image=Image.new("RGB", (32, 32), "white"), prompt="<VQA>",
                                   target="")])

    def _fit_prompts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     stats: collections.Counter) -> tuple[torch.Tensor, torch.Tensor]:
        """Cut prompts that overflow the encoder's positions (image tokens come first and stay whole)."""
        rows = [ids[mask.bool()] for ids, mask in zip(input_ids, attention_mask, strict=True)]
        fitted = []
        for ids in rows:
            if len(ids) > self.max_positions:
                stats["truncated_prompts"] += 1
                ids = torch.cat([ids[: self.max_positions - 1], ids.new_tensor([self.tokenizer.eos_token_id])])
            fitted.append(ids)
        return self._pad(fitted, self.tokenizer.pad_token_id)

    def labels(self, targets: list[str], stats: collections.Counter) -> torch.Tensor:
        token_lists = self.tokenizer(targets, add_special_tokens=True)["input_ids"]
        rows = []
        for ids in token_lists:
            if len(ids) > self.max_target_tokens:
                stats["truncated_answers"] += 1
                ids = ids[: self.max_target_tokens - 1] + [self.tokenizer.eos_token_id]
            rows.append(torch.tensor(ids, dtype=torch.long))
        labels, _ = self._pad(rows, IGNORE_INDEX)
        return labels

    def _pad(self, rows: list[torch.Tensor], value: int) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        if self.pad_to_multiple_of > 1:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(rows), width), value, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask


class PixelCollator(Collator):
    """``PageSample``s → tensors; never calls the image processor.

    Returns ``pixel_values`` as uint8 (unique pages x 3 x H x W; normalised on the device by
    ``PixelSpec.normalise``, a quarter of the float32 bytes to copy), ``page_index`` (per question: its
    row in ``pixel_values``) and ``page_ids`` (the pages' numbers, for the feature cache). Prompt ids
    are the processor's (image placeholders, ``<s>``, the prompt, ``</s>``), tokenized once per distinct
    prompt. ``pad_to_multiple_of`` rounds prompt and answer lengths (8 for tensor cores; 32 under
    ``--compile`` so only a few shapes ever reach the compiled graph).
    """

    def __init__(self, processor, *, max_positions: int, max_target_tokens: int = 128, with_labels: bool = True,
                 pad_to_multiple_of: int = 8):
        super().__init__(processor, max_positions=max_positions, max_target_tokens=max_target_tokens,
                         with_labels=with_labels, pad_to_multiple_of=pad_to_multiple_of)
        self.image_ids = [processor.image_token_id] * processor.num_image_tokens
        self._prompt_ids: dict[str, list[int]] = {}

    def placeholder(self) -> dict[str, Any]:
        spec = PixelSpec.from_processor(self.processor)
        return self.encode([PageSample(id="placeholder", image=None, prompt="<VQA>", target="", page=-1,
                                       pixels=torch.full((3, spec.height, spec.width), 255, dtype=torch.uint8))])

    def prompt_ids(self, prompt: str) -> list[int]:
        ids = self._prompt_ids.get(prompt)
        if ids is None:
            # The processor's own text layout (Florence2Processor.prepare_inputs_layout); task tokens
            # such as <OD> become their instruction text first.
            text = self.processor._construct_prompts([prompt])[0]
            tokenizer = self.tokenizer
            ids = self.image_ids + tokenizer(tokenizer.bos_token + text + tokenizer.eos_token,
                                             add_special_tokens=False)["input_ids"]
            if len(self._prompt_ids) < 1_000_000:  # bounded: one entry per distinct question
                self._prompt_ids[prompt] = ids
        return ids

    def encode(self, samples: list[Any], stats: collections.Counter | None = None) -> dict[str, Any]:
        stats = stats if stats is not None else collections.Counter()
        stats.update(change for s in samples for change in s.meta.get(ALTERED, ()))
        rows = [torch.tensor(self.prompt_ids(s.prompt), dtype=torch.long) for s in samples]
        input_ids, attention_mask = self._fit_prompts(*self._pad(rows, self.tokenizer.pad_token_id), stats)
        slot: dict[int, int] = {}
        page_index = torch.tensor([slot.setdefault(s.page, len(slot)) for s in samples], dtype=torch.long)
        first = {}
        for s in samples:
            first.setdefault(s.page, s)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "pixel_values": torch.stack([s.pixels for s in first.values()]),
                 "page_index": page_index, "page_ids": torch.tensor(list(first), dtype=torch.long)}
        if self.with_labels:
            batch["labels"] = self.labels([s.target for s in samples], stats)
        return batch


def encoder_positions(model) -> int:
    """How many encoder positions (image tokens + prompt) the model has."""
    return int(model.config.text_config.max_position_embeddings)

"""The reference the benchmark compares against: training and evaluation the way the original scripts
did them, so ``florence-tune bench --compare naive`` times both on the same inputs in one process.

    florence-tune bench --compare naive

What "the original way" means here: float32 (no autocast), the processor decoding nothing but
resizing and normalising every page inside the collate function on the main process
(``num_workers=0``), every question with its own copy of its page through the vision tower, torch's
default AdamW (not fused), and generation batch by batch in dataset order.

Two things are NOT copied, because they were bugs rather than costs: the original trained on label
padding and sent no attention mask. Here padding is -100 and the mask is passed, so the reference
computes the same loss as the fast path on the same batch (tests/test_bench.py) and the ratios
compare engines, not different maths.
"""

from __future__ import annotations

import torch

from florence_tune.batch.collate import IGNORE_INDEX
from florence_tune.data.sample import Sample


class NaiveCollate:
    """``processor(text=..., images=...)`` on a batch of samples; labels from the tokenizer."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, samples):
        samples = [s for s in samples if getattr(s, "image", None) is not None]
        inputs = self.processor(text=[s.prompt for s in samples], images=[s.image for s in samples],
                                return_tensors="pt", padding=True)
        labels = self.processor.tokenizer([s.target for s in samples], return_tensors="pt", padding=True,
                                          return_token_type_ids=False)
        ids = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, IGNORE_INDEX)
        return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                "pixel_values": inputs["pixel_values"], "labels": ids}


def optimizer(model, lr: float = 1e-5):
    """torch's default AdamW (it picks the for-each kernel on GPU; never the fused one)."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)


def loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The plain forward: every question's page (already float) through the whole model."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 pixel_values=batch["pixel_values"], labels=batch["labels"]).loss


def step(model, optim, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    optim.zero_grad()
    value = loss(model, batch)
    value.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optim.step()
    return value


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, processor, dataset, *, batch_size: int, generation_config) -> list[str]:
    """The original evaluate loop: dataset order, pages decoded and processed on the main process, fp32."""

    device = next(model.parameters()).device
    answers = []
    for start in range(0, len(dataset), batch_size):
        chunk = [item for i in range(start, min(start + batch_size, len(dataset)))
                 if isinstance(item := dataset[i], Sample)]
        inputs = processor(text=[s.prompt for s in chunk], images=[s.image for s in chunk], return_tensors="pt",
                           padding=True)
        output = model.generate(input_ids=inputs["input_ids"].to(device),
                                attention_mask=inputs["attention_mask"].to(device),
                                pixel_values=inputs["pixel_values"].to(device), generation_config=generation_config)
        answers += processor.batch_decode(output, skip_special_tokens=True)
    return answers

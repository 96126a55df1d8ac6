"""The vision tower once per page: shared image features, a feature cache, checkpointed DaViT blocks.

    florence-tune train --group-by-page --page-cache auto            # full fine-tuning, one vision pass per page
    florence-tune train --strategy freeze-vision --group-by-page --feature-cache-mib 20000
    florence-tune train --gradient-checkpointing                     # BART layers and DaViT blocks

Florence-2 spends 85 % of its forward FLOPs in the DaViT vision tower (base: 380 of ~448 GFLOP per
768x768 page and ~30 text tokens). ``PagePath`` takes a batch from ``PixelCollator`` (uint8 unique
pages + which question looks at which page), normalises the pages on the device, runs the tower and
projector once per unique page, gathers the features per question (``index_select``) and hands the
model ``inputs_embeds`` with the image placeholders filled — exactly what
``Florence2Model.forward`` does itself with ``pixel_values``, so the loss and every gradient are the
same as the plain path (tests/test_vision.py); the backward of ``index_select`` sums each page's
gradient over its questions.

With the tower frozen and no augmentation, its output for a page never changes: ``FeatureCache``
keeps it (on the device, up to a size budget) so later epochs skip the tower altogether. The frozen
tower then runs in eval mode (no stochastic depth): a frozen module has nothing to regularise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from florence_tune.batch.pages import PixelSpec

log = logging.getLogger(__name__)


def base_model(model):
    """The ``Florence2ForConditionalGeneration`` inside a peft or DDP wrapper (or the model itself)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def vision_trains(model) -> bool:
    return any(p.requires_grad for p in base_model(model).model.vision_tower.parameters())


class FeatureCache:
    """Vision-tower outputs by page number, kept on the device until ``budget_mib`` is used up.

    No eviction: every page is visited once per epoch, so keeping the first pages that fit saves as
    much as any other choice. Base at 768x768: 576 x 1024 float32 = 2.25 MiB per page.
    """

    def __init__(self, budget_mib: int):
        self.budget = int(budget_mib) * 2**20
        self.used = 0
        self.store: dict[int, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def get(self, page: int) -> torch.Tensor | None:
        found = self.store.get(page)
        self.hits += found is not None
        self.misses += found is None
        return found

    def put(self, page: int, features: torch.Tensor) -> None:
        size = features.numel() * features.element_size()
        if page not in self.store and self.used + size <= self.budget:
            self.store[page] = features.detach().clone()  # a clone: a view would pin the whole batch
            self.used += size


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class PagePath:
    """Turns a ``PixelCollator`` batch into model inputs (training) or answers (generation)."""

    def __init__(self, spec: PixelSpec, feature_cache: FeatureCache | None = None):
        self.spec = spec
        self.features = feature_cache

    def image_features(self, model, pixels: torch.Tensor, page_ids: list[int] | None = None) -> torch.Tensor:
        """Projected features of each unique page: (pages, image tokens, d_model)."""
        florence = base_model(model).model
        if vision_trains(model):
            return florence.get_image_features(pixels).pooler_output
        return florence.multi_modal_projector(self.tower_outputs(florence.vision_tower, pixels, page_ids))

    def tower_outputs(self, tower, pixels: torch.Tensor, page_ids: list[int] | None) -> torch.Tensor:
        """The frozen tower's outputs, from the feature cache where it has them."""
        if self.features is None or page_ids is None:
            with torch.no_grad():
                return tower(pixels).last_hidden_state
        found = [self.features.get(int(p)) for p in page_ids]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            with torch.no_grad(), eval_mode(tower):
                computed = tower(pixels[missing]).last_hidden_state
            for row, i in enumerate(missing):
                found[i] = computed[row]
                self.features.put(int(page_ids[i]), computed[row])
        return torch.stack(found)

    def model_inputs(self, model, batch: dict[str, Any]) -> dict[str, Any]:
        """``{input_ids, pixel_values (uint8 pages), page_index, page_ids, ...}`` → ``{inputs_embeds, ...}``."""
        batch = dict(batch)
        pixels = self.spec.normalise(batch.pop("pixel_values"), _dtype(model))
        page_index, page_ids = batch.pop("page_index"), batch.pop("page_ids", None)
        features = self.image_features(model, pixels, page_ids).index_select(0, page_index)
        batch["inputs_embeds"] = fill_image_tokens(model, batch.pop("input_ids"), features)
        return batch

    @torch.no_grad()
    def generate(self, model, batch: dict[str, Any], generation_config) -> torch.Tensor:
        """Token ids for a ``PixelCollator`` batch; pages go through the tower once, beams share them."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        device = next(model.parameters()).device
        pixels = self.spec.normalise(batch["pixel_values"].to(device), _dtype(model))
        features = self.image_features(model, pixels, batch.get("page_ids"))
        features = features.index_select(0, batch["page_index"].to(device))
        return model.generate(input_ids=batch["input_ids"].to(device),
                              attention_mask=batch["attention_mask"].to(device),
                              mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=features)},
                              generation_config=generation_config)


def fill_image_tokens(model, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Prompt embeddings with the image placeholders replaced by ``features`` (Florence2Model's own steps).

    Without ``get_placeholder_mask``'s count check: it reads a device value on the host every step (a
    sync). The collators guarantee the count: every prompt starts with all its image tokens, and
    truncation never cuts into them.
    """
    florence = base_model(model)
    embeds = florence.get_input_embeddings()(input_ids)
    mask = (input_ids == florence.config.image_token_id).unsqueeze(-1)
    return embeds.masked_scatter(mask, features.to(embeds.device, embeds.dtype))


def _dtype(model) -> torch.dtype:
    return next(base_model(model).model.vision_tower.parameters()).dtype

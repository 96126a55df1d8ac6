"""Vision once per page: the same loss, gradients and answers as the plain path; checkpointing changes nothing."""

import pytest
import torch

from florence_tune.batch.pages import PixelSpec
from florence_tune.bench import parts
from florence_tune.evaluation import generation
from florence_tune.evaluation.generation import Decoding
from florence_tune.model import acceleration, page_path


@pytest.fixture()
def batch(tiny):
    """Seven questions on three pages, uint8, as PixelCollator makes them."""
    return parts.synthetic_batch(tiny[1], batch_size=7, question_tokens=6, answer_tokens=5,
                                       questions_per_page=2.5, seed=1)


def plain_inputs(batch, spec):
    """What the default path feeds the model: one float page per question."""
    return parts.naive_batch(batch, spec)


def loss_and_grads(model, run):
    model.zero_grad(set_to_none=True)
    loss = run()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(first, second):
    (loss_a, grads_a), (loss_b, grads_b) = first, second
    assert torch.allclose(loss_a, loss_b, atol=1e-6, rtol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-4), name


def test_per_page_path_gives_the_plain_loss_and_gradients(fresh_tiny, batch):
    model, processor = fresh_tiny
    model.train()
    spec = PixelSpec.from_processor(processor)
    assert len(batch["page_ids"]) == 3
    plain = loss_and_grads(model, lambda: model(**plain_inputs(batch, spec)).loss)
    paged = loss_and_grads(model, lambda: model(**page_path.PagePath(spec).model_inputs(model, batch)).loss)
    assert_same(plain, paged)
    assert any(name.startswith("model.vision_tower.") for name in paged[1])


def test_feature_cache_gives_the_plain_loss_and_gradients(fresh_tiny, batch):
    model, processor = fresh_tiny
    model.model.vision_tower.requires_grad_(False)
    model.train()
    spec = PixelSpec.from_processor(processor)
    plain = loss_and_grads(model, lambda: model(**plain_inputs(batch, spec)).loss)
    cache = page_path.FeatureCache(64)
    path = page_path.PagePath(spec, cache)
    for _ in range(2):  # the first pass fills the cache, the second reads it
        assert_same(plain, loss_and_grads(model, lambda: model(**path.model_inputs(model, batch)).loss))
    assert (cache.misses, cache.hits) == (3, 3) and len(cache.store) == 3


def test_vision_checkpointing_gives_the_same_gradients(fresh_tiny, batch):
    model, processor = fresh_tiny
    model.train()
    spec = PixelSpec.from_processor(processor)
    path = page_path.PagePath(spec)
    before = loss_and_grads(model, lambda: model(**path.model_inputs(model, batch)).loss)
    assert acceleration.checkpoint_vision_blocks(model) == sum(model.config.vision_config.depths)
    assert acceleration.checkpoint_vision_blocks(model) == 0, "wrapping twice would recompute twice"
    assert "model.vision_tower.blocks.0.0.spatial_block.conv1.weight" in model.state_dict()
    assert_same(before, loss_and_grads(model, lambda: model(**path.model_inputs(model, batch)).loss))


def test_generation_with_shared_pages_gives_the_plain_answers(tiny, batch):
    model, processor = tiny
    spec = PixelSpec.from_processor(processor)
    config = generation.generation_config(processor, Decoding(num_beams=2, max_new_tokens=6))
    plain = plain_inputs(batch, spec)
    expected = model.generate(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"],
                              pixel_values=plain["pixel_values"], generation_config=config)
    assert torch.equal(page_path.PagePath(spec).generate(model, batch, config), expected)

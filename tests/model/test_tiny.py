"""The embedded tiny model: real Florence-2 classes, Florence-2's tokens, built deterministically."""

import filecmp

import torch
from transformers import Florence2ForConditionalGeneration, Florence2Processor

from florence_tune.model import tiny as tiny_module


def test_tiny_is_a_real_florence2_with_its_processor(tiny):
    model, processor = tiny
    assert isinstance(model, Florence2ForConditionalGeneration)
    assert isinstance(processor, Florence2Processor)
    assert processor.num_image_tokens == tiny_module.IMAGE_SEQ_LENGTH
    assert sum(p.numel() for p in model.parameters()) < 3_000_000


def test_tokenizer_carries_florence_special_tokens(tiny):
    _, processor = tiny
    tokenizer = processor.tokenizer
    for token in ["<loc_0>", "<loc_999>", "<od>", "</od>", "<ocr>", "<cap>", "<poly>", "<image>"]:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tokenizer.unk_token_id, token
    assert "<loc_1000>" not in tokenizer.get_vocab()
    assert tokenizer.image_token_id == processor.image_token_id


def test_build_is_deterministic():
    first, _ = tiny_module.build_tiny(seed=0)
    second, _ = tiny_module.build_tiny(seed=0)
    other, _ = tiny_module.build_tiny(seed=1)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    pairs = zip(first.state_dict().values(), other.state_dict().values(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)


def test_shipped_tokenizer_files_are_reproducible(tmp_path):
    tiny_module.write_tokenizer_files(tmp_path)
    shipped = tiny_module.Path(tiny_module.__file__).parent.parent / "assets" / "tiny_tokenizer"
    for name in ["vocab.json", "merges.txt"]:
        assert filecmp.cmp(tmp_path / name, shipped / name, shallow=False), name

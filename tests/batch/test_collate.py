"""The collator: -100 on label padding, attention masks, prompt/answer truncation, skipped samples."""

import collections

import pytest
import torch
import torch.nn.functional as F

from florence_tune.batch.collate import IGNORE_INDEX, Collator, encoder_positions
from florence_tune.data import Skipped
from florence_tune.data.sample import Sample


def make_samples(image, answers=("12.50", "a much longer answer with many words in it")):
    return [Sample(id=str(i), image=image, prompt=f"<VQA>Question number {i}?", target=a, references=[a])
            for i, a in enumerate(answers)]


@pytest.fixture(scope="module")
def collator(tiny):
    model, processor = tiny
    return Collator(processor, max_positions=encoder_positions(model), max_target_tokens=16)


def test_label_padding_is_masked_with_ignore_index(collator, page_image, tiny):
    tokenizer = tiny[1].tokenizer
    labels = collator(make_samples(page_image)).inputs["labels"]
    short = labels[0]
    n_real = len(tokenizer("12.50")["input_ids"])
    assert (short[:n_real] != IGNORE_INDEX).all()
    assert (short[n_real:] == IGNORE_INDEX).all() and len(short) > n_real
    assert not (labels == tokenizer.pad_token_id).any(), "pad ids must never be learning targets"
    # Label layout matches what the pretrained checkpoints generate: <s> answer </s>.
    assert short[0] == tokenizer.bos_token_id and short[n_real - 1] == tokenizer.eos_token_id


def test_prompt_padding_has_zero_attention_mask(collator, page_image, tiny):
    tokenizer = tiny[1].tokenizer
    samples = make_samples(page_image)
    samples[1].prompt = "<VQA>" + "a very long question " * 10
    batch = collator(samples).inputs
    mask, ids = batch["attention_mask"], batch["input_ids"]
    assert ids.shape == mask.shape and ids.shape[1] % 8 == 0
    assert ((ids == tokenizer.pad_token_id) == (mask == 0)).all()
    assert mask[0].sum() < mask[1].sum()


def test_model_loss_is_cross_entropy_over_labels_shifted_once(collator, page_image, tiny):
    model, processor = tiny
    batch = collator(make_samples(page_image)).inputs
    labels = batch["labels"]
    with torch.no_grad():
        loss = model(**batch).loss
        # Decoder input by hand: start token, then the labels moved right by exactly one position.
        start = torch.full((labels.shape[0], 1), model.config.text_config.decoder_start_token_id)
        decoder_input = torch.cat([start, labels[:, :-1]], dim=1)
        decoder_input[decoder_input == IGNORE_INDEX] = processor.tokenizer.pad_token_id
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, decoder_input_ids=decoder_input).logits
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, expected)


def test_overlong_prompt_is_truncated_and_counted(collator, page_image, tiny):
    model, processor = tiny
    sample = make_samples(page_image)[0]
    sample.prompt = "<VQA>" + "word " * 3000
    batch, stats = collator([sample])
    assert stats == {"truncated_prompts": 1}
    real = batch["input_ids"][0][batch["attention_mask"][0].bool()]
    assert len(real) == encoder_positions(model)
    assert real[-1] == processor.tokenizer.eos_token_id
    assert (real[: processor.num_image_tokens] == processor.image_token_id).all(), "image tokens stay whole"
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_overlong_answer_is_truncated_and_counted(collator, page_image, tiny):
    sample = make_samples(page_image, answers=("word " * 200,))[0]
    batch, stats = collator([sample])
    assert stats == {"truncated_answers": 1}
    labels = batch["labels"][0]
    assert (labels != IGNORE_INDEX).sum() == 16
    assert labels[15] == tiny[1].tokenizer.eos_token_id


def test_skipped_items_are_dropped_and_counted(collator, page_image):
    samples = make_samples(page_image, ("a", "b"))
    items = [Skipped("image_corrupt"), *samples, Skipped("image_corrupt"), Skipped("no_answer")]
    batch, stats = collator(items)
    assert batch["input_ids"].shape[0] == 2 and "stats" not in batch, "counters never reach the model"
    assert collections.Counter(stats) == {"skipped_image_corrupt": 2, "skipped_no_answer": 1}


def test_all_skipped_batch_has_only_stats(collator):
    batch = collator([Skipped("image_missing")])
    assert batch.empty and batch.inputs == {} and batch.stats == {"skipped_image_missing": 1}

"""Batched generation: explicit decoding options, attention masks honoured, baseline, skipped rows."""

import torch

from florence_tune.batch.collate import Collator, encoder_positions
from florence_tune.data import Skipped
from florence_tune.data.sample import Sample
from florence_tune.evaluation import generation, loop, records
from florence_tune.evaluation.generation import Decoding


def encode(tiny, samples):
    model, processor = tiny
    return Collator(processor, max_positions=encoder_positions(model), with_labels=False)(samples).inputs


def test_generation_options_are_explicit(tiny):
    config = generation.generation_config(tiny[1], Decoding(num_beams=3, max_new_tokens=20))
    assert config.no_repeat_ngram_size == 0
    tokenizer = tiny[1].tokenizer  # answers start with <s> and end with </s>, whatever a checkpoint says
    assert (config.forced_bos_token_id, config.forced_eos_token_id) == (tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert (config.num_beams, config.max_new_tokens, config.do_sample) == (3, 20, False)


def test_checkpoint_generation_defaults_do_not_leak_in(fresh_tiny, page_image):
    model, processor = fresh_tiny
    batch = encode(fresh_tiny, [Sample("1", page_image, "<VQA>What is the total?", "")])
    config = generation.generation_config(processor, Decoding(num_beams=1, max_new_tokens=12))
    ids_before = model.generate(**batch, generation_config=config)
    # BART-style checkpoint defaults: one that would forbid repeating any token, forced first and last tokens
    model.generation_config.no_repeat_ngram_size = 1
    model.generation_config.forced_bos_token_id = 7
    model.generation_config.forced_eos_token_id = 9
    ids_after = model.generate(**batch, generation_config=config)
    assert torch.equal(ids_before, ids_after)
    tokens = ids_before[0].tolist()
    assert len(set(tokens[2:])) < len(tokens[2:]), "untrained model should repeat tokens; test would be vacuous"


def test_padded_batch_gives_same_answers_as_alone(tiny, page_image):
    model, processor = tiny
    config = generation.generation_config(processor, Decoding(num_beams=1, max_new_tokens=8))
    short = Sample("1", page_image, "<VQA>Total?", "")
    long = Sample("2", page_image, "<VQA>" + "What is written in the box at the top of the page " * 4, "")
    alone = generation.generate(model, processor, encode(tiny, [short]), config)
    padded_batch = encode(tiny, [short, long])
    assert padded_batch["attention_mask"][0].sum() < padded_batch["attention_mask"][1].sum()
    together = generation.generate(model, processor, padded_batch, config)
    assert together[0] == alone[0]


def test_majority_baseline_answers_most_frequent_per_group():
    def sample(group, answer):
        return Sample("x", None, "q", answer, [answer], {"question_type": group})

    train = [sample("colour", "red"), sample("colour", "red"), sample("colour", "blue"), sample("type", "form")]
    evaluation_set = [sample("colour", "red"), sample("colour", "blue"), sample("type", "form")]
    assert records.majority_baseline(train, evaluation_set) == 2 / 3


class InMemory(list):
    """What the evaluation loop asks of a split, over a list: this rank's keyed share, no page view."""

    random_access = False

    def share(self):
        return (((index, 0), item) for index, item in enumerate(self)), len(self)


def test_predict_dataset_counts_skipped_rows_and_scores(tiny, page_image):
    model, processor = tiny
    data = InMemory([Sample("1", page_image, "<VQA>a?", "x", ["x"], {"question": "a?"}), Skipped("image_corrupt"),
                        Sample("2", page_image, "<VQA>b?", "y", ["y"], {"question": "b?"})])
    found, skipped = loop.predict_dataset(model, processor, data, batch_size=2,
                                          decoding=Decoding(num_beams=1, max_new_tokens=4), progress=False)
    assert [r["question_id"] for r in found] == ["1", "2"]
    # the untrained model never ends an answer within 4 tokens: both are cut short, and counted
    assert skipped == {"skipped_image_corrupt": 1, "cut_answers": 2}
    assert {"question_id", "question", "prediction", "references", "anls"} <= set(found[0])
    summary = records.summarise(found)
    assert summary["n"] == 2 and 0.0 <= summary["anls"] <= 1.0


def test_majority_baseline_reads_each_input_once_and_falls_back_to_the_overall_answer():
    def sample(group, answer):
        return Sample("x", None, "q", answer, [answer], {"question_type": group})

    train = [sample("colour", "red"), sample("colour", "red"), sample("type", "form")]
    unseen_group = [sample("date", "red"), sample("colour", "red")]  # no training question of type 'date'
    # iterators, as training passes them: the fallback is the most frequent answer overall ('red'), not ''
    assert records.majority_baseline(iter(train), iter(unseen_group)) == 1.0


def test_the_image_blind_baseline_counts_questions_only():
    """Detection, OCR and caption samples are not questions: a set of them has no blind VQA baseline."""
    boxes = Sample("x", None, "<OD>", "table<loc_1><loc_1><loc_9><loc_9>", [], {"task": "<OD>"})
    caption = Sample("y", None, "<CAPTION>", "a page", ["a page"], {"task": "<CAPTION>"})
    assert records.majority_baseline([boxes, caption] * 3, [boxes, caption]) is None
    question = Sample("z", None, "<VQA>q", "red", ["red"], {"question_type": "colour"})
    assert records.majority_baseline([boxes, question], [caption, question]) == 1.0

"""Prediction records: each question judged by its source's metric, reported per source and over all questions."""

import pytest

from florence_tune.data.sample import Sample
from florence_tune.evaluation import generation, records


def question(answer_id, references, metric="anls", dataset="docvqa"):
    return Sample(answer_id, None, "<VQA>q?", references[0], references, {"metric": metric, "dataset": dataset})


def test_each_question_is_scored_by_its_sources_metric_and_reported_per_source_and_overall():
    humans = ["2"] * 2 + ["3"] * 8  # VQA: 2 of 10 humans said "2"
    found = [
        records.score_record(question("c1", ["100"], "relaxed_accuracy", "chartqa"), "104.9"),  # within 5 %
        records.score_record(question("c2", ["100"], "relaxed_accuracy", "chartqa"), "106"),
        records.score_record(question("v1", humans, "vqa_accuracy", "vqav2"), "two"),
        records.score_record(question("a1", ["Answer: B"], "multiple_choice_accuracy", "ai2d"), "(b)"),
        records.score_record(question("d1", ["total due"], "anls", "docvqa"), "total dve"),
    ]
    assert [r["score"] for r in found] == [1.0, 0.0, pytest.approx(0.6), 1.0, pytest.approx(1 - 1 / 9)]
    assert found[0]["anls"] < 1.0  # ANLS would have judged ChartQA's "104.9" wrong
    summary = records.summarise(found)
    assert summary["by_source"] == {
        "ai2d": {"metric": "multiple_choice_accuracy", "score": 1.0, "n": 1},
        "chartqa": {"metric": "relaxed_accuracy", "score": 0.5, "n": 2},
        "docvqa": {"metric": "anls", "score": pytest.approx(1 - 1 / 9), "n": 1},
        "vqav2": {"metric": "vqa_accuracy", "score": pytest.approx(0.6), "n": 1},
    }
    assert summary["source_score"] == pytest.approx((1 + 0 + 0.6 + 1 + (1 - 1 / 9)) / 5)  # the mean over questions
    assert summary["anls"] == pytest.approx(sum(r["anls"] for r in found) / 5)  # ANLS over all stays as it was


def test_records_of_other_tasks_have_no_source_score():
    ocr = Sample("o", None, "<OCR>", "TOTAL", ["TOTAL"], {"task": "<OCR>"})
    summary = records.summarise([records.score_record(ocr, "TOTAL")])
    assert "source_score" not in summary and "by_source" not in summary and summary["cer"] == 0.0


def test_answers_cut_by_the_token_limit_are_counted():
    import torch

    config = type("Config", (), {"max_new_tokens": 4, "min_new_tokens": None, "eos_token_id": 2, "pad_token_id": 1})()
    output = torch.tensor([[2, 0, 5, 6, 2],   # ran to the limit: the forced end token is the last one
                           [2, 0, 5, 2, 1],   # ended, then padding
                           [2, 0, 2, 1, 1]])  # ended at once
    assert generation.cut_answers(output, config) == 1
    assert generation.cut_answers(output[:, :4], config) == 0  # shorter than the limit: nothing was cut
    config.min_new_tokens = 4  # the benchmark makes every answer that long on purpose
    assert generation.cut_answers(output, config) == 0


def test_a_region_tasks_record_keeps_its_prompt_box_for_the_report():
    sample = Sample("r", None, "<REGION_TO_CATEGORY><loc_0><loc_0><loc_9><loc_9>", "stamp<loc_0><loc_0><loc_9><loc_9>",
                    ["stamp<loc_0><loc_0><loc_9><loc_9>"], {"task": "<REGION_TO_CATEGORY>", "region": [0, 0, 2, 1]})
    record = records.score_record(sample, "stamp<loc_0><loc_0><loc_9><loc_9>")
    assert record["region"] == [0, 0, 2, 1] and record["prediction"] == "stamp" and record["exact_match"] == 1.0


def test_a_mixture_of_tasks_reports_each_task_apart_from_the_pooled_numbers():
    found = [records.score_record(question("q1", ["yes"]), "yes"), records.score_record(question("q2", ["no"]), "x"),
             records.score_record(Sample("c", None, "<REGION_TO_CATEGORY><loc_0>", "stamp", ["stamp"],
                                         {"task": "<REGION_TO_CATEGORY>"}), "stamp")]
    summary = records.summarise(found)
    assert summary["exact_match"] == pytest.approx(2 / 3)  # pooled over both tasks that choose it
    assert summary["by_task"]["<VQA>"]["exact_match"] == 0.5 and summary["by_task"]["<VQA>"]["n"] == 2
    assert summary["by_task"]["<REGION_TO_CATEGORY>"] == {"exact_match": 1.0, "n": 1}
    assert "by_task" not in records.summarise(found[:2])  # one task: nothing to separate

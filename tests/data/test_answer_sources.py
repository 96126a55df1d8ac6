"""Which metric judges a question, decided once, where its source is known: a Cauldron configuration, DocVQA,
or the ``metric`` / ``source`` fields of the user's JSON lines."""

import json

from PIL import Image

from florence_tune import data, tasks
from florence_tune.data import Skipped


def first(spec, split="validation", **options):
    dataset = data.load(spec, split, **options)
    return dataset.text_item(0)


def test_cauldron_configurations_and_docvqa_name_their_benchmarks_metric(hub):
    chart, diagram = first("cauldron:chartqa"), first("cauldron:ai2d")
    assert (chart.meta["dataset"], chart.meta["metric"]) == ("chartqa", "relaxed_accuracy")
    assert (diagram.meta["dataset"], diagram.meta["metric"]) == ("ai2d", "multiple_choice_accuracy")
    document = first("docvqa")
    assert (document.meta["dataset"], document.meta["metric"]) == ("docvqa", "anls")


def test_json_lines_choose_their_metric_and_source_per_row(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "p.png")
    lines = [{"image": "p.png", "question": "How many?", "answers": ["2"] * 10, "metric": "vqa_accuracy",
              "source": "counting"},
             {"image": "p.png", "question": "What?", "answers": ["x"]},
             {"image": "p.png", "question": "Which?", "answers": ["B"], "metric": "multiple_choise"},
             {"image": "p.png", "prefix": "<VQA>What is the 2019 value?", "suffix": "41.2",
              "metric": "relaxed_accuracy", "source": "charts"}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    dataset = data.load(str(tmp_path / "q.jsonl"), "train", holdout_rows=0)
    found = [dataset.text_item(i) for i in range(4)]
    assert (found[0].meta["metric"], found[0].meta["dataset"]) == ("vqa_accuracy", "counting")
    assert (found[1].meta["metric"], found[1].meta["dataset"]) == ("anls", str(tmp_path / "q.jsonl"))
    assert found[2] == Skipped("unknown_metric")
    assert (found[3].meta["metric"], found[3].meta["dataset"]) == ("relaxed_accuracy", "charts")  # maestro-style


def test_every_metric_a_source_can_name_is_one_evaluation_computes():
    from florence_tune.data.adapters import cauldron
    from florence_tune.evaluation import answer_metrics

    assert set(tasks.ANSWER_METRICS) == set(answer_metrics.BY_NAME)
    assert set(cauldron.METRICS.values()) <= set(tasks.ANSWER_METRICS)
    assert set(cauldron.METRICS) <= set(cauldron.CAULDRON_CONFIGS)

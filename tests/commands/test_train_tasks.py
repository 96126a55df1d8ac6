"""``florence-tune train --dataset synthetic:<task>`` for every task: it trains, evaluates before and after with
the task's own metrics, and reports them (summary.json, model card, report)."""

import json

import pytest

from florence_tune.cli import main
from florence_tune.data.adapters.tasks import TASK_NAMES
from florence_tune.evaluation import task_metrics

# each task once, under its own name
NAMES = sorted(name for name, task in TASK_NAMES.items() if name == task.strip("<>").lower())
QUICK = ["--max-steps", "2", "--batch-size", "2", "--max-eval-samples", "4", "--num-beams", "1",
         "--max-new-tokens", "12", "--report-to", "none", "--logging-steps", "1"]


@pytest.mark.parametrize("name", NAMES)
def test_every_synthetic_task_trains_and_is_scored_by_its_own_metrics(name, tmp_path, capsys):
    run = tmp_path / name
    assert main(["train", "--dataset", f"synthetic:{name}", "--output-dir", str(run), *QUICK]) == 0
    summary = json.loads((run / "summary.json").read_text())
    expected = task_metrics.defaults_for(TASK_NAMES[name])
    # the task's metrics and no other (a metric with nothing to score, such as precision without any predicted
    # field, is left out); its first metric always has a value
    assert expected[0] in summary["metrics_before"] and expected[0] in summary["metrics_after"]
    assert set(summary["metrics_before"]) | set(summary["metrics_after"]) <= set(expected)
    card = (run / "README.md").read_text()
    assert f"| {task_metrics_label(expected[0])} |" in card
    assert f"`{TASK_NAMES[name]}`" in card  # the task the run was evaluated on
    first = json.loads((run / "predictions.jsonl").read_text().splitlines()[0])
    assert first["task"] == TASK_NAMES[name]


def task_metrics_label(metric: str) -> str:
    from florence_tune.reporting import model_card

    return model_card.LABELS.get(metric, metric)


def test_predict_prints_each_kind_of_answer_as_evaluation_reads_it(tiny):
    """Polygons, text-line quads and a region's words, in pixels of the page (bin centres), labels kept whole."""
    from florence_tune import tasks
    from florence_tune.commands import predict

    _, processor = tiny
    size = (200, 100)
    polygon = [0, 0, 100, 0, 100, 50]
    printed = predict.reading(processor, tasks.encode_polygons([""], [[polygon]], size),
                              tasks.REGION_TO_SEGMENTATION, size)
    assert list(printed) == ["polygons", "labels"] and len(printed["polygons"][0][0]) == 6
    assert printed["polygons"][0][0] == [0.1, 0.05, 100.1, 0.05, 100.1, 50.05]
    quads = predict.reading(processor, tasks.encode_lines(["café 12"], [tasks.quad_of([0, 0, 100, 50])], size),
                            tasks.OCR_WITH_REGION, size)
    assert quads["labels"] == ["café 12"] and len(quads["quad_boxes"][0]) == 8
    words = tasks.region_text(tasks.REGION_TO_CATEGORY, "stamp", [0, 0, 100, 50], size)
    assert predict.reading(processor, words, tasks.REGION_TO_CATEGORY, size) == "stamp"

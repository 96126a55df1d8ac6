"""The HTML report: grouping maths, numbers traced back to the run's own files, comparison deltas."""

import html
import json
import re

import pytest
import yaml

from florence_tune.cli import main
from florence_tune.evaluation import metrics
from florence_tune.reporting import report


def record(qid, group, prediction, references, **meta):
    return {"question_id": qid, "question": f"q{qid}", "prediction": prediction, "references": references,
            "anls": metrics.anls_score(prediction, references),
            "exact_match": metrics.exact_match(prediction, references), "group": group, "meta": meta}


RECORDS = [
    record("1", "colour", "red", ["red"], doc="a"),
    record("2", "colour", "blu", ["blue"], doc="a"),        # 1 - 1/4 = 0.75
    record("3", "total", "$12.50", ["$12.50", "12.50"], doc="b"),
    record("4", "total", "9", ["$12.50"], doc="b"),         # below threshold: 0
]


@pytest.fixture()
def run_dir(tmp_path):
    (tmp_path / "predictions.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    events = [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.0}, {"step": 20, "eval_loss": 2.5},
              {"step": 20, "eval_anls": 0.6875}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    summary = {"anls_before": 0.1, "anls_after": 0.6875, "anls_blind_baseline": 0.25, "steps": 20,
               "train_samples_per_second": 12.5, "peak_memory_mib": 700.0, "data": {"skipped_image_corrupt": 3}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": "tiny", "dataset": "nowhere", "eval_split": "none"}))
    return tmp_path


def test_grouping_maths():
    groups = report.grouped_metrics(RECORDS)
    assert groups["colour"] == {"anls": (1.0 + 0.75) / 2, "exact_match": 0.5, "n": 2}
    assert groups["total"] == {"anls": 0.5, "exact_match": 0.5, "n": 2}
    by_doc = report.grouped_metrics(RECORDS, column="doc")
    assert set(by_doc) == {"a", "b"} and by_doc["b"]["anls"] == 0.5


def test_worst_are_lowest_anls_first():
    assert [r["question_id"] for r in report.worst(RECORDS, 2)] == ["4", "2"]


def cells(text: str) -> list[str]:
    return [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", text)]


def test_every_number_comes_from_the_run_files(run_dir):
    text = report.write_report(run_dir).read_text()
    values = cells(text)
    overall = metrics.score_predictions(RECORDS)
    summary = json.loads((run_dir / "summary.json").read_text())
    for expected in [overall["anls"], overall["exact_match"], summary["anls_before"], summary["anls_blind_baseline"],
                     summary["train_samples_per_second"], summary["peak_memory_mib"]]:
        assert f"{expected:.4f}" in values, expected
    groups = report.grouped_metrics(RECORDS)
    for name, scores in groups.items():
        row = values[values.index(name): values.index(name) + 4]
        assert row == [name, str(scores["n"]), f"{scores['anls']:.4f}", f"{scores['exact_match']:.4f}"]
    assert "skipped_image_corrupt" in values and "3" in values
    assert text.count("data:image/png;base64,") == 2  # loss curve and metric curve
    assert "blu" in text and "$12.50" in html.unescape(text)


def test_comparison_shows_deltas_per_group(run_dir, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    better = [dict(r, prediction=r["references"][0], anls=1.0, exact_match=1.0) for r in RECORDS]
    (other / "predictions.jsonl").write_text("\n".join(json.dumps(r) for r in better) + "\n")
    out = report.write_comparison(run_dir, other, output=other / "cmp.html")
    values = cells(out.read_text())
    row = values[values.index("colour"): values.index("colour") + 4]
    assert row == ["colour", "0.8750", "1.0000", "0.1250"]


def test_report_command_and_bad_input(run_dir, capsys, tmp_path):
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "pass a run directory" in capsys.readouterr().err


def test_rebuilding_a_report_reopens_the_evaluation_split_for_its_pages(tmp_path, capsys):
    """``report RUN`` reads the run's config.yaml to find the pages of its worst predictions again."""
    run = tmp_path / "run"
    assert main(["train", "--max-steps", "1", "--batch-size", "2", "--max-eval-samples", "3", "--num-beams", "1",
                 "--max-new-tokens", "2", "--no-eval-before", "--report-to", "none", "--output-dir", str(run)]) == 0
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    assert html.unescape((run / "report.html").read_text()).count("data:image/jpeg;base64,") == 3


def test_a_line_cut_short_by_a_kill_is_skipped_with_a_note(run_dir, capsys):
    """report on a killed run: metrics.jsonl ends in half a line; the report is written, the line skipped."""
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 30, "lo')
    assert main(["report", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "metrics.jsonl" in err and "skipped 1 damaged line" in err
    assert (run_dir / "report.html").exists()


def test_group_by_a_column_no_prediction_has_is_refused_before_any_work(run_dir, capsys, monkeypatch):
    """--group-by with a typo would put every question under 'unknown': one line naming the columns there are,
    before the evaluation split is opened again for the gallery."""
    monkeypatch.setattr(report, "_dataset_from_config", lambda config: pytest.fail("opened the dataset"))
    assert main(["report", str(run_dir), "--group-by", "docs"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--group-by 'docs'" in err[0] and "doc, group, " in err[0], err
    assert not (run_dir / "report.html").exists()
    assert main(["report", "--compare", str(run_dir), str(run_dir), "--group-by", "docs", "--output",
                 str(run_dir / "cmp.html")]) == 2
    assert "--group-by 'docs'" in capsys.readouterr().err and not (run_dir / "cmp.html").exists()


def test_missing_values_show_as_a_dash(run_dir, tmp_path_factory):
    """No predictions yet, a group only one run has, a column without a value: a dash, never Python's None."""
    (run_dir / "predictions.jsonl").write_text(json.dumps(record("5", "date", "x", ["x"], doc=None)) + "\n")
    text = html.unescape(report.write_report(run_dir, column="doc").read_text())
    assert "None" not in text and cells(text)[cells(text).index("unknown") + 1] == "1"
    (run_dir / "predictions.jsonl").unlink()
    text = html.unescape(report.write_report(run_dir).read_text())
    assert "None" not in text
    assert cells(text)[cells(text).index("ANLS (predictions.jsonl)") + 1] == "—"
    other = tmp_path_factory.mktemp("other")
    (other / "predictions.jsonl").write_text(json.dumps(RECORDS[0]) + "\n")
    (run_dir / "predictions.jsonl").write_text(json.dumps(RECORDS[2]) + "\n")
    values = cells(report.write_comparison(run_dir, other, output=other / "cmp.html").read_text())
    assert "None" not in values and values[values.index("colour"): values.index("colour") + 4] == [
        "colour", "—", "1.0000", "—"]


def test_worst_pages_are_ranked_by_their_own_tasks_metric_and_their_regions_drawn(tiny):
    """A page of boxes ranks by its mAP@.5, a question by its source's metric; the thumbnail shows the predicted
    polygon in red and the reference in green."""
    import base64
    import io

    from PIL import Image

    from florence_tune import tasks
    from florence_tune.data.sample import Sample
    from florence_tune.evaluation import records as prediction_records

    _, processor = tiny
    size = (200, 100)
    target = tasks.encode_objects(["stamp"], [[0, 0, 100, 50]], size)
    boxes = Sample("od", None, "<OD>", target, [target], {"task": "<OD>", "image_size": list(size)})
    right = prediction_records.score_record(boxes, target, processor)
    wrong = prediction_records.score_record(boxes, tasks.encode_objects(["stamp"], [[100, 50, 200, 100]], size),
                                            processor)
    chart = Sample("c", None, "<VQA>q", "100", ["100"], {"metric": "relaxed_accuracy", "dataset": "chartqa"})
    close = prediction_records.score_record(chart, "103", processor)  # relaxed-correct, though its ANLS is low
    assert [r["question_id"] for r in report.worst([close, right, wrong], 1)] == ["od"]
    assert report.worst([close, right, wrong], 3)[0] is wrong and close["anls"] < 1.0
    polygon = tasks.encode_polygons([""], [[[0, 0, 100, 0, 100, 50, 0, 50]]], size)
    mask = Sample("s", None, "<REGION_TO_SEGMENTATION><loc_0>", polygon, [polygon],
                  {"task": "<REGION_TO_SEGMENTATION>", "image_size": list(size)})
    drawn = report.thumbnail(Image.new("RGB", size, "white"), prediction_records.score_record(
        mask, tasks.encode_polygons([""], [[[100, 50, 200, 50, 200, 100, 100, 100]]], size), processor))
    pixels = Image.open(io.BytesIO(base64.b64decode(drawn.split(",", 1)[1]))).convert("RGB")
    colours = {pixels.getpixel((x, y)) for x in range(pixels.width) for y in range(pixels.height)}
    assert any(r > 150 and g < 90 for r, g, _ in colours) and any(g > 90 and r < 90 for r, g, _ in colours)

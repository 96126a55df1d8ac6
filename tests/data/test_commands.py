"""The dataset settings through the commands: streamed training and evaluation, predict-only splits,
and the usage errors that catch impossible combinations before anything is read."""

import json

import pytest

from conftest import DOCVQA_SIZES
from florence_tune.cli import main

QUICK = ["--num-beams", "1", "--max-new-tokens", "4", "--report-to", "none"]


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--streaming"], "give --max-steps"),
    (["train", "--dataset", "synthetic=1,docvqa=1"], "give --max-steps"),
    (["train", "--dataset", "docvqa", "--eval-split", "test", "--max-steps", "1"], "has no answers"),
    (["train", "--holdout-rows", "-1"], "--holdout-rows must be 0 or more"),
    (["data", "inspect", "nonsense"], "accepted forms"),
    (["train", "--dataset", "docvqa=x"], "is not a number"),
])
def test_impossible_data_settings_are_one_line_usage_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_data_group_help(capsys):
    assert main(["data"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "inspect", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--split", "--streaming", "--multi-image", "--holdout-rows", "--sheet", "DATASET"):
        assert flag in text, flag


def evaluate(capsys, tmp_path, name: str, *extra: str) -> tuple[dict, list[dict]]:
    output = tmp_path / f"{name}.jsonl"
    assert main(["evaluate", "--model", "tiny", "--dataset", "docvqa", "--output", str(output), *QUICK[:4],
                 *extra]) == 0
    return last_json(capsys.readouterr().out), [json.loads(line) for line in output.read_text().splitlines()]


def test_streamed_evaluation_scores_the_same_questions(hub, tmp_path, capsys):
    mapped, mapped_rows = evaluate(capsys, tmp_path, "mapped")
    streamed, streamed_rows = evaluate(capsys, tmp_path, "streamed", "--streaming")
    assert mapped["n"] == streamed["n"] == DOCVQA_SIZES["validation"]
    assert mapped["anls"] == streamed["anls"]
    assert sorted(r["question_id"] for r in mapped_rows) == sorted(r["question_id"] for r in streamed_rows)
    assert all(r["index"] is None for r in streamed_rows), "a stream has no index to look pages up by"


def test_docvqa_test_split_gives_predictions_only(hub, tmp_path, capsys):
    summary, rows = evaluate(capsys, tmp_path, "test", "--split", "test")
    assert summary["predict_only"] and summary["n"] == DOCVQA_SIZES["test"] and "anls" not in summary
    assert len(rows) == DOCVQA_SIZES["test"] and all(r["references"] == [] for r in rows)


def test_streamed_training_evaluates_on_a_streamed_split(hub, tmp_path, capsys):
    assert main(["train", "--dataset", "docvqa", "--streaming", "--max-steps", "2", "--batch-size", "4",
                 "--output-dir", str(tmp_path / "run"), *QUICK]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["eval_loss_before"] is not None and summary["eval_loss_after"] is not None
    assert summary["anls_after"] is not None
    predictions = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == DOCVQA_SIZES["validation"]

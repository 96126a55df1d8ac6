"""Training on the Trainer: the loss falls, bad samples are skipped and counted, the run dir is complete."""

import io
import json

import datasets
import pytest

from florence_tune.commands.train import run as train
from florence_tune.config import TrainConfig
from florence_tune.data import synthetic


@pytest.fixture(scope="module")
def docvqa_folder_with_bad_rows(tmp_path_factory):
    """A save_to_disk folder in the DocVQA schema, with one corrupt image and one empty answer list."""
    records = synthetic.generate_split("train", 6, seed=3)
    png = io.BytesIO()
    records[1]["image"].save(png, format="PNG")
    records[1] = {**records[1], "image": {"bytes": png.getvalue()[: len(png.getvalue()) // 2], "path": None}}
    records[2] = {**records[2], "answers": []}
    folder = tmp_path_factory.mktemp("docvqa_local")
    split = datasets.Dataset.from_list(records, features=synthetic.FEATURES)
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(folder))
    return folder, len(records)


def test_a_few_steps_lower_the_loss_and_bad_samples_are_counted(docvqa_folder_with_bad_rows, tmp_path):
    folder, n_rows = docvqa_folder_with_bad_rows
    config = TrainConfig(dataset=str(folder), output_dir=str(tmp_path / "run"), max_steps=12, batch_size=4,
                         lr=2e-3, logging_steps=1, num_beams=1, max_new_tokens=6, eval_steps=12, save_steps=12)
    summary = train(config)
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert summary["last_train_loss"] < summary["first_train_loss"]
    assert summary["data"]["skipped_image_corrupt"] >= 1
    assert summary["data"]["skipped_no_answer"] >= 1
    # evaluation skips the same two rows and scores the rest
    assert summary["anls_after"] is not None
    predictions = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == n_rows - 2
    state = json.loads((tmp_path / "run" / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["total_flos"] > 0, "the Trainer counts the FLOPs of our batches too"


def test_an_evaluation_batch_of_only_unusable_samples_is_counted_not_fatal(tmp_path):
    """The evaluation-loss pass meets a batch whose every sample was skipped: it is counted, training goes on."""
    records = synthetic.generate_split("validation", 6, seed=4)
    for i in (0, 1):  # the whole first evaluation batch (--eval-batch-size 2)
        records[i] = {**records[i], "image": {"bytes": b"not an image", "path": None}}
    folder = tmp_path / "data"
    train_rows = datasets.Dataset.from_list(synthetic.generate_split("train", 6, seed=3), features=synthetic.FEATURES)
    datasets.DatasetDict({"train": train_rows, "validation": datasets.Dataset.from_list(
        records, features=synthetic.FEATURES)}).save_to_disk(str(folder))
    config = TrainConfig(dataset=str(folder), output_dir=str(tmp_path / "run"), max_steps=2, batch_size=2,
                         eval_batch_size=2, num_beams=1, max_new_tokens=4, report_to="none", save_steps=2)
    summary = train(config)
    assert summary["eval_loss_after"] is not None and (tmp_path / "run" / "final").is_dir()
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == len(records) - 2


def broken_copy(records: list[dict], bad: set[int]) -> list[dict]:
    return [{**r, "image": {"bytes": b"not an image", "path": None}} if i in bad else r for i, r in enumerate(records)]


def test_an_update_with_nothing_usable_moves_neither_the_weights_nor_the_schedule(tmp_path):
    import torch

    records = broken_copy(synthetic.generate_split("train", 8, seed=3)[:8], bad={0, 2, 5, 7})
    folder = tmp_path / "data"
    rows = datasets.Dataset.from_list(records, features=synthetic.FEATURES)
    datasets.DatasetDict({"train": rows, "validation": rows.select([1])}).save_to_disk(str(folder))
    # batches of one over one epoch: exactly four updates have nothing to learn from, in any order
    config = TrainConfig(dataset=str(folder), output_dir=str(tmp_path / "run"), max_steps=8, batch_size=1,
                         lr=1e-3, logging_steps=1, num_beams=1, max_new_tokens=4, report_to="none", save_steps=8,
                         eval_before=False)
    summary = train(config)
    assert summary["empty_updates"] == 4 and summary["skipped_updates"] == 0
    checkpoint = tmp_path / "run" / "checkpoint-8"
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert {int(state["step"]) for state in optimizer["state"].values()} == {4}, "Adam moved on real updates only"
    assert torch.load(checkpoint / "scheduler.pt", weights_only=True)["last_epoch"] == 4


def test_a_split_with_no_usable_sample_stops_before_training_with_its_reasons(tmp_path, capsys):
    from florence_tune.cli import main

    records = synthetic.generate_split("train", 6, seed=3)
    folder = tmp_path / "data"
    rows = datasets.Dataset.from_list(records, features=synthetic.FEATURES)
    broken = datasets.Dataset.from_list(broken_copy(records, bad=set(range(len(records)))),
                                        features=synthetic.FEATURES)
    datasets.DatasetDict({"train": broken, "validation": rows}).save_to_disk(str(folder))
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--dataset", str(folder), "--output-dir", str(run), "--max-steps", "2"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "split 'train'" in error[0] and "no usable sample" in error[0]
    assert f"image_unsupported {len(records)}" in error[0]
    assert not (run / "final").exists() and not (run / "README.md").exists()


def test_early_stopping_keeps_the_best_checkpoint_in_final(tmp_path):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    config = TrainConfig(output_dir=str(run), max_steps=12, batch_size=2, eval_steps=2, max_eval_samples=2,
                         max_train_samples=64, num_beams=1, max_new_tokens=1, report_to="none",
                         metric_for_best_model="exact_match", early_stopping_patience=1, save_total_limit=1,
                         eval_before=False)
    summary = train(config)
    assert summary["steps"] < 12, "no improvement for one evaluation: training stopped"
    assert summary["final_step"] == summary["best_step"] and summary["best_metric"] is not None
    best = run / f"checkpoint-{summary['final_step']}"
    assert best.is_dir(), "the best checkpoint is kept, whatever --save-total-limit says"
    weights, final = load_file(str(best / "model.safetensors")), load_file(str(run / "final" / "model.safetensors"))
    assert weights.keys() == final.keys() and all((weights[k] == final[k]).all() for k in weights)
    assert summary["metrics_after"]["exact_match"] == summary["best_metric"], "after: the model that was saved"
    assert f"the best checkpoint, step {summary['final_step']}" in (run / "README.md").read_text()


def test_best_checkpoint_settings_that_cannot_work_are_refused():
    from florence_tune.commands.train import validate
    from florence_tune.errors import UsageError

    for changes, message in (({"early_stopping_patience": 2, "eval_split": "none"}, "needs an evaluation split"),
                             ({"load_best_model_at_end": True, "metric_for_best_model": "accuracy"},
                              "--metric-for-best-model 'accuracy'"),
                             ({"load_best_model_at_end": True, "save_steps": 3, "eval_steps": 2},
                              "--save-steps"),
                             ({"fp16": True, "bf16": True}, "one of --bf16 and --fp16"),
                             ({"fp16": True}, "--fp16 needs a CUDA GPU")):
        with pytest.raises(UsageError, match=message):
            validate(TrainConfig(**changes))

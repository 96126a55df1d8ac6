"""The Python API: train and evaluate from data in memory, then ask as ``florence-tune predict`` answers."""

import json
import subprocess
import sys

import datasets
import pytest
import yaml
from PIL import Image, ImageDraw

import florence_tune
from florence_tune import paths
from florence_tune.cli import main
from florence_tune.data import in_memory
from florence_tune.errors import UsageError

QUICK = {"max_steps": 2, "batch_size": 2, "eval_split": "none", "report_to": "none"}
DECODING = {"num_beams": 2, "max_new_tokens": 6}  # short answers keep generation quick; predict gets the same
DECODING_FLAGS = ["--num-beams", "2", "--max-new-tokens", "6"]
QUESTIONS = ["What is the total?", "What is the date?", "Who signed it?"]


def page(index: int) -> Image.Image:
    image = Image.new("RGB", (120 + 10 * index, 160), (235, 150 - 20 * index, 150))
    ImageDraw.Draw(image).text((10, 10), f"TOTAL ${index}.50", fill=(0, 0, 0))
    return image


def rows(count: int = 8) -> list[dict]:
    return [{"image": page(i), "question": QUESTIONS[i % 3], "answers": [f"${i}.50"]} for i in range(count)]


def last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    """One run trained from a list of dicts holding PIL images (with its own prompt, which load() must use)."""
    run_dir = tmp_path_factory.mktemp("api") / "listed"
    # a small step: the model still says something (not only location tokens), so answers compare as text
    settings = {**QUICK, "dataset": rows(), "task_prompt": "<DocVQA>", "output_dir": run_dir, "lr": 1e-5}
    return florence_tune.train(**settings), settings


@pytest.fixture(scope="module")
def model(listed):
    return florence_tune.load(listed[0]["output_dir"], **DECODING)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pages")
    files = []
    for i in range(3):
        files.append(folder / f"page{i}.png")
        page(i).save(files[-1])
    return files


def test_trains_from_a_list_of_dicts_holding_pil_images(listed):
    summary, settings = listed
    assert summary["steps"] == 2 and (settings["output_dir"] / "final" / "config.json").is_file()
    saved = yaml.safe_load((settings["output_dir"] / "config.yaml").read_text())
    folder = in_memory.save(rows())  # the same rows: the folder the run trained from, not written again
    assert saved["dataset"] == str(folder) and folder.parent == paths.cache_root() / in_memory.FOLDER
    assert len(datasets.load_from_disk(str(folder))["train"]) == 8


def test_resume_of_the_finished_run_finds_the_same_data_and_returns_its_summary(listed):
    summary, settings = listed
    again = florence_tune.train(**{**settings, "dataset": rows()}, resume=True)
    assert again == json.loads(json.dumps(summary)), "resume=True is --resume; same rows, same folder, same run"


def test_trains_from_a_dataset_with_an_eval_dataset_as_its_validation_split(tmp_path):
    def table(start: int, count: int) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"image": [page(i) for i in range(start, start + count)],
                                           "question": [QUESTIONS[i % 3] for i in range(count)],
                                           "answers": [[f"${i}.50"] for i in range(start, start + count)]}
                                          ).cast_column("image", datasets.Image())

    train, held_out = table(0, 6), table(6, 2)
    summary = florence_tune.train(dataset=train, eval_dataset=held_out, output_dir=tmp_path / "run",
                                  **{**QUICK, "eval_split": "validation"}, eval_before=False, num_beams=1,
                                  max_new_tokens=4)
    assert summary["steps"] == 2 and summary["anls_after"] is not None
    folder = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["dataset"]
    written = datasets.load_from_disk(folder)
    assert {name: len(split) for name, split in written.items()} == {"train": 6, "validation": 2}
    assert [row["answers"] for row in written["validation"]] == [["$6.50"], ["$7.50"]]


def test_ask_answers_what_predict_prints_for_a_pil_image_a_path_or_bytes(model, listed, pages, capsys):
    run_dir = str(listed[0]["output_dir"])
    assert model.task_prompt == "<DocVQA>", "the prompt the run was trained with, as predict takes it"
    assert main(["predict", "--model", run_dir, "--image", str(pages[0]), "--question", QUESTIONS[0],
                 *DECODING_FLAGS]) == 0
    printed = capsys.readouterr().out
    for image in (Image.open(pages[0]), pages[0], str(pages[0]), pages[0].read_bytes()):
        answer = model.ask(image, QUESTIONS[0])
        assert isinstance(answer, str) and answer and printed == answer + "\n"


def test_the_model_is_where_this_process_computes(model):
    from florence_tune import distributed

    assert model.device == distributed.device()  # its GPU under CUDA, as predict and evaluate place it


def test_lists_are_answered_in_batches_as_each_alone(model, listed, pages):
    one_by_one = [model.ask(p, q) for p, q in zip(pages, QUESTIONS, strict=True)]
    assert any(one_by_one) and len(set(one_by_one)) > 1, f"answers that tell batches apart: {one_by_one}"
    batched = florence_tune.load(listed[0]["output_dir"], batch_size=2, **DECODING)  # two batches, one padded
    order = [2, 0, 1]  # the last page first: its answer differs from the others' (a swap inside a batch shows)
    assert batched.ask([pages[i] for i in order], [QUESTIONS[i] for i in order]) == [one_by_one[i] for i in order]
    assert batched.ask(pages, QUESTIONS) == one_by_one
    assert batched.ask(pages[0], QUESTIONS) == [model.ask(pages[0], q) for q in QUESTIONS]
    assert model.ask([pages[1]], QUESTIONS[1]) == [one_by_one[1]]
    with pytest.raises(UsageError, match="3 images and 2 questions"):
        model.ask(pages, QUESTIONS[:2])


def test_run_returns_what_predict_prints_for_a_task_token(model, listed, pages, capsys):
    run_dir = str(listed[0]["output_dir"])
    assert main(["predict", "--model", run_dir, "--image", str(pages[1]), "--task", "<OD>", *DECODING_FLAGS]) == 0
    parsed = json.loads(capsys.readouterr().out)
    found = model.run(Image.open(pages[1]), "<OD>")
    assert isinstance(found, dict) and set(found) == {"bboxes", "labels"} and found == parsed
    assert model.run([pages[1], pages[1]], "<OD>") == [parsed, parsed]
    assert main(["predict", "--model", run_dir, "--image", str(pages[2]), "--task", "<CAPTION>", *DECODING_FLAGS]) == 0
    assert capsys.readouterr().out == model.run(pages[2], "<CAPTION>") + "\n"
    with pytest.raises(UsageError, match="takes no text"):
        model.run(pages[2], "<OD>", "a dog")


def test_evaluate_returns_the_summary_the_command_prints(listed, tmp_path, capsys):
    run_dir = str(listed[0]["output_dir"])
    quick = {"num_beams": 1, "max_new_tokens": 4}
    summary = florence_tune.evaluate(model=run_dir, dataset=rows(5), output=tmp_path / "api.jsonl", **quick)
    folder = in_memory.save(rows(5), split="validation")  # every row is the split evaluated
    assert main(["evaluate", "--model", run_dir, "--dataset", str(folder), "--output", str(tmp_path / "cli.jsonl"),
                 "--num-beams", "1", "--max-new-tokens", "4"]) == 0
    printed = last_json_line(capsys.readouterr().out)
    assert summary.pop("predictions") == str(tmp_path / "api.jsonl")
    printed.pop("predictions")
    assert summary == printed and "anls" in summary
    assert len((tmp_path / "api.jsonl").read_text().splitlines()) == 5


def in_memory_folders() -> set:
    root = paths.cache_root() / in_memory.FOLDER
    return set(root.iterdir()) if root.is_dir() else set()


@pytest.mark.parametrize(("call", "message"), [
    (lambda: florence_tune.train(dataset=rows(3), batchsize=2), "unknown setting 'batchsize' in florence_tune.train"
                                                                 r"\(\) \(did you mean 'batch_size'\?\)"),
    (lambda: florence_tune.evaluate(model="tiny", eval_dataset=rows(3)), "did you mean 'dataset'"),
    (lambda: florence_tune.load("tiny", num_beam=2), "did you mean 'num_beams'"),
    (lambda: florence_tune.train(dataset=rows(3), max_steps="2"),
     "'max_steps' in florence_tune.train\\(\\) must be int"),
    (lambda: florence_tune.train(dataset=rows(3), batch_size=2.5), "'batch_size' .* must be int, got 2.5"),
    (lambda: florence_tune.train(dataset=rows(3), eval_before="no"), "'eval_before' .* must be bool"),
    (lambda: florence_tune.evaluate(model="tiny", dataset=rows(3), num_beams=None), "'num_beams' .* is empty"),
    (lambda: florence_tune.load("tiny", num_beams="3"), "'num_beams' .* must be int"),
    (lambda: florence_tune.load("tiny", question="q"), "load\\(\\) takes no 'question'"),
    (lambda: florence_tune.load("tiny", batch_size=0), "batch_size must be an int of at least 1"),
    (lambda: florence_tune.train(dataset="synthetic", eval_dataset=rows(3)), "eval_dataset= goes with rows"),
    (lambda: florence_tune.train(dataset=rows(3), eval_dataset=rows(2), eval_split="none"), "leave eval_split out"),
    (lambda: florence_tune.train(dataset={"train": rows(3)}, eval_dataset=rows(2)), "already holds splits"),
    (lambda: florence_tune.train(dataset=42), "must be a datasets.Dataset"),
])
def test_a_wrong_setting_is_a_one_line_usage_error_before_any_data_is_written(call, message):
    before = in_memory_folders()
    with pytest.raises(UsageError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)
    assert in_memory_folders() == before


def test_errors_are_exceptions_never_exits(model, listed):
    with pytest.raises(UsageError, match="already holds a run"):
        florence_tune.train(**{**listed[1], "dataset": rows()})
    with pytest.raises(UsageError, match="cannot read image '<13 bytes>'"):
        model.ask(b"not an image!", "q")
    with pytest.raises(UsageError, match="config file not found"):
        florence_tune.train(config="missing.yaml")


def test_settings_come_from_a_yaml_file_and_the_arguments_override_it(listed, tmp_path):
    saved = listed[1]["output_dir"] / "config.yaml"
    with pytest.raises(UsageError, match="already holds a run"):  # the saved run's own settings, its folder
        florence_tune.train(config=saved)
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file; choose a folder"):  # the arguments win over the file
        florence_tune.train(config=saved, output_dir=tmp_path / "file")


def test_import_loads_neither_torch_nor_transformers_and_the_api_comes_on_first_use():
    code = "import sys, florence_tune; print(sorted({'torch', 'transformers', 'florence_tune.api'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
    from florence_tune import Model, api, load

    assert (load, Model, florence_tune.train, florence_tune.evaluate) == (api.load, api.Model, api.train, api.evaluate)
    assert {"train", "evaluate", "load", "Model"} <= set(dir(florence_tune))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        florence_tune.nothing  # noqa: B018

"""Every subcommand through ``main([...])``: help, end-to-end train/evaluate/predict, bad input."""

import json
import re
import subprocess
import sys

import pytest
import torch

from florence_tune.cli import COMMANDS, main
from florence_tune.config import TrainConfig

QUICK_TRAIN = ["--max-steps", "6", "--batch-size", "4", "--max-train-samples", "24", "--max-eval-samples", "8",
               "--num-beams", "1", "--max-new-tokens", "8", "--eval-steps", "3", "--save-steps", "3",
               "--logging-steps", "1", "--lr", "1e-3"]


def last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "quick"
    assert main(["train", *QUICK_TRAIN, "--output-dir", str(run_dir)]) == 0
    return run_dir


def every_command():
    from florence_tune.cli import GROUPS

    yield [], None
    for name, (config_cls, _, _) in COMMANDS.items():
        yield [name], config_cls
    for group, (_, commands) in GROUPS.items():
        for name, (config_cls, _, _) in commands.items():
            yield [group, name], config_cls


@pytest.mark.parametrize(("command", "config_cls"), list(every_command()))
def test_help_explains_every_option(command, config_cls, capsys):
    import dataclasses

    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    if config_cls is None:  # the top level lists every command, and says what the tool is for
        assert all(name in text for name in COMMANDS) and "Fine-tune Florence-2" in text
        assert "config object" not in text
        return
    for field in dataclasses.fields(config_cls):
        shown = field.name.upper() if field.metadata.get("positional") else (
            field.metadata.get("flag") or "--" + field.name.replace("_", "-"))
        assert shown in text, f"{' '.join(command)} --help does not mention {shown}"
        words = field.metadata["help"].split()[:3]
        flat = " ".join(text.split())
        assert " ".join(words) in flat, f"{shown}'s help text is missing"
        if field.metadata.get("choices"):
            assert ", ".join(field.metadata["choices"]) in flat, f"{shown}'s choices are not listed"
        if isinstance(field.default, int | float) and not isinstance(field.default, bool) and field.default == 0:
            assert re.search(rf"{re.escape(shown)} .*?\(default: 0(\.0)?\)", flat), f"{shown}'s default 0 is hidden"


def test_train_writes_a_complete_run_directory(trained_run, capsys):
    for name in ["config.yaml", "metrics.jsonl", "README.md", "predictions.jsonl", "summary.json",
                 "final/model.safetensors", "final/config.json", "checkpoint-6/model.safetensors"]:
        assert (trained_run / name).exists(), name
    events = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in e for e in events) and any("eval_anls" in e for e in events)
    assert any("before_anls" in e for e in events)
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["anls_after"] is not None
    assert "model_card" not in summary and "ANLS" in (trained_run / "README.md").read_text()
    page = (trained_run / "report.html").read_text()
    assert "data:image/png;base64," in page and "data:image/jpeg;base64," in page, "curves and gallery pages"
    assert "report.html" in (trained_run / "README.md").read_text()
    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*")), "TensorBoard logs in the run dir"


def test_final_loads_with_plain_transformers(trained_run):
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    model = Florence2ForConditionalGeneration.from_pretrained(trained_run / "final")
    processor = AutoProcessor.from_pretrained(trained_run / "final")
    assert model.config.model_type == "florence2" and processor.tokenizer.image_token == "<image>"


def test_evaluate_writes_predictions_and_prints_json(trained_run, tmp_path, capsys):
    output = tmp_path / "preds.jsonl"
    code = main(["evaluate", "--model", str(trained_run), "--dataset", "synthetic", "--max-samples", "6",
                 "--num-beams", "2", "--max-new-tokens", "8", "--output", str(output)])
    assert code == 0
    result = last_json_line(capsys.readouterr().out)
    assert {"anls", "exact_match", "n"} <= set(result) and result["n"] == 6
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 6
    assert not (tmp_path / "report.html").exists()
    assert main(["evaluate", "--model", str(trained_run), "--max-samples", "4", "--num-beams", "1",
                 "--output", str(output), "--report"]) == 0
    assert "data:image/jpeg;base64," in (tmp_path / "report.html").read_text()
    assert {"question_id", "question", "prediction", "references", "anls"} <= set(rows[0])


@pytest.fixture()
def image_file(tmp_path, page_image):
    path = tmp_path / "page.png"
    page_image.save(path)
    return path


def test_predict_answers_a_question(trained_run, image_file, capsys):
    from florence_tune.batch.collate import Collator, encoder_positions
    from florence_tune.data.images import open_image
    from florence_tune.data.sample import Sample
    from florence_tune.evaluation import generation
    from florence_tune.evaluation.generation import Decoding
    from florence_tune.model import loading

    assert main(["predict", "--model", str(trained_run), "--image", str(image_file), "--question", "Total?",
                 "--max-new-tokens", "6", "--num-beams", "2"]) == 0
    printed = capsys.readouterr().out
    model, processor = loading.load(str(trained_run))
    batch = Collator(processor, max_positions=encoder_positions(model), with_labels=False).encode(
        [Sample("0", open_image(image_file), "<VQA>Total?", "")])
    expected = generation.generate(model, processor, batch,
                                   generation.generation_config(processor, Decoding(num_beams=2, max_new_tokens=6)))
    assert printed == expected[0] + "\n"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["train", "--model", "nonsense"], 2, "accepted forms"),
        (["train", "--dataset", "nonsense"], 2, "accepted forms"),
        (["train", "--batch-size", "0"], 2, "--batch-size must be at least 1"),
        (["evaluate", "--dataset", "synthetic"], 2, "needs --model"),
        (["predict", "--model", "tiny", "--image", "missing.png", "--question", "q"], 2, "cannot read image"),
        (["data", "inspect", "synthetic", "--sheet", "sheet.pgn"], 2, "'.pgn' is not an image format"),
        (["predict", "--model", "tiny", "--image", "x.png"], 2, "exactly one of --question"),
        (["evaluate", "--model", "tiny", "--dataset", "synthetic", "--split", "nope"], 2, "no split 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code(argv, code, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_evaluate_group_by_a_column_no_prediction_has_keeps_the_predictions(trained_run, tmp_path, capsys):
    output = tmp_path / "p.jsonl"
    assert main(["evaluate", "--model", str(trained_run), "--dataset", "synthetic", "--max-samples", "2",
                 "--num-beams", "1", "--max-new-tokens", "4", "--output", str(output), "--group-by", "nope"]) == 2
    err = capsys.readouterr().err  # after the evaluation's own progress bar
    assert "Traceback" not in err and "--group-by 'nope'" in err.splitlines()[-1] and "question_type" in err
    assert len(output.read_text().splitlines()) == 2, "the predictions are written first"


def test_unreadable_image_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["predict", "--model", "tiny", "--image", str(bad), "--question", "q"]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_existing_run_is_not_overwritten(trained_run, capsys):
    before = (trained_run / "summary.json").read_text()
    assert main(["train", "--output-dir", str(trained_run)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (trained_run / "summary.json").read_text() == before


def test_yaml_config_with_unknown_key_suggests_the_right_one(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("batch_sise: 4\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err


def test_yaml_then_flags_override(tmp_path):
    import argparse

    from florence_tune.config import add_arguments, resolve

    config = tmp_path / "run.yaml"
    config.write_text("batch_size: 4\nlr: 0.001\nmodel: tiny\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser, TrainConfig)
    resolved = resolve(TrainConfig, parser.parse_args(["--config", str(config), "--lr", "0.5"]))
    assert (resolved.batch_size, resolved.lr, resolved.epochs) == (4, 0.5, TrainConfig.epochs)


@pytest.mark.multiprocess
def test_module_and_console_script_entry_points():
    for command in ([sys.executable, "-m", "florence_tune", "--help"],
                    [str(__import__("pathlib").Path(sys.executable).parent / "florence-tune"), "--version"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "florence-tune" in result.stdout




def test_predict_runs_on_the_device_of_the_process(image_file, monkeypatch, capsys):
    """predict puts the model where this process computes (its GPU under CUDA), like evaluate does."""
    import torch

    from florence_tune import distributed

    placed = []
    original = torch.nn.Module.to

    def to(module, *args, **kwargs):
        if type(module).__name__ == "Florence2ForConditionalGeneration":
            placed.append(args[0] if args else kwargs.get("device"))
        return original(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", to)
    monkeypatch.setattr(distributed, "device", lambda: torch.device("cpu"))
    assert main(["predict", "--model", "tiny", "--image", str(image_file), "--question", "Total?",
                 "--max-new-tokens", "2", "--num-beams", "1"]) == 0
    assert torch.device("cpu") in [torch.device(p) for p in placed if p is not None]


def test_two_lora_runs_with_one_seed_end_with_the_same_adapters(tmp_path):
    """New LoRA weights are drawn from the run's seed: the same command twice gives the same adapters."""
    from safetensors.torch import load_file

    adapters = []
    for name in ("a", "b"):
        run = tmp_path / name
        assert main(["train", "--strategy", "lora", "--max-steps", "2", "--batch-size", "2", "--eval-split", "none",
                     "--report-to", "none", "--output-dir", str(run)]) == 0
        adapters.append(load_file(str(run / "final" / "adapter_model.safetensors")))
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])


def test_evaluate_and_predict_use_the_prompt_the_run_was_trained_with(tmp_path, image_file, monkeypatch, capsys):
    """A run trained with --task-prompt '<DocVQA>' is evaluated and asked with it, unless a prompt is given."""
    from florence_tune.commands import evaluate, predict

    run = tmp_path / "run"
    assert main(["train", "--task-prompt", "<DocVQA>", "--max-steps", "1", "--batch-size", "2", "--eval-split",
                 "none", "--report-to", "none", "--output-dir", str(run)]) == 0
    seen = []
    real_load, real_answer = evaluate.data.load, predict.answer
    monkeypatch.setattr(evaluate.data, "load", lambda spec, split, options: seen.append(options.task_prompt)
                        or real_load(spec, split, options))
    monkeypatch.setattr(predict, "answer", lambda model, processor, samples, decoding: seen.append(
        samples[0].prompt) or real_answer(model, processor, samples, decoding))
    quick = ["--max-samples", "2", "--num-beams", "1", "--max-new-tokens", "2", "--output", str(tmp_path / "p.jsonl")]
    for model in (run, run / "final"):
        assert main(["evaluate", "--model", str(model), *quick]) == 0
    assert main(["evaluate", "--model", str(run), "--task-prompt", "<VQA>", *quick]) == 0
    assert main(["predict", "--model", str(run), "--image", str(image_file), "--question", "Total?",
                 "--num-beams", "1", "--max-new-tokens", "2"]) == 0
    assert seen == ["<DocVQA>", "<DocVQA>", "<VQA>", "<DocVQA>Total?"]


def test_a_run_without_an_epoch_boundary_checkpoints_by_default_and_says_so(tmp_path, capsys):
    """With --save-steps 0 ('each epoch'), a stream or a --max-steps run shorter than an epoch would write no
    checkpoint before it ends: it saves every 500 steps instead, and says so at the start."""
    from florence_tune import data
    from florence_tune.commands.train import save_cadence

    mapped = data.load("synthetic", "train")
    streamed = data.load("synthetic", "train", streaming=True)
    assert save_cadence(TrainConfig(max_steps=20000, streaming=True), streamed)[:2] == ("steps", 500)
    assert save_cadence(TrainConfig(max_steps=10, batch_size=8), mapped)[:2] == ("steps", 500)
    assert save_cadence(TrainConfig(epochs=2), mapped) == ("epoch", None, None)
    assert save_cadence(TrainConfig(max_steps=10, save_steps=4), mapped) == ("steps", 4, None)
    assert main(["train", "--streaming", "--max-steps", "2", "--batch-size", "2", "--eval-split", "none",
                 "--report-to", "none", "--output-dir", str(tmp_path / "run")]) == 0
    assert "a checkpoint every 500 steps" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "message"), [
    ("batch_size: 2.5\n", "setting 'batch_size' in"),
    ("batch_size: true\n", "setting 'batch_size' in"),
    ("epochs: null\n", "setting 'epochs' in"),
    ("shuffle: 1\n", "setting 'shuffle' in"),
    ("task_prompt: true\n", "setting 'task_prompt' in"),
    ("multi_image: bogus\n", "must be one of tile, skip"),
])
def test_yaml_values_of_the_wrong_type_are_refused_as_the_flag_would_be(text, message, tmp_path, capsys):
    """A YAML value is held to the same type as the flag: never 2.5 → 2, true → 1, or null for a number."""
    config = tmp_path / "run.yaml"
    config.write_text(text)
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_yaml_values_the_flags_accept_still_load(tmp_path):
    import yaml

    from florence_tune.config import build

    built = build(TrainConfig, {"epochs": 2, "lr": 1, "lr_scheduler": "cosine", "resume": None, "shuffle": False})
    assert (built.epochs, built.lr, built.shuffle, built.resume) == (2.0, 1.0, False, None)
    # YAML 1.1 reads 1e-4 (no dot) as a string; --lr 1e-4 is a number, so the file's value is one too
    assert build(TrainConfig, yaml.safe_load("lr: 1e-4\nweight_decay: 5E-2\n")).lr == 1e-4


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--lora-rank", "4"], "--lora-rank goes with --strategy lora or qlora"),
    (["train", "--use-dora"], "--use-dora goes with --strategy lora or qlora"),
    (["train", "--fsdp"], "--fsdp shards on CUDA GPUs only" if not torch.cuda.is_available()
     else "--fsdp shards across processes"),
    (["train", "--page-cache", "{file}"], "--page-cache '"),
    (["predict", "--model", "tiny", "--image", "{file}", "--task", "<OD>what is this"], "takes no text"),
    (["predict", "--model", "tiny", "--image", "{file}", "--task-prompt", "<OD>", "--question", "q"], "no question"),
    (["export", "--model", "tiny", "--output", "{file}"], "--output '"),
    (["report", "{run}", "--output", "{dir}"], "--output '"),
    (["train", "--output-dir", "{file}/run"], "'{file}' is a file"),
    (["train", "--lr-scheduler", "cosin"], "--lr-scheduler 'cosin' is not a transformers schedule; choose one of "
                                           "linear, cosine,"),
    (["train", "--optim", "adam"], "--optim 'adam' is not a transformers optimizer; choose one of adamw_torch,"),
    (["train", "--report-to", "tensorbord"], "--report-to 'tensorbord' is not a logger transformers knows"),
    (["train", "--report-to", "wandb"], "--report-to wandb needs its package: pip install wandb"),
    (["train", "--freeze", "*"], "nothing is left to train"),
    (["train", "--report-to", "tensorboard,none"], "--report-to none means no logger"),
    (["evaluate", "--model", "tiny", "--dtype", "float16"], "--dtype float16 needs a CUDA GPU"),
    (["predict", "--model", "tiny", "--image", "{file}", "--question", "q", "--dtype", "float16"],
     "--dtype float16 needs a CUDA GPU"),
    (["train", "--task-prompt", "<OD>"], "--task-prompt '<OD>' takes no text"),
    (["evaluate", "--model", "tiny", "--task-prompt", "<OCR>"], "--task-prompt '<OCR>' takes no text"),
    (["evaluate", "--model", "tiny", "--output", "{file}/p.jsonl"], "'{file}' is a file"),
    (["train", "--page-cache", "{file}/sub"], "'{file}' is a file"),
    (["data", "inspect", "synthetic", "--sheet", "{file}/x.png"], "'{file}' is a file"),
    (["train", "--output-dir", "{dir}"], "holds files that are not a run (notes.txt)"),
])
def test_settings_that_cannot_work_are_one_line_before_any_work(argv, message, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "notes.txt").write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    filled = [a.format(file=tmp_path / "file.txt", dir=tmp_path / "dir", run=run) for a in argv]
    assert main([*filled, *(["--output-dir", str(tmp_path / "out")] if "--output-dir" not in filled and
                            filled[0] == "train" else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(file=tmp_path / "file.txt") in err[0], err
    assert not (tmp_path / "out").exists(), "nothing is written"


def test_training_further_from_adapters_continues_them_or_says_how(tmp_path, capsys):
    first = tmp_path / "lora"
    quick = ["--max-steps", "1", "--batch-size", "2", "--eval-split", "none", "--report-to", "none"]
    assert main(["train", "--strategy", "lora", *quick, "--output-dir", str(first)]) == 0
    capsys.readouterr()
    assert main(["train", "--model", str(first / "final"), *quick, "--output-dir", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds LoRA adapters" in err[0] and "--strategy lora" in err[0] and "--merge" in err[0]
    assert not (tmp_path / "full").exists()
    assert main(["train", "--model", str(first / "final"), "--strategy", "lora", *quick,
                 "--output-dir", str(tmp_path / "more")]) == 0
    assert "0 trainable" not in capsys.readouterr().out
    from safetensors.torch import load_file

    before = load_file(str(first / "final" / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "more" / "final" / "adapter_model.safetensors"))
    assert before.keys() == after.keys(), "the same adapters, trained further (none added on top)"
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_generation_runs_in_the_precision_asked_for_or_the_one_the_run_trained_in(tmp_path, capsys):
    import torch
    import yaml

    from florence_tune.commands.options import generation_dtype
    from florence_tune.config import EvalConfig

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"bf16": True}))
    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    for model in (str(run), str(run / "final")):
        assert generation_dtype(EvalConfig(model=model), gpu) == torch.bfloat16, "on a GPU: as the run trained"
        assert generation_dtype(EvalConfig(model=model), cpu) == torch.float32
    (run / "config.yaml").write_text(yaml.safe_dump({"fp16": True}))
    assert generation_dtype(EvalConfig(model=str(run)), gpu) == torch.float16
    assert generation_dtype(EvalConfig(model=str(run), dtype="float32"), gpu) == torch.float32
    assert generation_dtype(EvalConfig(model="tiny", dtype="bfloat16"), cpu) == torch.bfloat16
    output = tmp_path / "p.jsonl"
    assert main(["evaluate", "--model", "tiny", "--dataset", "synthetic", "--max-samples", "2", "--num-beams", "1",
                 "--max-new-tokens", "4", "--dtype", "bfloat16", "--output", str(output)]) == 0
    assert len(output.read_text().splitlines()) == 2

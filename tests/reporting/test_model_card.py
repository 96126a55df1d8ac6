"""The model card (README.md of a run): its task and metrics are the run's own, and its "Load it" code runs."""

import json
import re

import pytest
import torch

from florence_tune.cli import main

QUICK = ["--max-steps", "1", "--batch-size", "2", "--max-train-samples", "4", "--max-eval-samples", "2",
         "--num-beams", "1", "--report-to", "none"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "lora"
    assert main(["train", "--strategy", "lora", *QUICK, "--max-new-tokens", "4", "--output-dir", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "detection"
    assert main(["train", "--dataset", "synthetic:detection", *QUICK, "--max-new-tokens", "12",
                 "--output-dir", str(run)]) == 0
    return run


def card(run) -> str:
    return (run / "README.md").read_text()


def loaded_by_the_card(run) -> dict:
    """Run the card's python block as a reader would paste it; its names afterwards."""
    code = re.search(r"```python\n(.*?)```", card(run), re.S).group(1)
    names: dict = {}
    exec(code, names)  # noqa: S102 - the card's own snippet, written by the run under test
    return names


def logits(model, processor, page_image):
    inputs = processor(text="<VQA>What is the total?", images=page_image, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs, decoder_input_ids=torch.tensor([[2, 0]])).logits


def test_the_card_of_a_lora_run_loads_its_adapters(lora_run, page_image):
    """final/ of a LoRA run holds adapters only; the card's code loads the base model, then them."""
    from peft import PeftModel

    from florence_tune.model import loading

    assert not (lora_run / "final" / "model.safetensors").exists()
    names = loaded_by_the_card(lora_run)
    assert isinstance(names["model"], PeftModel)
    expected, processor = loading.load(str(lora_run))
    torch.testing.assert_close(logits(names["model"].eval(), names["processor"], page_image),
                               logits(expected, processor, page_image), rtol=0, atol=0)
    assert f"florence-tune export --model {lora_run} --merge" in card(lora_run)


def test_the_card_of_a_full_run_loads_with_plain_transformers(detection_run, page_image):
    from transformers import Florence2ForConditionalGeneration

    from florence_tune.model import loading

    names = loaded_by_the_card(detection_run)
    assert type(names["model"]) is Florence2ForConditionalGeneration
    expected, processor = loading.load(str(detection_run))
    torch.testing.assert_close(logits(names["model"].eval(), names["processor"], page_image),
                               logits(expected, processor, page_image), rtol=0, atol=0)
    assert "peft" not in card(detection_run) and "--merge" not in card(detection_run)


def metric_row(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_detection_card_shows_its_task_and_its_metrics(detection_run):
    text, summary = card(detection_run), json.loads((detection_run / "summary.json").read_text())
    assert "- Task: `<OD>`" in text
    assert "<VQA>" not in text and "ANLS" not in text and "baseline" not in text
    assert metric_row(text, "mAP@[.5:.95]")[1:] == [f"{summary['metrics_before']['map']:.4f}",
                                                   f"{summary['metrics_after']['map']:.4f}"]
    assert metric_row(text, "mAP@.5")[1:] == [f"{summary['metrics_before']['map_50']:.4f}",
                                             f"{summary['metrics_after']['map_50']:.4f}"]
    assert metric_row(text, "eval loss")[1:] == [f"{summary['eval_loss_before']:.4f}",
                                                f"{summary['eval_loss_after']:.4f}"]


def test_a_question_answering_card_shows_anls_and_the_image_blind_baseline(lora_run):
    text, summary = card(lora_run), json.loads((lora_run / "summary.json").read_text())
    assert "- Task: `<VQA>`" in text
    assert metric_row(text, "ANLS")[1:] == [f"{summary['anls_before']:.4f}", f"{summary['anls_after']:.4f}"]
    assert metric_row(text, "exact match")[1:] == [f"{summary['metrics_before']['exact_match']:.4f}",
                                                  f"{summary['exact_match_after']:.4f}"]
    assert f"{summary['anls_blind_baseline']:.4f}" in text and "mAP" not in text


def test_a_run_without_evaluation_says_so_instead_of_empty_numbers(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--max-steps", "1", "--batch-size", "2", "--eval-split", "none", "--report-to", "none",
                 "--output-dir", str(run)]) == 0
    text = card(run)
    assert "not evaluated" in text and "n/a" not in text and "None" not in text
    assert "| eval loss |" not in text


def front_matter(text: str) -> dict:
    import yaml

    assert text.startswith("---\n"), "the hub reads the card's YAML front matter from the very top"
    return yaml.safe_load(text.split("---\n")[1])


def test_the_card_has_the_front_matter_the_hub_reads(tmp_path):
    from florence_tune.config import TrainConfig
    from florence_tune.reporting.model_card import write_model_card

    (tmp_path / "final").mkdir()
    config = TrainConfig(model="florence-community/Florence-2-base", dataset="docvqa=0.7,cauldron:chartqa=0.3")
    summary = {"final": str(tmp_path / "final"), "steps": 10, "learning_rate": 1e-5, "data": {},
               "metrics_before": {"anls": 0.1}, "metrics_after": {"anls": 0.62, "exact_match": 0.5}}
    meta = front_matter(write_model_card(tmp_path, config, summary).read_text())
    assert (meta["base_model"], meta["library_name"], meta["pipeline_tag"]) == (
        "florence-community/Florence-2-base", "transformers", "image-text-to-text")
    assert meta["datasets"] == ["HuggingFaceM4/DocumentVQA", "HuggingFaceM4/the_cauldron"]
    assert {"florence-2", "florence-tune"} <= set(meta["tags"])
    results = meta["model-index"][0]["results"][0]
    assert results["task"]["type"] == "visual-question-answering"
    assert {m["type"]: m["value"] for m in results["metrics"]} == {"anls": 0.62, "exact_match": 0.5}
    assert 'pipeline("image-text-to-text"' in (tmp_path / "README.md").read_text()


def test_a_local_base_and_local_data_are_left_out_of_the_front_matter(detection_run):
    meta = front_matter(card(detection_run))
    assert "base_model" not in meta and "datasets" not in meta, "tiny and the synthetic set are not on the hub"
    assert meta["model-index"][0]["results"][0]["task"]["type"] == "object-detection"


def test_the_card_gives_each_source_by_its_own_metric(tmp_path):
    from florence_tune.reporting import model_card

    summary = {"metrics_before": {"anls": 0.1, "source_score": 0.2},
               "metrics_after": {"anls": 0.5, "source_score": 0.6},
               "by_source_before": {"chartqa": {"metric": "relaxed_accuracy", "score": 0.25, "n": 8}},
               "by_source_after": {"chartqa": {"metric": "relaxed_accuracy", "score": 0.75, "n": 8},
                                   "ai2d": {"metric": "multiple_choice_accuracy", "score": 0.5, "n": 4}}}
    text = "\n".join(model_card.metric_lines(summary))
    assert metric_row(text, "each question by its source's metric")[1:] == ["0.2000", "0.6000"]
    assert "| chartqa | relaxed_accuracy | 8 | 0.2500 | 0.7500 |" in text
    assert "| ai2d | multiple_choice_accuracy | 4 | — | 0.5000 |" in text

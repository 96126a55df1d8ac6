"""Model specs resolve through from_pretrained; checkpoints reload to identical outputs."""

import json

import pytest
import torch

from florence_tune.batch.collate import Collator, encoder_positions
from florence_tune.data.sample import Sample
from florence_tune.errors import FlorenceTuneError, UsageError
from florence_tune.evaluation.generation import Decoding, generate, generation_config
from florence_tune.model import loading


def test_tiny_resolves_to_a_checkpoint_folder():
    folder = loading.resolve_model_path("tiny")
    assert (loading.Path(folder) / "config.json").exists()
    assert (loading.Path(folder) / "model.safetensors").exists()


def test_run_directory_resolves_to_final_then_newest_checkpoint(tmp_path):
    for name in ["checkpoint-5", "checkpoint-20", "checkpoint-100"]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    assert loading.resolve_model_path(str(tmp_path)).endswith("checkpoint-100")
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    assert loading.resolve_model_path(str(tmp_path)).endswith("final")


def test_hub_ids_pass_through_and_unknown_names_are_usage_errors(tmp_path):
    assert loading.resolve_model_path("florence-community/Florence-2-base") == "florence-community/Florence-2-base"
    with pytest.raises(UsageError, match="accepted forms"):
        loading.resolve_model_path("no-such-model")
    with pytest.raises(UsageError, match="holds no config.json"):
        loading.resolve_model_path(str(tmp_path))


def test_unreachable_hub_is_one_clear_error():
    with pytest.raises(FlorenceTuneError, match="could not load model 'someone/not-cached'"):
        loading.load("someone/not-cached")


def test_original_remote_code_layout_is_refused_without_flag(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "florence2", "auto_map": {"AutoConfig": "x.Y"}}))
    with pytest.raises(UsageError, match="--trust-remote-code"):
        loading.load(str(tmp_path))


def test_save_reload_gives_identical_logits_and_predictions(fresh_tiny, page_image, tmp_path):
    model, processor = fresh_tiny
    torch.manual_seed(1)
    with torch.no_grad():  # move away from the deterministic initial weights
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    loading.save(model, processor, tmp_path / "final")
    assert (tmp_path / "final" / "model.safetensors").exists()
    reloaded, reprocessor = loading.load(str(tmp_path))  # run-dir form resolves to final/

    collator = Collator(processor, max_positions=encoder_positions(model))
    samples = [Sample("1", page_image, "<VQA>What is the total?", "12.50"),
               Sample("2", page_image, "<VQA>What colour is the page?", "red")]
    batch = collator(samples).inputs
    config = generation_config(processor, Decoding(num_beams=2, max_new_tokens=8))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**batch).logits, reloaded(**batch).logits, rtol=0, atol=0)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    assert generate(model, processor, inputs, config) == generate(reloaded, reprocessor, inputs, config)
    saved, original = reloaded.config.to_dict(), model.config.to_dict()
    saved.pop("_name_or_path"), original.pop("_name_or_path")
    assert saved == original, "config fields lost on save"

"""Fine-tuning strategies: what is frozen stays bit-identical, LoRA trains adapters only, export merges."""

import pytest
import torch
from safetensors.torch import load_file

from florence_tune.cli import main
from florence_tune.commands.train import run as train
from florence_tune.config import TrainConfig
from florence_tune.errors import UsageError
from florence_tune.model import loading, strategies

QUICK = dict(max_steps=4, batch_size=4, max_train_samples=16, eval_split="none", lr=1e-3, save_steps=100)


def initial_weights() -> dict[str, torch.Tensor]:
    return load_file(str(loading.Path(loading.resolve_model_path("tiny")) / "model.safetensors"))


def test_freeze_vision_keeps_the_tower_bit_identical_and_trains_the_rest(tmp_path, capsys):
    train(TrainConfig(strategy="freeze-vision", output_dir=str(tmp_path / "run"), **QUICK))
    assert "trainable /" in capsys.readouterr().out
    before, after = initial_weights(), load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    vision = [k for k in before if k.startswith(strategies.VISION_PREFIX)]
    rest = [k for k in before if not k.startswith(strategies.VISION_PREFIX) and k in after]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    changed = sum(not torch.equal(before[k], after[k]) for k in rest)
    assert changed > 0.9 * len(rest), f"only {changed}/{len(rest)} non-vision tensors changed"


def test_freeze_patterns_freeze_exactly_what_they_match(fresh_tiny):
    model, _ = fresh_tiny
    strategies.apply(model, strategies.Strategy.FULL, freeze=("model.language_model.encoder.*",))
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == (not name.startswith("model.language_model.encoder.")), name
    with pytest.raises(UsageError, match="matches no parameter"):
        strategies.apply(model, strategies.Strategy.FULL, freeze=("no.such.*",))


def test_lora_trains_adapters_only_and_merge_matches(tmp_path, page_image):
    run = tmp_path / "lora"
    train(TrainConfig(strategy="lora", lora_rank=4, output_dir=str(run), **QUICK))
    assert (run / "final" / "adapter_model.safetensors").exists()
    assert not (run / "final" / "model.safetensors").exists()

    adapted, processor = loading.load(str(run))
    assert strategies.is_adapter_model(adapted)
    before = initial_weights()
    for name, tensor in adapted.named_parameters():
        if "lora_" in name:
            continue
        base_name = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(tensor.detach(), before[base_name]), name
    lora_b = [t for n, t in adapted.named_parameters() if "lora_B" in n]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b), "LoRA B starts at zero; training must move it"

    assert main(["export", "--model", str(run), "--merge", "--output", str(tmp_path / "merged")]) == 0
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    from transformers import Florence2ForConditionalGeneration

    merged = Florence2ForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    from florence_tune.batch.collate import Collator, encoder_positions
    from florence_tune.data.sample import Sample

    batch = Collator(processor, max_positions=encoder_positions(merged))(
        [Sample("1", page_image, "<VQA>What is the total?", "12.50")]).inputs
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapted(**batch).logits, rtol=1e-4, atol=1e-5)


def test_export_of_lora_run_needs_merge(tmp_path, capsys):
    run = tmp_path / "lora"
    train(TrainConfig(strategy="lora", output_dir=str(run), **{**QUICK, "max_steps": 1}))
    assert main(["export", "--model", str(run), "--output", str(tmp_path / "out")]) == 2
    assert "pass --merge" in capsys.readouterr().err


def test_qlora_without_gpu_is_a_clear_usage_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this checks the CPU-only message")
    assert main(["train", "--strategy", "qlora", "--output-dir", str(tmp_path / "q")]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err

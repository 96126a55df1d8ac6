"""The original project's command keeps working: ``python train.py`` (hub DocVQA), failing fast offline."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.multiprocess
def test_train_py_without_network_fails_fast_with_one_clear_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--output-dir", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert time.monotonic() - started < 60
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "HuggingFaceM4/DocumentVQA" in lines[0]
    assert "local copy" in lines[0] and "florence-tune train" in lines[0]
    assert not (tmp_path / "run").exists(), "a failed start must not leave a run directory behind"


def test_train_py_passes_the_original_settings_and_lets_flags_override_them(monkeypatch):
    """train.py's settings reach the real parser and become the run's config; a flag given overrides one."""
    from florence_tune import cli
    from florence_tune.config import TrainConfig, resolve

    sys.path.insert(0, str(ROOT))
    try:
        import train
    finally:
        sys.path.remove(str(ROOT))
    seen = []
    monkeypatch.setattr(cli, "main", lambda argv: seen.append(list(argv)) or 0)
    assert train.main([]) == 0 and train.main(["--lr", "2e-5", "--output-dir", "elsewhere"]) == 0
    parser = cli.build_parser()
    original, overridden = (resolve(TrainConfig, parser.parse_args(argv)) for argv in seen)
    assert seen[0][0] == "train"
    # the blog's DocVQA run: base-ft, vision tower frozen, questions as they are after <DocVQA>
    assert (original.model, original.dataset, original.task_prompt, original.strategy) == (
        "florence-community/Florence-2-base-ft", "docvqa", "<DocVQA>", "freeze-vision")
    assert (original.epochs, original.lr, original.batch_size, original.clean_questions) == (7.0, 1e-6, 6, False)
    assert (overridden.lr, overridden.output_dir, overridden.epochs) == (2e-5, "elsewhere", 7.0)


def distributed_config(argv: list[str]):
    """The TrainConfig that ``python distributed_train.py ARGV`` starts on every rank."""
    from florence_tune import cli
    from florence_tune.config import TrainConfig, resolve

    sys.path.insert(0, str(ROOT))
    try:
        import distributed_train
    finally:
        sys.path.remove(str(ROOT))
    args, rest = distributed_train.parse(argv)
    argv = ["train", *distributed_train.train_arguments(args, rest)]
    return resolve(TrainConfig, cli.build_parser().parse_args(argv))


def test_distributed_train_py_keeps_the_original_script_settings():
    config = distributed_config(["--dataset", "docvqa"])
    assert (config.model, config.task_prompt, config.clean_questions) == (
        "florence-community/Florence-2-large-ft", "<VQA>", True)
    assert (config.epochs, config.eval_steps, config.batch_size, config.lr, config.max_eval_samples) == (
        10.0, 10000, 6, 1e-6, 1000)
    assert config.strategy == "full"


def test_use_lora_is_the_original_recipe_on_the_native_module_names():
    from florence_tune.commands import options
    from florence_tune.model import loading, strategies

    config = distributed_config(["--dataset", "docvqa", "--use-lora", "--model", "tiny"])
    assert (config.strategy, config.lora_rank, config.lora_alpha, config.lora_dropout) == ("lora", 8, 8, 0.05)
    assert (config.use_rslora, config.lora_init) == (True, "gaussian")
    model, _ = loading.load("tiny")
    adapted = strategies.apply(model, strategies.Strategy.LORA, lora=options.lora(config))
    peft_config = adapted.peft_config["default"]
    assert (peft_config.use_rslora, peft_config.init_lora_weights) == (True, "gaussian")
    # the original's targets that name modules of Florence-2 (its o_proj, linear and Conv2d name none)
    wrapped = {name.rsplit(".", 1)[-1] for name, module in adapted.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "fc2", "lm_head"}


def test_vqainstruct_is_docmatix_single_pages_and_says_so(capsys):
    config = distributed_config(["--dataset", "vqainstruct"])
    assert (config.dataset, config.multi_image) == ("docmatix", "skip")
    assert "vqainstruct" in capsys.readouterr().err

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
    assert (original.model, original.dataset, original.task_prompt) == (
        "florence-community/Florence-2-base", "docvqa", "<DocVQA>")
    assert (original.epochs, original.lr, original.batch_size) == (7.0, 1e-6, 6)
    assert (overridden.lr, overridden.output_dir, overridden.epochs) == (2e-5, "elsewhere", 7.0)

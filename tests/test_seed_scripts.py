"""The original project's command keeps working: ``python train.py`` (hub DocVQA), failing fast offline."""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def test_train_py_passes_the_original_settings():
    sys.path.insert(0, str(ROOT))
    try:
        import train
    finally:
        sys.path.remove(str(ROOT))
    settings = dict(zip(train.SEED_SETTINGS[::2], train.SEED_SETTINGS[1::2], strict=True))
    assert settings["--dataset"] == "docvqa" and settings["--task-prompt"] == "<DocVQA>"
    assert (settings["--epochs"], settings["--lr"], settings["--batch-size"]) == ("7", "1e-6", "6")

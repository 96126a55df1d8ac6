"""Streamed training on 2 gloo processes (slow: a real torchrun job): no rank waits on another's
epoch boundary, the evaluation loss and predictions come back whole, each question once.

    pytest -m slow tests/data/test_stream_ddp.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_streamed_training_on_two_ranks(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--max-restarts", "0", "-m", "florence_tune", "train", "--dataset", "synthetic", "--streaming",
               "--max-steps", "3", "--batch-size", "2", "--max-train-samples", "20", "--max-eval-samples", "7",
               "--num-workers", "1", "--num-beams", "1", "--max-new-tokens", "4", "--report-to", "none",
               "--output-dir", str(run_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["eval_loss_after"] is not None
    ids = [json.loads(line)["question_id"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 7

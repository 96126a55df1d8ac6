"""Real multi-process runs on CPU (gloo) through torchrun: they prove DDP, not just run it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from florence_tune.model import tiny

pytestmark = pytest.mark.multiprocess
ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
# Few steps on the tiny model; sequential order so runs with different process counts see the same data.
QUICK = {"model": "tiny", "dataset": "synthetic", "max_train_samples": 16, "lr": 1e-3, "shuffle": False,
         "logging_steps": 1, "save_steps": 1000, "seed": 7}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, env_extra=None, timeout=240, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--max-restarts", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, **popen)


def run_worker(tmp: Path, nproc: int, **settings) -> list[dict[str, torch.Tensor]]:
    tmp.mkdir(parents=True, exist_ok=True)
    result = torchrun("--standalone", "--nproc-per-node", str(nproc), str(WORKER), str(tmp),
                      json.dumps({**QUICK, **settings}))
    assert result.returncode == 0, result.stderr[-3000:]
    return [load_file(str(tmp / f"weights-rank{r}.safetensors")) for r in range(nproc)]


def test_two_processes_end_with_bit_identical_weights_and_keep_the_strategy(tmp_path):
    rank0, rank1 = run_worker(tmp_path, 2, max_steps=3, batch_size=2, strategy="freeze-vision")
    initial = load_file(str(tiny.tiny_dir() / "model.safetensors"))
    vision = [k for k in initial if k.startswith("model.vision_tower.")]
    assert vision and all(torch.equal(rank0[k], initial[k]) for k in vision), "the frozen tower moved"
    assert any(not torch.equal(rank0[k], initial[k]) for k in initial if k not in vision), "training changed nothing"
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name


def test_two_ranks_of_batch_b_equal_one_rank_of_batch_2b(tmp_path):
    # Plain SGD: Adam would turn float noise in gradients that are exactly zero in theory (attention key
    # biases) into full-size steps and hide what we compare, the averaged gradients.
    (two,) = run_worker(tmp_path / "two", 2, max_steps=3, batch_size=2, optim="sgd", lr=0.05)[:1]
    (one,) = run_worker(tmp_path / "one", 1, max_steps=3, batch_size=4, optim="sgd", lr=0.05)
    initial = load_file(str(tiny.tiny_dir() / "model.safetensors"))
    assert sum(not torch.equal(one[k], initial[k]) for k in initial) > len(initial) // 2
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)


def test_distributed_evaluation_scores_each_question_once(tmp_path):
    common = ["-m", "florence_tune", "evaluate", "--model", "tiny", "--dataset", "synthetic", "--max-samples", "11",
              "--num-beams", "1", "--max-new-tokens", "6", "--batch-size", "4"]
    single = torchrun("--standalone", "--nproc-per-node", "1", *common, "--output", str(tmp_path / "one.jsonl"))
    double = torchrun("--standalone", "--nproc-per-node", "2", *common, "--output", str(tmp_path / "two.jsonl"))
    assert single.returncode == 0 and double.returncode == 0, double.stderr[-3000:]
    one = json.loads(single.stdout.strip().splitlines()[-1])
    two = json.loads(double.stdout.strip().splitlines()[-1])
    assert len([line for line in double.stdout.splitlines() if line.startswith("{")]) == 1, "only rank 0 prints"
    assert (one["anls"], one["n"]) == (two["anls"], two["n"]) == (one["anls"], 11)
    ids_one = [json.loads(line)["question_id"] for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    ids_two = [json.loads(line)["question_id"] for line in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert ids_one == ids_two and len(set(ids_two)) == 11


def test_two_nodes_on_loopback_train_together(tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    settings = json.dumps({**QUICK, "max_steps": 2, "batch_size": 2})
    nodes = []
    for node in range(2):
        out = tmp_path / f"node{node}"
        out.mkdir()
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "loopback",
                   "--max-restarts", "0", str(WORKER), str(out), settings]
        nodes.append(subprocess.Popen(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [node.communicate(timeout=240) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    weights = [load_file(str(next((tmp_path / f"node{n}").glob("weights-rank*.safetensors")))) for n in range(2)]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_a_dead_rank_ends_the_whole_job_quickly(tmp_path):
    settings = json.dumps({**QUICK, "max_steps": 100000, "batch_size": 1, "max_train_samples": 0})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--max-restarts", "0", str(WORKER), str(tmp_path), settings]
    job = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        metrics = tmp_path / "run" / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2):  # training is under way
            assert time.monotonic() < deadline and job.poll() is None, "training never started"
            time.sleep(0.5)
        os.kill(int((tmp_path / "pid-rank1").read_text()), signal.SIGKILL)
        killed_at = time.monotonic()
        job.wait(timeout=90)
        assert job.returncode != 0
        assert time.monotonic() - killed_at < 90
    finally:
        if job.poll() is None:
            job.kill()
            pytest.fail("the job kept running after one rank died")


def test_distributed_train_py_runs_the_original_command_on_cpu_processes(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "distributed_train.py"), "--dataset", "synthetic", "--model", "tiny",
         "--epochs", "1", "--nproc", "2", "--max-train-samples", "8", "--batch-size", "2",
         "--max-val-item-count", "5", "--num-beams", "1", "--max-new-tokens", "4", "--output-dir", str(run_dir)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2, "8 samples, 2 ranks x batch 2: two steps per epoch"
    assert len((run_dir / "predictions.jsonl").read_text().splitlines()) == 5


def test_original_flags_translate_to_train_options():
    sys.path.insert(0, str(ROOT))
    try:
        import distributed_train
    finally:
        sys.path.remove(str(ROOT))
    args, rest = distributed_train.parse(["--dataset", "docvqa", "--epochs", "10", "--eval-steps", "1000",
                                          "--run-name", "exp1", "--max-val-item-count", "200", "--seed", "3"])
    from florence_tune.cli import build_parser
    from florence_tune.config import TrainConfig, resolve

    options = distributed_train.train_arguments(args, rest)
    config = resolve(TrainConfig, build_parser().parse_args(["train", *options]))
    assert (config.dataset, config.epochs, config.eval_steps) == ("docvqa", 10.0, 1000)
    assert (config.output_dir, config.max_eval_samples, config.lr, config.seed) == ("runs/exp1", 200, 1e-6, 3)
    assert options[-2:] == ["--seed", "3"], "the user's own options come last, so they win"
    launch = distributed_train.launcher_arguments(distributed_train.parse(["--nproc", "3"])[0])
    assert launch[:2] == ["--nproc-per-node", "3"] and "--standalone" in launch


def test_rendezvous_that_cannot_form_names_the_endpoint(tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "distributed_train.py"), "--dataset", "synthetic", "--model", "tiny",
         "--nnodes", "2", "--rdzv-endpoint", endpoint, "--rdzv-timeout", "3", "--nproc", "1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 1 and time.monotonic() - started < 60
    last = result.stderr.strip().splitlines()[-1]
    assert endpoint in last and "rendezvous" in last


def test_fsdp_and_deepspeed_map_onto_the_trainer(tmp_path):
    from florence_tune.commands.train import sharding_arguments, training_arguments, validate
    from florence_tune.config import TrainConfig
    from florence_tune.errors import UsageError

    args = training_arguments(TrainConfig(fsdp=True), tmp_path)
    assert args.fsdp and "Florence2VisionBlock" in args.fsdp_config["transformer_layer_cls_to_wrap"]
    assert sharding_arguments(TrainConfig()) == {}
    with pytest.raises(UsageError, match="choose one"):
        validate(TrainConfig(fsdp=True, deepspeed="ds.json"))



def test_a_rank_whose_batch_is_all_unusable_keeps_step_with_the_other(tmp_path):
    """Rank 0's second batch holds one sample without its image: both ranks still run every step together."""
    from PIL import Image

    (tmp_path / "data").mkdir()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(tmp_path / "data" / "page.png")
    rows = [{"image": "missing.png" if i == 2 else "page.png", "question": f"q{i}", "answers": ["red"]}
            for i in range(8)]
    (tmp_path / "data" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rank0, rank1 = run_worker(tmp_path / "out", 2, dataset=str(tmp_path / "data" / "rows.jsonl"), holdout_rows=0,
                              max_train_samples=0, max_steps=4, batch_size=1)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name


def test_sigterm_to_distributed_train_py_checkpoints_and_exits_75(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "distributed_train.py"), "--dataset", "synthetic", "--model", "tiny",
               "--epochs", "1", "--nproc", "2", "--batch-size", "1", "--max-train-samples", "400",
               "--eval-split", "none", "--logging-steps", "1", "--output-dir", str(run_dir)]
    job = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count('"loss"') >= 2):
            assert time.monotonic() < deadline and job.poll() is None, "training never started"
            time.sleep(0.2)
        job.send_signal(signal.SIGTERM)
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 75, err[-2000:]
    assert "continue with: python distributed_train.py" in err.strip().splitlines()[-1]
    assert list(run_dir.glob("checkpoint-*/COMPLETE"))

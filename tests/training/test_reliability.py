"""Runs survive interruption: SIGKILL + --resume is bit-exact, SIGTERM checkpoints and stops cleanly,
a failed save keeps the previous checkpoint, NaN/inf steps are skipped and counted, settings are checked."""

from __future__ import annotations

import errno
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import builders
import datasets
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file
from transformers import TrainerCallback

from florence_tune import data
from florence_tune.batch.collate import Collator, encoder_positions
from florence_tune.cli import main
from florence_tune.commands import train as train_command
from florence_tune.data import synthetic
from florence_tune.data.sample import Sample
from florence_tune.model import checkpoints, loading
from florence_tune.training import trainer

# 16 samples, batch 2: 8 steps per epoch, 16 in all; every interruption below lands inside an epoch.
RUN = ["--dataset", "synthetic", "--max-train-samples", "16", "--batch-size", "2", "--epochs", "2",
       "--eval-split", "none", "--logging-steps", "1", "--lr", "2e-3", "--seed", "7", "--save-total-limit", "3",
       "--num-beams", "1", "--max-new-tokens", "4", "--max-eval-samples", "4", "--report-to", "none"]
TOTAL_STEPS = 16


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def losses_by_step(run_dir: Path) -> list[tuple[int, float]]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(e["step"], e["loss"]) for e in events if "loss" in e]


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def start_training(run_dir: Path, *extra: str) -> subprocess.Popen:
    """A real ``florence-tune train`` process (same cache, offline), for signals to hit; stderr goes to a file."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "florence_tune", "train", *RUN, *extra, "--output-dir", str(run_dir)]
    with open(run_dir.parent / "stderr.txt", "w") as err:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)


def stderr_of(run_dir: Path) -> str:
    return (run_dir.parent / "stderr.txt").read_text()


def wait_until(process: subprocess.Popen, run_dir: Path, ready, timeout: float = 300) -> None:
    """Poll ``ready()`` while the process runs (the timeout is generous: only a broken run reaches it)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run ended or stalled before the moment to interrupt it: {stderr_of(run_dir)[-2000:]}")
        time.sleep(0.01)


def has_checkpoint(run_dir: Path, at_least: int):
    newest = checkpoints.newest_complete(run_dir)
    return newest is not None and checkpoints.step_of(newest) >= at_least


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread here and in the processes we start: the same arithmetic in both (the comparisons
    are bit for bit), and no spinning threads fighting over a small, shared CPU (10x faster when it is busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same run, never interrupted."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", *RUN, "--save-steps", "8", "--output-dir", str(run_dir)]) == 0
    return run_dir


# --- interruption and resume -----------------------------------------------------------------


@pytest.mark.multiprocess
def test_sigkill_mid_epoch_then_resume_is_bit_identical(reference, tmp_path):
    run_dir = tmp_path / "run"
    process = start_training(run_dir, "--save-steps", "1")
    wait_until(process, run_dir, lambda: has_checkpoint(run_dir, at_least=3))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL and not (run_dir / "final").exists()
    resumed_from = checkpoints.step_of(checkpoints.newest_complete(run_dir))
    assert 3 <= resumed_from < 8  # inside the first epoch

    assert main(["train", *RUN, "--save-steps", "1", "--output-dir", str(run_dir), "--resume"]) == 0

    assert_bit_identical(weights(run_dir / "final"), weights(reference / "final"))
    # the same batches in the same order: every step's loss, once each, equal to the uninterrupted run's
    assert losses_by_step(run_dir) == losses_by_step(reference)
    assert not list(run_dir.glob("tmp-*"))


@pytest.mark.multiprocess
def test_sigterm_saves_a_checkpoint_says_how_to_resume_and_resume_continues(reference, tmp_path):
    run_dir = tmp_path / "run"
    process = start_training(run_dir, "--save-steps", "100")  # no regular checkpoint before the signal
    metrics = run_dir / "metrics.jsonl"
    wait_until(process, run_dir, lambda: metrics.exists() and '"loss"' in metrics.read_text())  # training
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=300)
    err = stderr_of(run_dir)

    assert process.returncode == 75, err[-2000:]
    message = last_line(err)
    assert message.startswith("florence-tune train: stopped: SIGTERM received: stopped at step"), message
    command = message.split("continue with: ")[1]
    assert command == f"florence-tune train --config {run_dir / 'config.yaml'} --resume"
    stopped_at = checkpoints.step_of(checkpoints.newest_complete(run_dir))
    assert 1 <= stopped_at < TOTAL_STEPS and f"stopped at step {stopped_at} " in message
    assert not (run_dir / "final").exists()

    assert main(shlex.split(command)[1:]) == 0  # exactly the printed command
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == TOTAL_STEPS
    steps = [step for step, _ in losses_by_step(run_dir)]
    assert steps == list(range(1, TOTAL_STEPS + 1))
    assert_bit_identical(weights(run_dir / "final"), weights(reference / "final"))


def test_failed_save_keeps_the_previous_checkpoint_and_resume_picks_it(reference, tmp_path, monkeypatch, capsys):
    import transformers.modeling_utils as modeling_utils

    real_save = modeling_utils.safe_save_file
    calls = []

    def disk_fills_up(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # the second checkpoint: half a file, then the disk is full
            Path(filename).write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(modeling_utils, "safe_save_file", disk_fills_up)
    run_dir = tmp_path / "run"
    assert main(["train", *RUN, "--save-steps", "4", "--output-dir", str(run_dir)]) == 1
    err = last_line(capsys.readouterr().err)  # (the lines above it are the progress bar)
    assert err.startswith("florence-tune train: error: could not save checkpoint-8")
    assert "No space left on device" in err
    assert "checkpoint-4 is kept" in err and "--resume" in err
    assert [p.name for p in checkpoints.complete_checkpoints(run_dir)] == ["checkpoint-4"]
    assert not list(run_dir.glob("tmp-*")) and not (run_dir / "checkpoint-8").exists()
    assert loading.resolve_model_path(str(run_dir)) == str(run_dir / "checkpoint-4")
    loading.load(str(run_dir))  # loadable

    monkeypatch.setattr(modeling_utils, "safe_save_file", real_save)
    real_load, loads = torch.load, []

    def recording_load(*args, **kwargs):  # how the Trainer reads the optimizer, scheduler and RNG files
        loads.append((Path(args[0]).name, kwargs.get("weights_only")))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    assert main(["train", *RUN, "--save-steps", "4", "--output-dir", str(run_dir), "--resume"]) == 0
    assert_bit_identical(weights(run_dir / "final"), weights(reference / "final"))
    assert {name for name, _ in loads} >= {"optimizer.pt", "scheduler.pt", "rng_state.pth"}
    assert all(weights_only is True for _, weights_only in loads), loads


# --- non-finite steps ------------------------------------------------------------------------


class Probe(TrainerCallback):
    """Copies of the weights and of the optimizer state after every step."""

    def __init__(self):
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.moments: dict[int, list[torch.Tensor]] = {}

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.weights[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.moments[state.global_step] = [t.clone() for s in optimizer.state.values() for t in s.values()]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


def test_nonfinite_steps_are_skipped_counted_and_a_streak_stops_the_run(tmp_path, monkeypatch, capsys):
    nan_loss, inf_grad = {3, 7, 8, 9}, {5}  # steps (1-based); 7-9 are three in a row
    real_loss = trainer.FlorenceTrainer.compute_loss
    hooked = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = real_loss(self, model, inputs, return_outputs, num_items_in_batch)
        if not hooked:  # a finite loss whose gradient overflows, at the steps in inf_grad
            first = next(p for p in model.parameters() if p.requires_grad)
            hooked.append(first.register_hook(
                lambda grad: grad * float("inf") if self.state.global_step + 1 in inf_grad else grad))
        if model.training and self.state.global_step + 1 in nan_loss:
            loss = loss * float("nan")
        return loss

    probe = Probe()
    real_build = train_command.build_trainer

    def build_with_probe(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        trainer.add_callback(probe)
        return trainer

    monkeypatch.setattr(trainer.FlorenceTrainer, "compute_loss", compute_loss)
    monkeypatch.setattr(train_command, "build_trainer", build_with_probe)
    run_dir = tmp_path / "run"
    argv = ["train", *RUN, "--max-steps", "12", "--save-steps", "100", "--max-nonfinite-steps", "3",
            "--output-dir", str(run_dir)]
    assert main(argv) == 1

    err = last_line(capsys.readouterr().err)
    assert "not finite for 3 steps in a row (steps 7-9)" in err and "continue with:" in err, err
    for skipped in (3, 5, 7, 8, 9):
        assert same(probe.weights[skipped], probe.weights[skipped - 1]), f"step {skipped} changed the weights"
        assert all(torch.equal(a, b) for a, b in zip(probe.moments[skipped], probe.moments[skipped - 1],
                                                     strict=True)), f"step {skipped} changed the optimizer state"
    for trained in (4, 6):
        assert not same(probe.weights[trained], probe.weights[trained - 1])
    # stopped at once, with a checkpoint of the last good weights (those after step 6)
    assert max(probe.weights) == 9
    saved = weights(run_dir / "checkpoint-9")
    compared = [n for n in probe.weights[6] if n in saved]
    assert len(compared) > len(saved) // 2
    assert all(torch.equal(saved[n], probe.weights[6][n]) for n in compared)
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["skipped_updates"] for e in events if "loss" in e] == [0, 0, 1, 1, 2, 2, 3, 4, 5]

    # resuming carries the count on; the steps after the streak train normally
    nan_loss.clear()
    assert main([*argv, "--resume"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["skipped_updates"] == 5 and summary["steps"] == 12


# --- checkpoint folders ----------------------------------------------------------------------


def make_checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    folder = run_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    if complete:
        (folder / checkpoints.MARKER).write_text("{}")
    return folder


def test_incomplete_checkpoints_and_leftovers_are_never_picked(tmp_path):
    make_checkpoint(tmp_path, 4)
    make_checkpoint(tmp_path, 8, complete=False)  # cut short by a crash
    (tmp_path / "tmp-checkpoint-12" / "checkpoint-12").mkdir(parents=True)
    assert checkpoints.newest_complete(tmp_path) == tmp_path / "checkpoint-4"
    assert loading.resolve_model_path(str(tmp_path)) == str(tmp_path / "checkpoint-4")
    assert checkpoints.remove_leftovers(tmp_path) == [tmp_path / "tmp-checkpoint-12"]
    assert (tmp_path / "checkpoint-4").exists() and (tmp_path / "checkpoint-8").exists()


def test_rotation_keeps_the_newest_and_drops_an_abandoned_future(tmp_path):
    for step in (2, 4, 6, 10):
        make_checkpoint(tmp_path, step)
    newest = make_checkpoint(tmp_path, 8)  # saved after resuming from checkpoint-6
    removed = checkpoints.rotate(tmp_path, keep=2, newest=newest)
    assert sorted(p.name for p in removed) == ["checkpoint-10", "checkpoint-2", "checkpoint-4"]
    assert [p.name for p in checkpoints.complete_checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-8"]
    assert checkpoints.rotate(tmp_path, keep=1, newest=newest) == [tmp_path / "checkpoint-6"]
    assert checkpoints.rotate(tmp_path, keep=1, newest=newest) == []


def test_publish_replaces_a_folder_of_the_same_step(tmp_path):
    old = make_checkpoint(tmp_path, 5)
    (old / "stale").write_text("x")
    staged = tmp_path / "tmp-checkpoint-5" / "checkpoint-5"
    staged.mkdir(parents=True)
    (staged / "model.safetensors").write_text("new")
    target = checkpoints.publish(staged, tmp_path, 5)
    assert sorted(p.name for p in target.iterdir()) == [checkpoints.MARKER, "model.safetensors"]
    assert json.loads((target / checkpoints.MARKER).read_text())["step"] == 5


# --- settings checked before any heavy work --------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume", "--overwrite"], "--resume continues the run"),
        (["--save-steps", "-1"], "--save-steps must be 0 or more"),
        (["--eval-steps", "-5"], "--eval-steps must be 0 or more"),
        (["--max-nonfinite-steps", "0"], "--max-nonfinite-steps must be at least 1"),
        (["--resume"], "nothing to resume in"),
        (["--resume", "nowhere/checkpoint-3"], "is not a folder"),
    ],
)
def test_impossible_settings_are_one_line(extra, message, tmp_path, capsys):
    assert main(["train", *RUN, "--output-dir", str(tmp_path / "empty"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_bare_resume_means_auto():
    from florence_tune.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--resume"]).resume == "auto"
    assert parser.parse_args(["train", "--resume", "runs/x/checkpoint-4"]).resume == "runs/x/checkpoint-4"
    assert parser.parse_args(["train"]).resume is None


def test_resume_refuses_changed_training_settings_and_names_them(reference, capsys):
    before = (reference / "summary.json").read_text()
    assert main(["train", *RUN, "--output-dir", str(reference), "--resume", "--lr", "1e-2", "--batch-size", "4",
                 "--save-steps", "3", "--logging-steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "batch_size (saved 2, now 4)" in err and "lr (saved 0.002, now 0.01)" in err
    assert "save_steps" not in err and "logging_steps" not in err  # they do not change the training
    assert (reference / "summary.json").read_text() == before


def test_existing_run_is_refused_without_resume_or_overwrite(reference, capsys):
    assert main(["train", *RUN, "--output-dir", str(reference)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_incomplete_checkpoint_path_is_refused(tmp_path, capsys):
    folder = make_checkpoint(tmp_path, 3, complete=False)
    assert main(["train", *RUN, "--output-dir", str(tmp_path), "--resume", str(folder)]) == 2
    assert "is not a complete checkpoint" in capsys.readouterr().err
    (tmp_path / "mydata").mkdir()
    assert main(["train", *RUN, "--output-dir", str(tmp_path / "run"), "--resume", str(tmp_path / "mydata")]) == 2
    err = capsys.readouterr().err
    assert "is not a checkpoint folder" in err and "interrupted" not in err


def test_run_config_leaves_out_per_invocation_flags(reference):
    saved = (reference / "config.yaml").read_text()
    assert "overwrite" not in saved and "resume" not in saved and "max_nonfinite_steps: 5" in saved


# --- safe loading ----------------------------------------------------------------------------


def test_checkpoints_hold_safetensors_weights_and_nothing_loads_pickles(reference):
    checkpoint = checkpoints.newest_complete(reference)
    assert (checkpoint / "model.safetensors").exists() and not (checkpoint / "pytorch_model.bin").exists()
    source = Path(trainer.__file__).parents[1]  # the whole package
    for path in source.rglob("*.py"):
        text = path.read_text()
        assert "weights_only=False" not in text and "pickle.load" not in text, path


# --- fuzzing: arbitrary bytes as an image file inside a local dataset ------------------------


@pytest.fixture(scope="module")
def collator(tiny):
    model, processor = tiny
    return Collator(processor, max_positions=encoder_positions(model))


@pytest.fixture(scope="module")
def good_row():
    return synthetic.generate_split("train", 1, seed=11)[0]


def _small_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _small_png()
payloads = st.one_of(
    st.binary(max_size=256),
    st.binary(max_size=256).map(lambda tail: PNG[:8] + tail),  # a PNG signature, then anything
    st.tuples(st.integers(0, len(PNG) - 1), st.integers(0, 255), st.integers(1, len(PNG))).map(
        lambda edit: (PNG[: edit[0]] + bytes([edit[1]]) + PNG[edit[0] + 1:])[: edit[2]]),  # a real PNG, damaged
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(payload=payloads)
def test_arbitrary_bytes_as_an_image_file_are_skipped_and_counted(payload, collator, good_row, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzzed")
    image_file = folder / "page.png"
    image_file.write_bytes(payload)
    rows = [{**good_row, "image": {"bytes": None, "path": str(image_file)}}, good_row]
    split = datasets.Dataset.from_list(rows, features=synthetic.FEATURES)
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(folder / "dataset"))

    dataset = data.load(str(folder / "dataset"), "train")
    items = [dataset[0], dataset[1]]
    batch, stats = collator(items)
    event("decoded" if isinstance(items[0], Sample) else items[0].reason)
    assert isinstance(items[1], Sample)
    if isinstance(items[0], Sample):  # the bytes happened to be a decodable image
        assert batch["pixel_values"].shape[0] == 2 and not stats
    else:
        assert items[0].reason.startswith("image_")
        assert stats == {f"skipped_{items[0].reason}": 1} and batch["pixel_values"].shape[0] == 1


def test_resumed_metrics_forget_the_repeated_steps_and_a_line_cut_by_a_kill(tmp_path):
    from florence_tune.training.reliability import drop_lines_after, logged_metrics

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 0, "before_anls": 0.25}\n{"step": 3, "loss": 1.5}\n{"step": 4, "loss": 1.4}\n'
                       '{"step": 5, "lo')
    drop_lines_after(metrics, 3)
    assert metrics.read_text() == '{"step": 0, "before_anls": 0.25}\n{"step": 3, "loss": 1.5}\n'
    assert logged_metrics(metrics, "before_") == {"before_anls": 0.25}


def test_resume_of_a_finished_run_changes_nothing_and_says_so(tmp_path, capsys):
    """A retry loop that always passes --resume must not retrain a run that ended (here with --max-steps)."""
    run_dir = tmp_path / "run"
    argv = ["train", *RUN, "--max-steps", "3", "--save-steps", "2", "--output-dir", str(run_dir)]
    assert main(argv) == 0
    capsys.readouterr()
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert main(["train", "--config", str(run_dir / "config.yaml"), "--resume"]) == 0
    out = capsys.readouterr()
    assert "finished" in out.err and "nothing to resume" in out.err
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before, sorted(set(after) ^ set(before)) or "a file changed"
    assert json.loads(out.out.strip().splitlines()[-1])["steps"] == 3


def test_a_run_started_with_relative_paths_resumes_from_anywhere(tmp_path, monkeypatch, capsys):
    """config.yaml holds resolved local paths, so the printed command works from another directory."""
    import yaml

    home = tmp_path / "work"
    (home / "data").mkdir(parents=True)
    (home / "data" / "page.png").write_bytes(builders.png())
    rows = [{"image": "page.png", "question": f"q{i}", "answers": ["a"]} for i in range(6)]
    (home / "data" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(home)
    argv = ["train", "--dataset", "data/rows.jsonl", "--holdout-rows", "0", "--eval-split", "none",
            "--max-steps", "2", "--batch-size", "2", "--report-to", "none", "--output-dir", "runs/rel"]
    assert main(argv) == 0
    saved = yaml.safe_load((home / "runs" / "rel" / "config.yaml").read_text())
    assert saved["output_dir"] == str(home / "runs" / "rel") and saved["dataset"] == str(home / "data" / "rows.jsonl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["train", "--config", str(home / "runs" / "rel" / "config.yaml"), "--resume"]) == 0
    assert "is finished" in capsys.readouterr().err and not (elsewhere / "runs").exists()
    monkeypatch.chdir(home)  # the relative spelling names the same run and the same data: nothing differs
    assert main([*argv, "--resume"]) == 0


@pytest.mark.multiprocess
def test_sigterm_before_training_starts_exits_75_and_the_folder_is_reused(tmp_path):
    """A signal during the evaluation before training: nothing to save, exit 75 with the command that goes on;
    that command (and a plain rerun) accepts the started folder."""
    run_dir = tmp_path / "run"
    slow_start = ["--eval-split", "validation", "--max-eval-samples", "60", "--num-beams", "4",
                  "--max-new-tokens", "24"]
    process = start_training(run_dir, "--save-steps", "100", *slow_start)
    wait_until(process, run_dir, lambda: (run_dir / "config.yaml").exists())  # evaluating, not yet training
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=300)
    err = stderr_of(run_dir)
    assert process.returncode == 75, err[-2000:]
    message = last_line(err)
    assert "SIGTERM received before training started" in message and "continue with: " in message, message
    assert not list(run_dir.glob("checkpoint-*")) and not (run_dir / "final").exists()
    command = message.split("continue with: ")[1]
    assert main([*shlex.split(command)[1:], "--max-eval-samples", "2", "--num-beams", "1"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == TOTAL_STEPS


def test_a_resumed_run_logs_and_saves_at_its_new_cadence(tmp_path):
    """--logging-steps / --save-steps given on --resume take effect (and config.yaml records them)."""
    import shutil

    import yaml

    run_dir = tmp_path / "run"
    assert main(["train", *RUN, "--max-steps", "6", "--save-steps", "2", "--output-dir", str(run_dir)]) == 0
    for name in ("checkpoint-4", "checkpoint-6", "final", "summary.json"):  # as a kill after step 2 leaves it
        target = run_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert main(["train", *RUN, "--max-steps", "6", "--save-steps", "3", "--logging-steps", "2",
                 "--output-dir", str(run_dir), "--resume"]) == 0
    logged = [step for step, _ in losses_by_step(run_dir)]
    assert logged == [1, 2, 4, 6], logged
    assert checkpoints.step_of(checkpoints.newest_complete(run_dir)) == 6 and (run_dir / "checkpoint-3").is_dir()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (saved["logging_steps"], saved["save_steps"]) == (2, 3)


def test_resume_names_a_change_in_the_local_data(tmp_path, capsys):
    """What the data was (its files, sizes, stamps) is saved with the run; a resume on changed data says what."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "page.png").write_bytes(builders.png())
    rows = [{"image": "page.png", "question": f"q{i}", "answers": ["a"]} for i in range(6)]
    (data_dir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    argv = ["train", "--dataset", str(data_dir), "--holdout-rows", "0", "--eval-split", "none",
            "--max-steps", "4", "--save-steps", "2", "--batch-size", "2", "--report-to", "none",
            "--output-dir", str(run_dir)]
    assert main(argv) == 0
    for name in ("checkpoint-4", "final", "summary.json"):  # as a kill after step 2 leaves it
        target = run_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    (data_dir / "page.png").write_bytes(builders.png((10, 200, 10), size=(60, 40)))
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "page.png" in err[0] and "changed" in err[0]

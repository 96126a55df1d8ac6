"""Training runs that survive interruption: resume, preemption, atomic checkpoints, guarded steps.

* ``--resume`` picks its checkpoint and refuses changed settings in ``commands/train.py``; the
  continuation itself is ``Trainer.train(resume_from_checkpoint=...)``: it restores weights,
  optimizer, scheduler, grad scaler and every RNG, and skips the batches already seen.
* ``ReliableTrainerMixin`` — put before ``Trainer`` in a subclass's bases. It publishes checkpoints
  atomically (see ``checkpoints``), skips updates whose loss or gradients are not finite, turns
  SIGTERM/SIGINT into a checkpoint at the next step boundary, and carries its counters in checkpoints.
* ``any_rank`` — one flag agreed by every process under torchrun, so all ranks stop or skip together.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import ProgressCallback, TrainerCallback

from florence_tune.errors import FlorenceTuneError, Stopped
from florence_tune.model import checkpoints

log = logging.getLogger(__name__)

STATE_FILE = "florence_tune_state.json"  # our counters, inside every checkpoint
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# --- resuming ----------------------------------------------------------------------------------


def resume_command(run_dir: str | Path) -> str:
    """The command that continues the run in ``run_dir`` with exactly its saved settings (and launcher)."""
    return f"{_launcher()} --config {shlex.quote(str(Path(run_dir) / 'config.yaml'))} --resume"


def _launcher() -> str:
    """``florence-tune train``, or the torchrun line that started this process with as many processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return "florence-tune train"
    per_node = os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])
    nodes = int(os.environ["WORLD_SIZE"]) // max(int(per_node), 1)
    where = f"--nnodes {nodes} <your rendezvous options> " if nodes > 1 else ""  # the endpoint is not ours to know
    return f"torchrun {where}--nproc-per-node {per_node} -m florence_tune train"


def logged_metrics(metrics_file: Path, prefix: str) -> dict[str, Any]:
    """The latest logged values whose names start with ``prefix`` (e.g. the first part's 'before_' ANLS)."""
    if not metrics_file.is_file():
        return {}
    found: dict[str, Any] = {}
    for line in metrics_file.read_text().splitlines():
        event = _json_or_none(line)
        if event and any(key.startswith(prefix) for key in event):
            found = {key: value for key, value in event.items() if key.startswith(prefix)}
    return found


def drop_lines_after(metrics_file: Path, step: int) -> None:
    """Forget events logged after ``step`` (a resumed run repeats those steps and logs them again), and a
    last line cut short by a kill."""
    lines = metrics_file.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _logged_by(line, step)]
    if len(kept) != len(lines):
        staged = metrics_file.with_name(metrics_file.name + ".tmp")
        staged.write_text("".join(kept))
        os.replace(staged, metrics_file)


def _logged_by(line: str, step: int) -> bool:
    """A whole event line (a kill can cut the last one short) of ``step`` or earlier."""
    event = _json_or_none(line) if line.endswith("\n") else None
    return event is not None and event.get("step", 0) <= step


def _json_or_none(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:  # a line cut short by a kill
        return None
    return value if isinstance(value, dict) else None


# --- agreement between ranks -------------------------------------------------------------------


def any_rank(flag: bool, device: torch.device | str | None = None) -> bool:
    """True on every rank when ``flag`` is True on at least one; the flag itself when running alone.

    Every rank must call it at the same point (it is a collective), so decisions taken from it, such
    as stopping or skipping an update, happen at the same step everywhere.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bool(flag)
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


# --- callbacks ---------------------------------------------------------------------------------


class UpdateGuard(TrainerCallback):
    """Skip an optimizer update that has nothing to learn from (every micro-batch of it, on every rank, was
    unusable) or whose loss or gradients hold NaN/inf; stop after ``limit`` non-finite ones in a row.

    Skipping sets every gradient to None just before ``optimizer.step()`` (torch optimizers leave a parameter
    and its state — moments, step count, weight decay — untouched when it has no gradient), and raises
    accelerate's own "this step was skipped" flag, on which the Trainer leaves the learning-rate schedule where
    it was. accelerate sets that flag itself only when a GradScaler (fp16) skips a step, so it is set here for
    every update.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.skipped = 0  # updates skipped in the whole run for a non-finite loss or gradient
        self.empty = 0  # updates skipped in the whole run for having no usable sample
        self.in_a_row = 0
        self.gave_up_at: int | None = None
        self._losses_finite: torch.Tensor | None = None
        self._usable = False
        self._skipping = False

    def saw(self, usable: bool) -> None:
        """Note whether one micro-batch held a usable sample."""
        self._usable = self._usable or usable

    def observe(self, loss: torch.Tensor) -> None:
        """Note one micro-batch's loss; stays on the device (no sync) until the step ends."""
        finite = torch.isfinite(loss.detach()).all()
        self._losses_finite = finite if self._losses_finite is None else self._losses_finite & finite

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        usable, self._usable = any_rank(self._usable, args.device), False
        losses_finite, self._losses_finite = self._losses_finite, None
        if not usable:  # its loss is 0 / 0 tokens: not a numerical problem, nothing to learn
            self._skip(optimizer)
            self.empty += 1
            if self.empty == 1 and state.is_world_process_zero:
                log.warning("step %d: no sample of this update was usable; the update is skipped (every such "
                            "update is counted as empty_updates)", state.global_step + 1)
            return
        finite = _gradients_finite(model)
        if losses_finite is not None:
            finite = finite & losses_finite.to(finite.device)
        self._skipping = any_rank(not bool(finite), args.device)
        _hold_schedule(optimizer, self._skipping)
        if not self._skipping:
            self.in_a_row = 0
            return
        self._skip(optimizer)
        self.skipped += 1
        self.in_a_row += 1
        if state.is_world_process_zero:
            log.warning("step %d: loss or gradients are not finite; update skipped (%d in a row, %d in all)",
                        state.global_step + 1, self.in_a_row, self.skipped)

    @staticmethod
    def _skip(optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        _hold_schedule(optimizer, True)

    def on_step_end(self, args, state, control, **kwargs):
        if self._skipping and self.in_a_row >= self.limit:
            self.gave_up_at = state.global_step
            control.should_save = True  # the weights are still those of the last good step
            control.should_training_stop = True


def _hold_schedule(optimizer, hold: bool) -> None:
    """Raise or lower accelerate's skipped-step flag (``AcceleratedOptimizer.step_was_skipped``)."""
    if hasattr(optimizer, "_is_overflow"):
        optimizer._is_overflow = hold


def _gradients_finite(model) -> torch.Tensor:
    """One boolean tensor: every gradient entry is finite (a sum is NaN/inf when any entry is)."""
    sums = [p.grad.detach().float().sum() for p in model.parameters() if p.grad is not None]
    if not sums:
        return torch.tensor(True)
    return torch.isfinite(torch.stack(sums).sum())


class StopOnSignal(TrainerCallback):
    """SIGTERM/SIGINT ask for a checkpoint at the next step boundary and a clean stop; a second one stops at once."""

    def __init__(self):
        self.received: str | None = None
        self.stopped_at: int | None = None
        self.training = False  # before training, a stop has no step to finish and nothing to save

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        """Own SIGTERM/SIGINT while the block runs, then give them back."""
        if threading.current_thread() is not threading.main_thread():  # Python allows handlers only there
            yield
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            raise SystemExit(128 + signum)  # the second one stops at once, with the signal's conventional code
        self.received = name
        then = "saving a checkpoint after this step, then stopping" if self.training else "stopping before training"
        # os.write, not print: a handler may interrupt a print already in progress
        os.write(2, f"{name} received: {then} (send it again to stop at once)\n".encode())

    def raise_if_received(self, run_dir: Path, device=None) -> None:
        """Before training: stop now (75) with the command that starts the run again, if a signal came to any
        rank (every rank calls this at the same point, so all stop together)."""
        if any_rank(self.received is not None, device):
            self.received = self.received or "a stop signal on another rank"
            raise Stopped(f"{self.received} received before training started: nothing to save yet; "
                          f"continue with: {resume_command(run_dir)}")

    def on_step_end(self, args, state, control, **kwargs):
        if any_rank(self.received is not None, args.device):
            self.received = self.received or "a stop signal on another rank"
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True


# --- the trainer mixin -------------------------------------------------------------------------


class ReliableTrainerMixin:
    """Atomic checkpoints, guarded steps and stop-on-signal for a ``transformers.Trainer`` subclass.

    Hooks (``Trainer`` methods overridden): ``train`` (signals, counters, leftovers), ``_init_training_state``
    (this invocation's logging / evaluation / save cadence on resume),
    ``training_step`` (watches the loss), ``_save_checkpoint`` (stage, then publish),
    ``_get_output_dir`` (points the parent's save at the staging folder), ``log`` (adds the count
    of skipped updates).
    """

    def __init__(self, *args, max_nonfinite_steps: int = 5, stopper: StopOnSignal | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.guard = UpdateGuard(max_nonfinite_steps)
        self.stopper = stopper or StopOnSignal()  # the command's own, when it listens from its start
        self.add_callback(self.guard)
        self.add_callback(self.stopper)
        self._staging: Path | None = None
        self._published_step: int | None = None

    # -- training ---------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | None = None, **kwargs):
        if resume_from_checkpoint:
            self._restore_counters(Path(resume_from_checkpoint))
            if self.args.should_save:
                checkpoints.remove_leftovers(Path(self.args.output_dir))
        self.stopper.training = True
        with self.stopper.listening():
            try:
                output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
            except (FlorenceTuneError, KeyboardInterrupt):
                self._close_progress_bar()
                raise
        self._raise_if_stopped_early()
        return output

    def _init_training_state(self, max_steps, *args, **kwargs):
        # A resumed state carries the first part's logging / evaluation / save cadence; the settings of this
        # invocation may change them (they never change the training), so they take effect here.
        found = super()._init_training_state(max_steps, *args, **kwargs)
        self.state.compute_steps(self.args, max_steps)
        return found

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.guard.observe(loss)
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # training-loss events carry the running counts of skipped updates
            logs = {**logs, "skipped_updates": self.guard.skipped, "empty_updates": self.guard.empty}
        super().log(logs, start_time)

    def _close_progress_bar(self) -> None:
        """End the bar's line, so an error raised mid-training is printed on a line of its own."""
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, ProgressCallback) and callback.training_bar is not None:
                callback.training_bar.close()
                callback.training_bar = None

    def _raise_if_stopped_early(self) -> None:
        run_dir = Path(self.args.output_dir)
        where = checkpoints.newest_complete(run_dir)
        if self.guard.gave_up_at is not None:
            first = self.guard.gave_up_at - self.guard.in_a_row + 1
            raise FlorenceTuneError(
                f"the loss or gradients were not finite for {self.guard.in_a_row} steps in a row "
                f"(steps {first}-{self.guard.gave_up_at}); their updates were skipped and the last good weights "
                f"are in {where}; check the data or lower --lr in a new run, "
                f"or continue with: {resume_command(run_dir)}")
        if self.stopper.stopped_at is not None and self.state.global_step < self.state.max_steps:
            raise Stopped(f"{self.stopper.received} received: stopped at step {self.stopper.stopped_at} with the "
                          f"checkpoint {where}; continue with: {resume_command(run_dir)}")

    # -- checkpoints ------------------------------------------------------------------------

    def _get_output_dir(self, trial) -> str:
        # The parent's _save_checkpoint writes into <this>/checkpoint-N and rotates checkpoints there: during
        # our save that is the staging folder. (Best-model tracking would record the staging path; unused here.)
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """The parent writes into ``tmp-checkpoint-N/``; only a complete folder becomes ``checkpoint-N``."""
        step = self.state.global_step
        if step == self._published_step:  # an epoch end right after a forced (signal) save asks again
            return
        run_dir = Path(self._get_output_dir(trial))
        self._staging = checkpoints.staging_root(run_dir, step)
        failure: BaseException | None = None
        try:
            super()._save_checkpoint(model, trial)
            self._point_at_published_best(run_dir, self._staging / f"checkpoint-{step}")
            self._write_counters(self._staging / f"checkpoint-{step}")
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
            log.debug("saving checkpoint-%d failed", step, exc_info=True)  # the traceback, for FLORENCE_TUNE_VERBOSE
            failure = exc
        finally:
            staging, self._staging = self._staging, None
        if any_rank(failure is not None, self.args.device):
            self._give_up_saving(staging, run_dir, step, failure)
        self.accelerator.wait_for_everyone()  # every rank's RNG file is in before the rename
        if self.args.should_save:
            target = checkpoints.publish(staging / f"checkpoint-{step}", run_dir, step)
            shutil.rmtree(staging, ignore_errors=True)
            best = Path(self.state.best_model_checkpoint) if self.state.best_model_checkpoint else None
            checkpoints.rotate(run_dir, self.args.save_total_limit or 0, target, keep_also=best)
        self.accelerator.wait_for_everyone()
        self._published_step = step

    def _point_at_published_best(self, run_dir: Path, staged: Path) -> None:
        """The Trainer records the best checkpoint under the folder it saved into (our staging folder, renamed
        away next): record where it is published instead, in the state and in the staged trainer_state.json."""
        best = self.state.best_global_step
        if not (self.args.load_best_model_at_end and best):
            return
        self.state.best_model_checkpoint = str(run_dir / f"checkpoint-{best}")
        if self.args.should_save:
            self.state.save_to_json(str(staged / "trainer_state.json"))

    def _give_up_saving(self, staging: Path, run_dir: Path, step: int, failure: BaseException | None) -> None:
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # also gives back the space it took
        kept = checkpoints.newest_complete(run_dir)
        reason = first_line(failure) if failure is not None else "it failed on another rank"
        free = _free_space(run_dir)
        next_step = (f"free space, then continue with: {resume_command(run_dir)}" if kept is not None
                     else "free space, then start the run again")
        raise FlorenceTuneError(
            f"could not save checkpoint-{step} in '{run_dir}' ({reason}; {free} free there); "
            f"{f'{kept.name} is kept and loadable' if kept is not None else 'no earlier checkpoint exists'}; "
            f"{next_step}") from None

    def _counters_file(self, folder: Path) -> Path:
        if self.args.world_size <= 1:
            return folder / STATE_FILE
        return folder / STATE_FILE.replace(".json", f"_{self.args.process_index}.json")  # one per rank, like RNG

    def _write_counters(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        counters = {"skipped_updates": self.guard.skipped, "empty_updates": self.guard.empty,
                    "nonfinite_in_a_row": self.guard.in_a_row,
                    "train_stats": dict(getattr(self, "train_stats", {})),
                    "samples_used": getattr(self, "samples_used", 0)}
        self._counters_file(folder).write_text(json.dumps(counters, indent=1))

    def _restore_counters(self, checkpoint: Path) -> None:
        found = self._counters_file(checkpoint)
        if not found.is_file():
            found = checkpoint / STATE_FILE
        if not found.is_file():
            return
        counters = json.loads(found.read_text())
        self.guard.skipped = counters.get("skipped_updates", 0)
        self.guard.empty = counters.get("empty_updates", 0)
        self.guard.in_a_row = counters.get("nonfinite_in_a_row", 0)
        if hasattr(self, "train_stats"):
            self.train_stats.update(counters.get("train_stats", {}))
            self.samples_used = counters.get("samples_used", 0)


def first_line(exc: BaseException) -> str:
    text = (os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown space"
    for unit in ("B", "KB", "MB", "GB"):
        if free < 1024:
            return f"{free:.0f} {unit}"
        free /= 1024
    return f"{free:.1f} TB"

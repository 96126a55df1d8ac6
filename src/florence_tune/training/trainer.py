"""``FlorenceTrainer``: ``transformers.Trainer`` plus counted bad samples, generation metrics at every
evaluation, one evaluation-loss pass for every kind of dataset, and metrics.jsonl.

Built by ``commands/train.py`` from plain values (``florence-tune train ...``); reliability (resume,
signals, atomic checkpoints, NaN guard) comes from ``reliability.ReliableTrainerMixin``.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from florence_tune import distributed
from florence_tune.batch.collate import Batch
from florence_tune.data import stream
from florence_tune.evaluation import loop, records
from florence_tune.evaluation.generation import CUT_ANSWERS, Decoding
from florence_tune.training import loaders, reliability

log = logging.getLogger(__name__)
TABLES = ("by_source", "by_task")  # the evaluation summary's tables, kept apart from the logged numbers


def _plain_inputs(model, inputs: dict[str, Any]) -> dict[str, Any]:
    return inputs


class FlorenceTrainer(reliability.ReliableTrainerMixin, Trainer):
    """``Trainer`` plus: counters of skipped/truncated samples, and generation metrics at evaluation.

    Batches are ``batch.collate.Batch`` tuples (model inputs, counters). ``fast``: the page path
    (``loaders.FastPath``) or None; whether inputs go through it is decided here, once.
    """

    def __init__(self, *args, decoding: Decoding, predictions_path: Path, fast: loaders.FastPath | None = None,
                 metric_names: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast = fast
        self.model_inputs: Callable = fast.path.model_inputs if fast is not None else _plain_inputs
        self.decoding = decoding
        self.metric_names = metric_names  # None: chosen by the samples' tasks (task_metrics)
        self.predictions_path = predictions_path
        self.train_stats: collections.Counter = collections.Counter()
        self.samples_used = 0  # usable training samples this rank has seen (train_stats counts the others)
        self._last_eval: tuple[int, dict[str, float]] | None = None

    def final_step(self) -> int:
        """The step of the weights the model holds now: the best checkpoint's once the Trainer loaded it."""
        if self.args.load_best_model_at_end and self.state.best_global_step:
            return self.state.best_global_step
        return self.state.global_step

    def latest_evaluation(self) -> dict[str, float]:
        """Metrics of the weights the model holds: reused when training just evaluated them, computed otherwise
        (after the Trainer put the best checkpoint back, predictions.jsonl is written for it too)."""
        if self._last_eval is not None and self._last_eval[0] == self.state.global_step == self.final_step():
            return self._last_eval[1]
        return self.evaluate()

    # -- batches ----------------------------------------------------------------------------------

    def _prepare_inputs(self, batch: Batch) -> Batch:
        """Tensors to the device; the counters stay as they are (the Trainer's own walk rebuilds tuples
        positionally, which a named tuple does not accept)."""
        return Batch(self._prepare_input(batch.inputs), batch.stats)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        # An unusable batch counts zero tokens but still joins the count's gather under DDP: every rank must.
        nothing = {"labels": torch.empty((0, 1), dtype=torch.long)}
        return super()._get_num_items_in_batch([nothing if b.empty else b.inputs for b in batch_samples], device)

    def floating_point_ops(self, inputs: Batch) -> int:
        return super().floating_point_ops(inputs.inputs) if not inputs.empty else 0

    def _track_num_input_tokens(self, inputs: Batch):
        return super()._track_num_input_tokens(inputs.inputs)

    def compute_loss(self, model, inputs: Batch, return_outputs=False, num_items_in_batch=None):
        unusable = inputs.empty  # every sample of this batch was unusable
        if model.training:
            self.train_stats.update(inputs.stats)
            self.samples_used += inputs.size
            self.guard.saw(usable=not unusable)
        if unusable:  # the model runs all the same, on a blank sample, and learns nothing: under DDP every rank
            inputs = Batch(self._prepare_input(self.data_collator.placeholder()), {})  # joins the same collectives
        with self.accelerator.autocast():
            model_inputs = self.model_inputs(model, inputs.inputs)
        result = super().compute_loss(model, model_inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        if not unusable:
            return result
        return (result[0] * 0.0, None) if return_outputs else result * 0.0

    def get_train_dataloader(self):
        """The one place that picks the training loader: page by page, a stream's own shard, or the Trainer's."""
        if self.fast is not None and self.fast.sampler is not None:
            return loaders.page_train_loader(self, self.fast)
        if not self.train_dataset.random_access:  # it reads only this rank's shard; see data/stream.py
            return stream.loader(self.train_dataset.forever(), batch_size=self._train_batch_size,
                                 collate_fn=self.data_collator, num_workers=self.args.dataloader_num_workers)
        return super().get_train_dataloader()

    # -- evaluation -------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluation loss over this rank's share (any kind of dataset, unusable batches skipped), then the
        generation metrics (ANLS, mAP...) over the whole split."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        output = self.evaluation_loss(dataset, metric_key_prefix)
        generated = self.generation_metrics(dataset, metric_key_prefix)
        tables = {key: generated.pop(f"{metric_key_prefix}_{key}") for key in TABLES
                  if f"{metric_key_prefix}_{key}" in generated}
        self.log(generated)
        output.update(generated)
        # each source by its own metric, each task apart: for summary.json, not numbers to log
        output.update({f"{metric_key_prefix}_{key}": table for key, table in tables.items()})
        # once, with every number: early stopping and best-checkpoint callbacks read the task metrics here
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, output)
        if metric_key_prefix == "eval":
            self._last_eval = (self.state.global_step, output)
        return output

    def evaluation_loss(self, dataset, prefix: str) -> dict[str, float]:
        self.model.eval()
        batches = dataset.loader(batch_size=self.args.per_device_eval_batch_size, collate_fn=self.data_collator,
                                 num_workers=self.args.dataloader_num_workers)

        def loss_of(inputs):
            with self.compute_loss_context_manager():
                return self.compute_loss(self.model, self._prepare_inputs(Batch(inputs, {})))

        loss = loop.mean_loss(loss_of, batches)
        metrics = {f"{prefix}_loss": loss} if loss is not None else {}
        self.log(metrics)
        return metrics

    def generation_metrics(self, dataset, prefix: str) -> dict[str, float]:
        with self.accelerator.autocast():  # answers generated in the precision the run trains in (--bf16, --fp16)
            found, skipped = loop.predict_dataset(
                self.model, self.processing_class, dataset, batch_size=self.args.per_device_eval_batch_size,
                num_workers=self.args.dataloader_num_workers, decoding=self.decoding)
        if distributed.is_main():
            records.write_predictions(found, self.predictions_path)
        summary = records.summarise(found, self.metric_names)
        # every number of the summary (VQA: anls, exact_match, n; <OD>: map, map_50, n...); None = nothing scored
        result = {f"{prefix}_{name}": value for name, value in summary.items()
                  if isinstance(value, int | float) and not isinstance(value, bool)}
        unusable = sum(n for name, n in skipped.items() if name.startswith("skipped_"))
        result.update({f"{prefix}_skipped": unusable} if unusable else {})
        result.update({f"{prefix}_{CUT_ANSWERS}": skipped[CUT_ANSWERS]} if skipped.get(CUT_ANSWERS) else {})
        result.update({f"{prefix}_{key}": summary[key] for key in TABLES if summary.get(key)})
        return result


class MetricsFileCallback(TrainerCallback):
    """Append every log event (train loss, eval loss, ANLS...) as one JSON line."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.path.exists():  # a resumed run logs its later steps anew
            reliability.drop_lines_after(self.path, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


def tensorboard_callback(args: TrainingArguments, run_dir: Path) -> list[TrainerCallback]:
    """The Trainer's own TensorBoard integration, writing into ``run_dir/tensorboard``.

    Built here rather than through ``report_to``: its writer falls back to ``./runs`` in the working
    directory when something is logged before ``on_train_begin`` — our evaluation before training.
    """
    if "tensorboard" not in args.report_to:
        return []
    from transformers.integrations import TensorBoardCallback

    args.report_to = [name for name in args.report_to if name != "tensorboard"]
    callback = TensorBoardCallback()
    callback.logging_dir = str(run_dir / "tensorboard")
    return [callback]


def peak_memory_mib() -> float:
    """Peak GPU memory allocated by torch, or this process's peak resident memory on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

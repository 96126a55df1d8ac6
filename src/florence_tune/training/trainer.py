"""Fine-tuning on ``transformers.Trainer``: generation-based evaluation (ANLS), counted bad samples,
metrics.jsonl, final/ checkpoint and model card.

Run it: ``florence-tune train`` (embedded demo) or
``florence-tune train --model florence-community/Florence-2-base --dataset docvqa --output-dir runs/docvqa``.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from florence_tune import data, distributed, paths
from florence_tune.batch.collate import Collator, encoder_positions
from florence_tune.config import TrainConfig, to_yaml
from florence_tune.data import stream
from florence_tune.errors import UsageError
from florence_tune.evaluation import loop, task_metrics
from florence_tune.model import loading, strategies
from florence_tune.reporting import report
from florence_tune.reporting.model_card import write_model_card
from florence_tune.training import reliability

log = logging.getLogger(__name__)
BASELINE_TRAIN_SAMPLES = 5000  # enough for the image-blind baseline; bounded so huge sources stay cheap


def train(config: TrainConfig) -> dict[str, Any]:
    """The ``train`` command: reads like its own table of contents."""
    validate(config)
    distributed.init()  # joins the process group under torchrun; a no-op for one process
    run_dir = Path(config.output_dir)
    resume_from = reliability.resume_point(run_dir, config)  # None unless --resume
    if resume_from is None:
        refuse_existing_run(run_dir, config)
    distributed.barrier()  # every rank has checked the folder before rank 0 touches it
    with distributed.main_process_first():  # rank 0 builds caches / downloads, the others reuse them
        train_data, eval_data = load_splits(config)
        model, processor = load_model(config)
    report_parameters(model)
    if distributed.is_main():
        prepare_run_dir(run_dir, config)
    distributed.barrier()
    trainer = build_trainer(model, processor, train_data, eval_data, config, run_dir)

    if resume_from:  # the first part of the run measured the start; its numbers are in metrics.jsonl
        before = reliability.logged_metrics(run_dir / "metrics.jsonl", "before_")
    else:
        before = trainer.evaluate(metric_key_prefix="before") if eval_data is not None and config.eval_before else {}
    trainer.train(resume_from_checkpoint=resume_from)
    after = trainer.latest_evaluation() if eval_data is not None else {}

    final_dir = run_dir / "final"
    baseline = (loop.majority_baseline(itertools.islice(train_data.text_samples(), BASELINE_TRAIN_SAMPLES),
                                             eval_data.text_samples())
                if eval_data is not None else None)
    summary = summarise_run(config, trainer, before, after, baseline, final_dir)
    if distributed.is_main():  # one writer for everything in the run directory
        loading.save(trainer.model, processor, final_dir)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        write_model_card(run_dir, config, summary)
        if eval_data is not None:
            report.write_report(run_dir, dataset=eval_data)
    distributed.barrier()
    return summary


def load_model(config: TrainConfig):
    """(model ready for its strategy, processor)."""
    strategy = strategies.parse_strategy(config.strategy)
    quantization = strategies.quantization_config() if strategy is strategies.Strategy.QLORA else None
    model, processor = loading.load(config.model, trust_remote_code=config.trust_remote_code,
                                     quantization=quantization)
    lora = strategies.LoraSettings(
        rank=config.lora_rank, alpha=config.lora_alpha, dropout=config.lora_dropout,
        targets=_split(config.lora_targets) or strategies.DEFAULT_LORA_TARGETS,
        use_dora=config.use_dora, use_rslora=config.use_rslora)
    model = strategies.apply(model, strategy, freeze=_split(config.freeze), lora=lora)
    if strategies.is_adapter_model(model):
        # Saved adapters name the model spec the user gave, so they reload through loading.load.
        model.peft_config["default"].base_model_name_or_path = config.model
    return model, processor


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def load_splits(config: TrainConfig):
    """(train data, eval data or None)."""
    options = {"clean_questions": config.clean_questions, "streaming": config.streaming,
               "multi_image": config.multi_image, "holdout_rows": config.holdout_rows, "seed": config.seed}
    train_data = data.load(config.dataset, config.train_split, config.task_prompt, limit=config.max_train_samples,
                           shuffle=config.shuffle, **options)
    if config.eval_split.lower() == "none":
        return train_data, None
    return train_data, data.load(config.dataset, config.eval_split, config.task_prompt,
                                 limit=config.max_eval_samples, **options)


def sharding_arguments(config: TrainConfig) -> dict[str, Any]:
    """FSDP or DeepSpeed instead of DDP; both run through the Trainer's own accelerate integration."""
    if config.fsdp and config.deepspeed:
        raise UsageError("choose one of --fsdp and --deepspeed")
    if config.fsdp:
        # Wrap at the repeated blocks of both towers so each GPU holds a shard of every layer.
        layers = "BartEncoderLayer,BartDecoderLayer,Florence2VisionBlock"
        return {"fsdp": True, "fsdp_config": {"transformer_layer_cls_to_wrap": layers.split(","),
                                              "reshard_after_forward": True}}
    if config.deepspeed:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise UsageError("--deepspeed needs the deepspeed package: pip install deepspeed")
        if not Path(config.deepspeed).is_file():
            raise UsageError(f"--deepspeed config file not found: {config.deepspeed}")
        return {"deepspeed": config.deepspeed}
    return {}


def validate_data(config: TrainConfig) -> None:
    """Dataset settings that cannot work, caught before anything is read."""
    if config.holdout_rows < 0:
        raise UsageError(f"--holdout-rows must be 0 or more (got {config.holdout_rows})")
    if data.makes_stream(config.dataset, config.streaming) and config.max_steps <= 0:
        why = "--streaming" if config.streaming else "a weighted mixture"
        raise UsageError(f"{why} has no length to count epochs by; give --max-steps (e.g. --max-steps 1000)")
    for split in (config.train_split, config.eval_split):
        if data.predict_only(config.dataset, split):
            raise UsageError(f"split '{split}' of '{config.dataset}' has no answers (it is for predictions only); "
                             "train on 'train' and evaluate on 'validation'")


def validate(config: TrainConfig) -> None:
    """Catch impossible settings before any heavy work."""
    task_metrics.parse_names(config.metrics)  # an unknown metric name is a usage error now, not after training
    positive = {"batch_size": config.batch_size, "grad_accum": config.grad_accum,
                "max_target_tokens": config.max_target_tokens, "num_beams": config.num_beams,
                "max_new_tokens": config.max_new_tokens}
    for name, value in positive.items():
        if value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
    if config.max_steps <= 0 and config.epochs <= 0:
        raise UsageError("give a positive --epochs or --max-steps")
    if config.lr is not None and config.lr <= 0:
        raise UsageError(f"--lr must be positive (got {config.lr})")
    for name in ("eval_steps", "save_steps", "save_total_limit", "warmup_steps", "eval_batch_size",
                 "max_train_samples", "max_eval_samples", "num_workers"):
        if getattr(config, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more (got {getattr(config, name)})")
    for name in ("logging_steps", "max_nonfinite_steps"):
        if getattr(config, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(config, name)})")
    if config.resume and config.overwrite:
        raise UsageError("--resume continues the run in --output-dir and --overwrite deletes it; pass only one")
    validate_data(config)


def refuse_existing_run(run_dir: Path, config: TrainConfig) -> None:
    """Never mix two runs in one folder, never delete anything but a run (checked before any heavy work)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--output-dir '{run_dir}' is a file; choose a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not config.overwrite:
            raise UsageError(f"output directory '{run_dir}' already holds a run; pass --overwrite to replace it "
                             "or choose another --output-dir")
        paths.check_replaceable_run(run_dir, paths.local_inputs(config.model, config.dataset))


def prepare_run_dir(run_dir: Path, config: TrainConfig) -> Path:
    """Start the run folder afresh and save the resolved config."""
    if run_dir.is_dir() and config.overwrite:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(config))
    return run_dir


def report_parameters(model) -> None:
    if not distributed.is_main():
        return
    trainable, total = loading.count_parameters(model)
    print(f"parameters: {trainable:,} trainable / {total:,} total ({100 * trainable / max(total, 1):.1f}%)")


def learning_rate(config: TrainConfig) -> float:
    """A model trained from scratch (tiny) needs a far larger step than a pretrained checkpoint."""
    if config.lr is not None:
        return config.lr
    return 1e-3 if config.model == "tiny" else 1e-5


def training_arguments(config: TrainConfig, run_dir: Path) -> TrainingArguments:
    """Map our flags onto ``TrainingArguments`` (the only place that knows both vocabularies)."""
    eval_every = "steps" if config.eval_steps > 0 else "epoch"
    save_every = "steps" if config.save_steps > 0 else "epoch"
    optional = {"optim": config.optim} if config.optim else {}
    return TrainingArguments(
        **optional,
        output_dir=str(run_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size or config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=learning_rate(config),
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        eval_strategy=eval_every if config.eval_split.lower() != "none" else "no",
        eval_steps=config.eval_steps or None,
        save_strategy=save_every,
        save_steps=config.save_steps or None,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        seed=config.seed,
        activation_checkpointing=config.gradient_checkpointing,
        train_sampling_strategy="random" if config.shuffle else "sequential",
        ddp_timeout=config.ddp_timeout,
        **sharding_arguments(config),
        bf16=config.bf16,
        dataloader_num_workers=config.num_workers,
        dataloader_persistent_workers=config.num_workers > 0,
        dataloader_prefetch_factor=4 if config.num_workers > 0 else None,
        dataloader_drop_last=config.compile,  # a compiled graph keeps one batch shape
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        prediction_loss_only=True,  # never gather full-vocabulary logits over the eval set
        label_names=["labels"],
        report_to=[] if config.report_to.strip().lower() == "none" else list(_split(config.report_to)),
        disable_tqdm=False,
    )


def build_trainer(model, processor, train_data, eval_data, config: TrainConfig, run_dir: Path) -> FlorenceTrainer:
    collator = Collator(processor, max_positions=encoder_positions(model),
                        max_target_tokens=config.max_target_tokens)
    from florence_tune.training import loaders

    fast = loaders.build(model, processor, train_data, eval_data, config, encoder_positions(model))
    if fast is not None:  # uint8 pages, vision once per page (loaders.py)
        collator, train_data, eval_data = fast.collator, fast.train_data, fast.eval_data
    loaders.prepare_model(model, config)
    args = training_arguments(config, run_dir)
    return FlorenceTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=collator,
        fast=fast,
        processing_class=processor,
        callbacks=[MetricsFileCallback(run_dir / "metrics.jsonl"), *tensorboard_callback(args, run_dir)],
        generation={"num_beams": config.num_beams, "max_new_tokens": config.max_new_tokens},
        max_nonfinite_steps=config.max_nonfinite_steps,
        predictions_path=run_dir / "predictions.jsonl",
        metric_names=task_metrics.parse_names(config.metrics),
    )


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


class FlorenceTrainer(reliability.ReliableTrainerMixin, Trainer):
    """``Trainer`` plus: counters of skipped/truncated samples, and ANLS from generation at eval."""

    def __init__(self, *args, generation: dict[str, int], predictions_path: Path, fast=None,
                 metric_names: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast = fast  # loaders.FastPath or None
        self.generation = generation
        self.metric_names = metric_names  # None: chosen by the samples' tasks (task_metrics)
        self.predictions_path = predictions_path
        self.train_stats: collections.Counter = collections.Counter()
        self._last_eval: tuple[int, dict[str, float]] | None = None

    def latest_evaluation(self) -> dict[str, float]:
        """Metrics at the current step: reused when training just evaluated, computed otherwise."""
        if self._last_eval is not None and self._last_eval[0] == self.state.global_step:
            return self._last_eval[1]
        return self.evaluate()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        stats = inputs.pop("stats", {})
        if model.training:
            self.train_stats.update(stats)
        if "input_ids" not in inputs:  # every sample in this batch was unusable
            loss = sum((p * 0.0).sum() for p in model.parameters() if p.requires_grad)
            return (loss, None) if return_outputs else loss
        if "page_index" in inputs:  # uint8 pages: vision once per page, into inputs_embeds (vision.py)
            with self.accelerator.autocast():
                inputs = self.fast.path.model_inputs(model, inputs)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def get_train_dataloader(self):
        if data.is_stream(self.train_dataset):  # it reads only this rank's shard; see data/stream.py
            return stream.loader(self.train_dataset.forever(), batch_size=self._train_batch_size,
                                 collate_fn=self.data_collator, num_workers=self.args.dataloader_num_workers)
        if self.fast is not None and self.fast.sampler is not None:  # batches page by page (loaders.py)
            from florence_tune.training.loaders import train_loader

            return train_loader(self, self.fast)
        return super().get_train_dataloader()

    def stream_loss(self, dataset, prefix: str) -> dict[str, float]:
        """Evaluation loss over a stream, each rank on its own shard (see ``loop.mean_loss``)."""
        self.model.eval()
        batches = stream.loader(dataset, batch_size=self.args.per_device_eval_batch_size,
                                collate_fn=self.data_collator, num_workers=0)

        def loss_of(batch):
            with self.compute_loss_context_manager():
                return self.compute_loss(self.model, self._prepare_inputs(batch))

        loss = loop.mean_loss(loss_of, batches)
        metrics = {f"{prefix}_loss": loss} if loss is not None else {}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if data.is_stream(dataset):
            output = self.stream_loss(dataset, metric_key_prefix)
        else:
            output = super().evaluate(dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        generated = self.generation_metrics(dataset, metric_key_prefix)
        self.log(generated)
        output.update(generated)
        if metric_key_prefix == "eval":
            self._last_eval = (self.state.global_step, output)
        return output

    def generation_metrics(self, dataset, prefix: str) -> dict[str, float]:
        records, skipped = loop.predict_dataset(
            self.model, self.processing_class, dataset,
            batch_size=self.args.per_device_eval_batch_size, num_workers=self.args.dataloader_num_workers,
            **self.generation,
        )
        if distributed.is_main():
            loop.write_predictions(records, self.predictions_path)
        summary = loop.summarise(records, self.metric_names)
        # every number of the summary (VQA: anls, exact_match, n; <OD>: map, map_50, n...); None = nothing scored
        result = {f"{prefix}_{name}": value for name, value in summary.items()
                  if isinstance(value, int | float) and not isinstance(value, bool)}
        result.update({f"{prefix}_skipped": sum(skipped.values())} if skipped else {})
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


def summarise_run(config, trainer: FlorenceTrainer, before, after, baseline, final_dir: Path) -> dict[str, Any]:
    history = trainer.state.log_history
    train_losses = [h["loss"] for h in history if "loss" in h]
    summary = {
        "output_dir": str(Path(config.output_dir)),
        "final": str(final_dir),
        "steps": trainer.state.global_step,
        "learning_rate": trainer.args.learning_rate,
        "anls_before": before.get("before_anls"),
        "anls_after": after.get("eval_anls"),
        "exact_match_after": after.get("eval_exact_match"),
        "anls_blind_baseline": baseline,
        "metrics_before": _task_metrics(before, "before"),
        "metrics_after": _task_metrics(after, "eval"),
        "eval_loss_before": before.get("before_loss"),
        "eval_loss_after": after.get("eval_loss"),
        "first_train_loss": train_losses[0] if train_losses else None,
        "last_train_loss": train_losses[-1] if train_losses else None,
        "data": distributed.sum_counts(trainer.train_stats),  # every rank's skipped/altered samples
        "skipped_updates": trainer.guard.skipped,  # optimizer steps skipped for a NaN/inf loss or gradient
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "train_samples_per_second": next((h["train_samples_per_second"] for h in reversed(history)
                                          if "train_samples_per_second" in h), None),
        "peak_memory_mib": peak_memory_mib(),
    }
    return summary


def peak_memory_mib() -> float:
    """Peak GPU memory allocated by torch, or this process's peak resident memory on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _task_metrics(logged: dict[str, Any], prefix: str) -> dict[str, float]:
    """The generation metrics (anls, cer, map...) among an evaluation's logged numbers, unprefixed."""
    return {name: logged[f"{prefix}_{name}"] for name in task_metrics.NAMES if f"{prefix}_{name}" in logged}

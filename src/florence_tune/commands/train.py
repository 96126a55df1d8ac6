"""``florence-tune train``: fine-tune, evaluate before and after, write the run directory.

    florence-tune train                                           # the embedded demo (tiny, synthetic)
    florence-tune train --model florence-community/Florence-2-base --dataset docvqa --output-dir runs/docvqa
    florence-tune train --config runs/docvqa/config.yaml --resume   # continue an interrupted run

``run`` reads like its table of contents; the rest of this module maps the config onto the plain values
the components take (the only place that knows both vocabularies).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

from florence_tune import data, distributed, hub, paths, tasks
from florence_tune.batch.collate import Collator, encoder_positions
from florence_tune.commands import options
from florence_tune.config import LoraFields, TrainConfig, build, check_bounds, free_on_resume, to_yaml
from florence_tune.errors import FlorenceTuneError, UsageError
from florence_tune.evaluation import records, task_metrics
from florence_tune.model import acceleration, checkpoints, loading, strategies
from florence_tune.reporting import report
from florence_tune.reporting.model_card import write_model_card
from florence_tune.training import loaders, reliability
from florence_tune.training.trainer import FlorenceTrainer, MetricsFileCallback, peak_memory_mib, tensorboard_callback

log = logging.getLogger(__name__)
BASELINE_TRAIN_SAMPLES = 5000  # enough for the image-blind baseline; bounded so huge sources stay cheap


def run(config: TrainConfig) -> dict[str, Any]:
    """Returns the run's summary (also written to summary.json)."""
    validate(config)
    config = with_resolved_paths(config)  # config.yaml and the resume command then work from anywhere
    distributed.init()  # joins the process group under torchrun; a no-op for one process
    run_dir = Path(config.output_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--output-dir '{run_dir}' is a file; choose a folder")
    paths.check_creatable(run_dir, "--output-dir")
    stopper = reliability.StopOnSignal()  # SIGTERM / SIGINT from the start: exit 75 and say how to go on
    with stopper.listening(), paths.run_lock(run_dir) if distributed.is_main() else contextlib.nullcontext():
        return _run(config, run_dir, stopper)


def _run(config: TrainConfig, run_dir: Path, stopper: reliability.StopOnSignal) -> dict[str, Any]:
    if config.resume == "auto" and paths.run_state(run_dir) == "finished":
        return finished_run(run_dir, config)
    resume_from = resume_point(run_dir, config)  # None unless --resume
    if resume_from is None:
        refuse_existing_run(run_dir, config)
    distributed.barrier()  # every rank has checked the folder before rank 0 touches it
    with distributed.main_process_first():  # rank 0 builds caches / downloads, the others reuse them
        train_data, eval_data = load_splits(config)
    data.check_usable(train_data, f"split '{config.train_split}' of '{config.dataset}'")
    if eval_data is not None:
        data.check_usable(eval_data, f"split '{config.eval_split}' of '{config.dataset}'")
    with distributed.main_process_first():
        model, processor = load_model(config)
    report_parameters(model)
    if distributed.is_main():
        prepare_run_dir(run_dir, config, resumed=resume_from is not None)
    distributed.barrier()
    stopper.raise_if_received(run_dir, distributed.device())
    trainer = build_trainer(model, processor, train_data, eval_data, config, run_dir, stopper)

    if resume_from:  # the first part of the run measured the start; its numbers are in metrics.jsonl
        before = reliability.logged_metrics(run_dir / "metrics.jsonl", "before_")
    else:
        before = trainer.evaluate(metric_key_prefix="before") if eval_data is not None and config.eval_before else {}
    stopper.raise_if_received(run_dir, distributed.device())
    trainer.train(resume_from_checkpoint=resume_from)
    after = trainer.latest_evaluation() if eval_data is not None else {}  # of the weights final/ gets

    summary = summarise(config, trainer, before, after, blind_baseline(train_data, eval_data), run_dir / "final")
    used = distributed.sum_counts({"used": trainer.samples_used}).get("used", 0)
    if distributed.is_main():
        data.warn_if_mostly_unusable(summary["data"], used, f"training on split '{config.train_split}'")
    if distributed.is_main():  # one writer for everything in the run directory
        save_final(trainer.model, processor, run_dir)
        paths.write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
        write_model_card(run_dir, config, summary)
        if eval_data is not None:
            report.write_report(run_dir, dataset=eval_data)
        if config.push_to_hub:
            summary["hub"] = push(run_dir, config)
            paths.write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    distributed.barrier()
    return summary


# --- before any heavy work -------------------------------------------------------------------------


def validate(config: TrainConfig) -> None:
    """Catch impossible settings before any heavy work."""
    check_bounds(config)
    task_metrics.parse_names(config.metrics)  # an unknown metric name is a usage error now, not after training
    strategies.parse_strategy(config.strategy)
    if config.max_steps <= 0 and config.epochs <= 0:
        raise UsageError("give a positive --epochs or --max-steps")
    if config.lr is not None and config.lr <= 0:
        raise UsageError(f"--lr must be positive (got {config.lr})")
    if config.resume and config.overwrite:
        raise UsageError("--resume continues the run in --output-dir and --overwrite deletes it; pass only one")
    if config.fsdp and config.deepspeed:
        raise UsageError("choose one of --fsdp and --deepspeed")
    if config.fsdp and not torch.cuda.is_available():
        # measured: on CPU (gloo) the Trainer wraps the model in plain DDP under --fsdp; the weights after training
        # are bit-identical to a run without it, so nothing would be sharded
        raise UsageError("--fsdp shards on CUDA GPUs only: on CPU processes the Trainer runs plain DDP (the same "
                         "weights as without --fsdp); drop --fsdp here")
    if config.fsdp and not distributed.launched():
        raise UsageError("--fsdp shards across processes; launch with torchrun --nproc-per-node N -m florence_tune "
                         "train ..., or drop --fsdp for one process")
    strategy = strategies.parse_strategy(config.strategy)
    lora_flags = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(LoraFields)
                  if getattr(config, f.name) != f.default]
    if strategy not in (strategies.Strategy.LORA, strategies.Strategy.QLORA) and lora_flags:
        raise UsageError(f"{lora_flags[0]} goes with --strategy lora or qlora (this run: --strategy {config.strategy})")
    if loading.holds_adapters(config.model):
        if strategy is not strategies.Strategy.LORA:
            raise UsageError(f"--model '{config.model}' holds LoRA adapters, which --strategy {config.strategy} would "
                             "not train: train them further with --strategy lora, or fold them into a full model "
                             f"first (florence-tune export --model {config.model} --merge --output MERGED) and "
                             "fine-tune that")
        if lora_flags:
            raise UsageError(f"{lora_flags[0]} does not apply: the adapters in '{config.model}' are trained further "
                             "as they were made")
    check_library_names(config)
    check_best_checkpoint(config)
    check_precision(config)
    if config.push_to_hub:
        hub.check_can_push(hub_repository(config))
    if config.page_cache not in (None, "auto"):
        if Path(config.page_cache).expanduser().is_file():
            raise UsageError(f"--page-cache '{config.page_cache}' is a file; name a folder for the cache, or 'auto'")
        paths.check_creatable(Path(config.page_cache).expanduser(), "--page-cache")
    options.task_prompt(config)
    if data.makes_stream(config.dataset, config.streaming) and config.max_steps <= 0:
        why = "--streaming" if config.streaming else "a weighted mixture"
        raise UsageError(f"{why} has no length to count epochs by; give --max-steps (e.g. --max-steps 1000)")
    for split in (config.train_split, config.eval_split):
        if data.predict_only(config.dataset, split):
            raise UsageError(f"split '{split}' of '{config.dataset}' has no answers (it is for predictions only); "
                             "train on 'train' and evaluate on 'validation'")


def hub_repository(config: TrainConfig) -> str:
    """Where --push-to-hub sends the run: --hub-model-id, else the output folder's name."""
    return config.hub_model_id or Path(config.output_dir).resolve().name


def push(run_dir: Path, config: TrainConfig) -> str:
    """Upload final/ (at the repository's root), the model card and report.html; one line if it fails (the run
    itself is complete and stays)."""
    final = run_dir / "final"
    files = {p.name: p for p in sorted(final.iterdir()) if p.is_file()}
    files.update({name: run_dir / name for name in ("README.md", "report.html") if (run_dir / name).is_file()})
    repo = hub_repository(config)
    try:
        return hub.upload(repo, files, private=config.hub_private, message=f"florence-tune: {run_dir.name}")
    except Exception as exc:  # network, permission, quota: the hub client raises many kinds
        raise FlorenceTuneError(f"the run in '{run_dir}' is complete, but the upload to '{repo}' failed "
                                f"({reliability.first_line(exc)[:200]}); push it later with: hf upload {repo} "
                                f"{final}") from None


def picks_best(config: TrainConfig) -> bool:
    """Whether final/ gets the best checkpoint's weights (any of the three settings asks for it)."""
    return config.load_best_model_at_end or bool(config.metric_for_best_model) or config.early_stopping_patience > 0


def check_best_checkpoint(config: TrainConfig) -> None:
    if not picks_best(config):
        return
    if config.eval_split.lower() == "none":
        raise UsageError("the best checkpoint (--load-best-model-at-end, --metric-for-best-model, "
                         "--early-stopping-patience) needs an evaluation split; this run has --eval-split none")
    known = (*task_metrics.REPORTED, "loss")
    if config.metric_for_best_model and config.metric_for_best_model not in known:
        raise UsageError(f"--metric-for-best-model '{config.metric_for_best_model}' is not a metric; choose one of "
                         f"{', '.join(known)}")
    if config.save_steps and config.save_steps != config.eval_steps:
        raise UsageError(f"--save-steps {config.save_steps} with the best checkpoint: checkpoints are saved at every "
                         f"evaluation (--eval-steps {config.eval_steps or 'each epoch'}), where the best is chosen; "
                         "drop --save-steps")
    if config.eval_steps == 0 and data.makes_stream(config.dataset, config.streaming):
        raise UsageError("a stream has no epochs to evaluate at: give --eval-steps N for the best checkpoint")


def check_precision(config: TrainConfig) -> None:
    if config.fp16 and config.bf16:
        raise UsageError("choose one of --bf16 and --fp16")
    if config.fp16 and not torch.cuda.is_available():
        raise UsageError("--fp16 needs a CUDA GPU (float16 with loss scaling); on this machine drop it and train in "
                         "float32")
    if config.bf16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--bf16: {torch.cuda.get_device_name()} has no bfloat16; use --fp16")


def best_metric(config: TrainConfig, eval_data) -> str | None:
    """The metric that picks the best checkpoint: the one asked for, else the first of the evaluation's own."""
    if not picks_best(config):
        return None
    if config.metric_for_best_model:
        return config.metric_for_best_model
    chosen = task_metrics.parse_names(config.metrics)
    if chosen:
        return chosen[0]
    first = next(iter(eval_data.text_samples(limit=1)), None)
    return task_metrics.defaults_for(tasks.task_of(first.meta, first.prompt))[0] if first else "loss"


def check_library_names(config: TrainConfig) -> None:
    """The names handed to transformers (schedule, optimizer, loggers), checked against its own lists."""
    from transformers.integrations import integration_utils
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    for flag, value, names, what in (("--lr-scheduler", config.lr_scheduler, SchedulerType, "schedule"),
                                     ("--optim", config.optim, OptimizerNames, "optimizer")):
        accepted = [item.value for item in names]
        if value is not None and value not in accepted:
            raise UsageError(f"{flag} '{value}' is not a transformers {what}; choose one of {', '.join(accepted)}")
    known = integration_utils.INTEGRATION_TO_CALLBACK
    installed = integration_utils.get_available_reporting_integrations()
    names = options.split_list(config.report_to)
    if len(names) > 1 and any(name.lower() == "none" for name in names):
        raise UsageError(f"--report-to none means no logger; give it alone, or name only loggers (got "
                         f"'{config.report_to}')")
    for name in names:
        if name.lower() in ("none", "all"):
            continue
        if name not in known:
            raise UsageError(f"--report-to '{name}' is not a logger transformers knows; choose none, or some of "
                             f"{', '.join(sorted(known))} (comma-separated)")
        if name not in installed:
            raise UsageError(f"--report-to {name} needs its package: pip install {name}, or pass --report-to none")


def with_resolved_paths(config: TrainConfig) -> TrainConfig:
    """The same settings with local paths absolute (output folder, dataset, model, page cache)."""
    changes = {"output_dir": str(paths.resolved(config.output_dir)), "dataset": paths.resolve_spec(config.dataset),
               "model": paths.resolve_spec(config.model)}
    if config.page_cache and config.page_cache != "auto":
        changes["page_cache"] = str(paths.resolved(config.page_cache))
    return dataclasses.replace(config, **changes)


def finished_run(run_dir: Path, config: TrainConfig) -> dict[str, Any]:
    """``--resume`` of a run that ended: nothing is trained or written; its summary, as the run left it
    (changed training settings are still refused: they would name another run)."""
    if (run_dir / "config.yaml").is_file():
        refuse_changed_settings(config, run_dir / "config.yaml")
    if distributed.is_main():
        print(f"florence-tune train: the run in '{run_dir}' is finished (summary.json and final/ are written); "
              "nothing to resume", file=sys.stderr)
    return json.loads((run_dir / "summary.json").read_text())


def resume_point(run_dir: Path, config: TrainConfig) -> str | None:
    """The checkpoint ``--resume`` continues from (None without ``--resume``, or for a run that was started
    but stopped before its first checkpoint: it starts again), refusing changed settings."""
    if not config.resume or (config.resume == "auto" and paths.run_state(run_dir) == "started"):
        if config.resume and (run_dir / "config.yaml").is_file():
            refuse_changed_settings(config, run_dir / "config.yaml")
        return None
    checkpoint = _chosen_checkpoint(run_dir, config.resume)
    saved = next((p for p in (run_dir / "config.yaml", checkpoint.parent / "config.yaml") if p.is_file()), None)
    if saved is None:
        log.warning("no config.yaml next to %s: cannot check that the settings match the run", checkpoint)
    else:
        refuse_changed_settings(config, saved)
    refuse_changed_data(config, run_dir)
    return str(checkpoint)


def refuse_changed_data(config: TrainConfig, run_dir: Path) -> None:
    """The local data must be what the run started on (a copied or edited dataset would silently differ)."""
    stamps_file = run_dir / paths.DATA_FILE
    if not stamps_file.is_file():
        return  # a run from before the data was recorded
    changed = paths.changed_data(json.loads(stamps_file.read_text()),
                                 paths.data_stamps(paths.local_inputs(config.dataset)))
    if changed:
        more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
        raise UsageError(f"cannot resume: the data changed since the run started: {'; '.join(changed[:3])}{more}; "
                         "resume on the same data or start a new run in another --output-dir")


def _chosen_checkpoint(run_dir: Path, resume: str) -> Path:
    if resume == "auto":
        newest = checkpoints.newest_complete(run_dir)
        if newest is None:
            raise UsageError(f"nothing to resume in '{run_dir}': it holds no complete checkpoint "
                             f"(checkpoint-N/ with a {checkpoints.MARKER} file); run without --resume to start it")
        return newest
    folder = Path(resume).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--resume '{resume}' is not a folder; pass a checkpoint-N folder, "
                         "or --resume alone for the newest complete one")
    if checkpoints.step_of(folder) is None:
        raise UsageError(f"--resume '{resume}' is not a checkpoint folder (checkpoint-N/ inside a run); pass one, "
                         "or --resume alone for the newest complete one")
    if not checkpoints.is_complete(folder):
        raise UsageError(f"'{folder}' is not a complete checkpoint (no {checkpoints.MARKER} file: its save was "
                         "interrupted); pass another checkpoint-N folder, or --resume alone for the newest one")
    return folder


def changed_settings(config: TrainConfig, saved: dict[str, Any]) -> list[str]:
    """'name (saved X, now Y)' for every setting that may not change on resume and differs from ``saved``."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    before = with_resolved_paths(build(TrainConfig, {k: v for k, v in saved.items() if k in names},
                                       source="the run's config.yaml"))  # a run saved with relative paths
    return [f"{name} (saved {getattr(before, name)!r}, now {getattr(config, name)!r})"
            for name in sorted(names - free_on_resume(TrainConfig)) if getattr(before, name) != getattr(config, name)]


def refuse_changed_settings(config: TrainConfig, saved_file: Path) -> None:
    changed = changed_settings(config, yaml.safe_load(saved_file.read_text()) or {})
    if changed:
        raise UsageError(f"cannot resume: settings that change the training differ from {saved_file}: "
                         f"{', '.join(changed)}; resume with the saved settings "
                         f"({reliability.resume_command(saved_file.parent)}) or start a new run in another "
                         "--output-dir")


def refuse_existing_run(run_dir: Path, config: TrainConfig) -> None:
    """Never mix two runs in one folder, never delete anything but a run (checked before any heavy work).
    A run that stopped before its first checkpoint starts again, as --overwrite would replace it."""
    state = paths.run_state(run_dir)
    if state == "empty":
        return
    if state == "other" and not config.overwrite:
        raise UsageError(f"--output-dir '{run_dir}' holds files that are not a run ({paths.foreign_listing(run_dir)}); "
                         "choose an empty or new folder")
    if state != "started" and not config.overwrite:
        raise UsageError(f"output directory '{run_dir}' already holds a run; pass --overwrite to replace it "
                         "or choose another --output-dir")
    paths.check_replaceable_run(run_dir, paths.local_inputs(config.model, config.dataset))


# --- data, model, trainer ----------------------------------------------------------------------------


def load_splits(config: TrainConfig):
    """(train data, eval data or None)."""
    train_data = data.load(config.dataset, config.train_split,
                           options.data_options(config, limit=config.max_train_samples, shuffle=config.shuffle,
                                                seed=config.seed))
    if config.eval_split.lower() == "none":
        return train_data, None
    return train_data, data.load(config.dataset, config.eval_split,
                                 options.data_options(config, limit=config.max_eval_samples, seed=config.seed))


def load_model(config: TrainConfig):
    """(model ready for its strategy, processor)."""
    strategy = strategies.parse_strategy(config.strategy)
    quantization = strategies.quantization_config() if strategy is strategies.Strategy.QLORA else None
    model, processor = loading.load(config.model, trust_remote_code=config.trust_remote_code,
                                    quantization=quantization, train_adapters=strategy is strategies.Strategy.LORA)
    set_seed(config.seed)  # new weights (LoRA's A matrices) drawn from the run's seed, before the Trainer seeds
    model = strategies.apply(model, strategy, freeze=options.split_list(config.freeze), lora=options.lora(config))
    if not loading.count_parameters(model)[0]:
        raise UsageError(f"nothing is left to train: --strategy {config.strategy}"
                         f"{f' with --freeze {config.freeze!r}' if config.freeze else ''} freezes every parameter; "
                         "freeze fewer of them")
    if strategies.is_adapter_model(model):
        # Saved adapters name the model spec the user gave, so they reload through loading.load.
        model.peft_config["default"].base_model_name_or_path = config.model
    return model, processor


def report_parameters(model) -> None:
    if not distributed.is_main():
        return
    trainable, total = loading.count_parameters(model)
    print(f"parameters: {trainable:,} trainable / {total:,} total ({100 * trainable / max(total, 1):.1f}%)")


def prepare_run_dir(run_dir: Path, config: TrainConfig, resumed: bool = False) -> Path:
    """Start the run folder afresh (a replaced run, or one started and stopped before its first checkpoint)
    and save the resolved config."""
    restart = not resumed and paths.run_state(run_dir) == "started"
    if config.overwrite or restart:  # check_replaceable_run allowed it; the lock this run holds stays
        for entry in run_dir.iterdir():
            if entry.name != paths.LOCK_FILE:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    paths.write_atomic(run_dir / "config.yaml", to_yaml(config))
    if not resumed:  # what the data was when the run started; --resume compares against it
        stamps = paths.data_stamps(paths.local_inputs(config.dataset))
        paths.write_atomic(run_dir / paths.DATA_FILE, json.dumps(stamps, indent=0))
    return run_dir


def save_final(model, processor, run_dir: Path) -> Path:
    """final/ staged as tmp-final/ and renamed into place: a failed save (a full disk) leaves the previous
    final/ or none, never one without weights, and says in one line what is kept and how to go on."""
    staged, final, retired = run_dir / "tmp-final", run_dir / "final", run_dir / ".final.old"
    shutil.rmtree(staged, ignore_errors=True)
    try:
        loading.save(model, processor, staged)
    except (OSError, RuntimeError) as exc:  # safetensors and torch report a full disk as either
        shutil.rmtree(staged, ignore_errors=True)
        kept = checkpoints.newest_complete(run_dir)
        raise FlorenceTuneError(
            f"could not write final/ in '{run_dir}' ({reliability.first_line(exc)}); "
            f"{f'{kept.name} is kept and loadable' if kept else 'no checkpoint was written'}; free space, then "
            f"{f'continue with: {reliability.resume_command(run_dir)}' if kept else 'start the run again'}") from None
    if final.exists():
        os.replace(final, retired)
    os.replace(staged, final)
    shutil.rmtree(retired, ignore_errors=True)
    return final


def build_trainer(model, processor, train_data, eval_data, config: TrainConfig, run_dir: Path,
                  stopper: reliability.StopOnSignal | None = None) -> FlorenceTrainer:
    positions = encoder_positions(model)
    collator = Collator(processor, max_positions=positions, max_target_tokens=config.max_target_tokens)
    fast = loaders.build(model, processor, train_data, eval_data, page_settings(config), batch_size=config.batch_size,
                         shuffle=config.shuffle, seed=config.seed, max_positions=positions,
                         max_target_tokens=config.max_target_tokens, sharded=config.fsdp or bool(config.deepspeed))
    if fast is not None:  # uint8 pages, vision once per page (training/loaders.py)
        collator, train_data, eval_data = fast.collator, fast.train_data, fast.eval_data
    acceleration.prepare(model, gradient_checkpointing=config.gradient_checkpointing,
                         compile_backend="inductor" if config.compile else None)
    strategy, every, note = save_cadence(config, train_data)
    if note and distributed.is_main():
        print(note)
    args = training_arguments(config, run_dir, save=(strategy, every), best=best_metric(config, eval_data))
    stopping = [EarlyStoppingCallback(config.early_stopping_patience)] if config.early_stopping_patience else []
    return FlorenceTrainer(
        model=model, args=args, train_dataset=train_data, eval_dataset=eval_data, data_collator=collator,
        fast=fast, processing_class=processor,
        callbacks=[MetricsFileCallback(run_dir / "metrics.jsonl"), *tensorboard_callback(args, run_dir), *stopping],
        decoding=options.decoding(config), max_nonfinite_steps=config.max_nonfinite_steps, stopper=stopper,
        predictions_path=run_dir / "predictions.jsonl", metric_names=task_metrics.parse_names(config.metrics))


def page_settings(config: TrainConfig) -> loaders.PageSettings:
    return loaders.PageSettings(page_cache=config.page_cache, draft=config.page_cache_draft,
                                group_by_page=config.group_by_page, feature_cache_mib=config.feature_cache_mib,
                                compile=config.compile)


def learning_rate(config: TrainConfig) -> float:
    """A model trained from scratch (tiny) needs a far larger step than a pretrained checkpoint."""
    if config.lr is not None:
        return config.lr
    return 1e-3 if config.model == "tiny" else 1e-5


DEFAULT_SAVE_STEPS = 500  # when a run has no epoch boundary to checkpoint at


def save_cadence(config: TrainConfig, train_data) -> tuple[str, int | None, str | None]:
    """(save strategy, steps, a note to print): --save-steps N, else each epoch; but a stream, or a
    --max-steps run that ends before its first epoch does, has no epoch boundary and would write no
    checkpoint before it ends, so it saves every DEFAULT_SAVE_STEPS steps and says so."""
    if picks_best(config):  # the best checkpoint is chosen at evaluations: a checkpoint at each one
        return ("steps", config.eval_steps, None) if config.eval_steps else ("epoch", None, None)
    if config.save_steps > 0:
        return "steps", config.save_steps, None
    per_epoch = None
    if train_data.random_access:
        per_epoch = -(-len(train_data) // (config.batch_size * distributed.world_size() * config.grad_accum))
    if train_data.random_access and (config.max_steps <= 0 or config.max_steps >= per_epoch):
        return "epoch", None, None
    return "steps", DEFAULT_SAVE_STEPS, (f"no epoch boundary before step {config.max_steps}: a checkpoint every "
                                         f"{DEFAULT_SAVE_STEPS} steps (--save-steps N to choose)")


def training_arguments(config: TrainConfig, run_dir: Path, save: tuple[str, int | None] | None = None,
                       best: str | None = None) -> TrainingArguments:
    """Map our flags onto ``TrainingArguments`` (``save``: from ``save_cadence``; ``best``: the metric that picks
    the best checkpoint, from ``best_metric``). Activation checkpointing is not among them: it is set on the
    model by ``acceleration.prepare``, the code the benchmark measures."""
    eval_every = "steps" if config.eval_steps > 0 else "epoch"
    save_every, save_steps = save or ("steps" if config.save_steps > 0 else "epoch", config.save_steps or None)
    optional = {"optim": config.optim} if config.optim else {}
    if best is not None:
        optional.update(load_best_model_at_end=True, metric_for_best_model=f"eval_{best}",
                        greater_is_better=best not in task_metrics.LOWER_IS_BETTER)
    report_to = [] if config.report_to.strip().lower() == "none" else list(options.split_list(config.report_to))
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
        save_steps=save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        seed=config.seed,
        train_sampling_strategy="random" if config.shuffle else "sequential",
        ddp_timeout=config.ddp_timeout,
        **sharding_arguments(config),
        bf16=config.bf16,
        fp16=config.fp16,
        dataloader_num_workers=config.num_workers,
        dataloader_persistent_workers=config.num_workers > 0,
        dataloader_prefetch_factor=4 if config.num_workers > 0 else None,
        dataloader_drop_last=config.compile,  # a compiled graph keeps one batch shape
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        label_names=["labels"],
        report_to=report_to,
        disable_tqdm=False,
    )


def sharding_arguments(config: TrainConfig) -> dict[str, Any]:
    """FSDP or DeepSpeed instead of DDP; both run through the Trainer's own accelerate integration."""
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


# --- after training ----------------------------------------------------------------------------------


def blind_baseline(train_data, eval_data) -> float | None:
    """The image-blind baseline's ANLS, computed once (on the main process: it reads no rank's shard)."""
    if eval_data is None or not distributed.is_main():
        return None
    return records.majority_baseline(itertools.islice(train_data.text_samples(), BASELINE_TRAIN_SAMPLES),
                                     eval_data.text_samples())


def summarise(config: TrainConfig, trainer: FlorenceTrainer, before, after, baseline, final_dir: Path) -> dict:
    history = trainer.state.log_history
    train_losses = [h["loss"] for h in history if "loss" in h]
    return {
        "output_dir": str(Path(config.output_dir)),
        "final": str(final_dir),
        "steps": trainer.state.global_step,
        "final_step": trainer.final_step(),  # the step final/'s weights are from (the best one, when picked)
        "best_step": trainer.state.best_global_step if picks_best(config) else None,
        "best_metric": trainer.state.best_metric if picks_best(config) else None,
        "learning_rate": trainer.args.learning_rate,
        "anls_before": before.get("before_anls"),
        "anls_after": after.get("eval_anls"),
        "exact_match_after": after.get("eval_exact_match"),
        "anls_blind_baseline": baseline,
        "metrics_before": _task_metrics(before, "before"),
        "metrics_after": _task_metrics(after, "eval"),
        "by_source_before": before.get("before_by_source"),  # each question's source judged by its own metric
        "by_source_after": after.get("eval_by_source"),
        "by_task_after": after.get("eval_by_task"),  # a mixture of tasks: each task by its own metrics
        "eval_loss_before": before.get("before_loss"),
        "eval_loss_after": after.get("eval_loss"),
        "first_train_loss": train_losses[0] if train_losses else None,
        "last_train_loss": train_losses[-1] if train_losses else None,
        "data": distributed.sum_counts(trainer.train_stats),  # every rank's skipped/altered samples
        "skipped_updates": trainer.guard.skipped,  # optimizer steps skipped for a NaN/inf loss or gradient
        "empty_updates": trainer.guard.empty,  # optimizer steps skipped for having no usable sample
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "train_samples_per_second": next((h["train_samples_per_second"] for h in reversed(history)
                                          if "train_samples_per_second" in h), None),
        "peak_memory_mib": peak_memory_mib(),
    }


def _task_metrics(logged: dict[str, Any], prefix: str) -> dict[str, float]:
    """The generation metrics (anls, cer, map...) among an evaluation's logged numbers, unprefixed."""
    return {name: logged[f"{prefix}_{name}"] for name in task_metrics.REPORTED if f"{prefix}_{name}" in logged}

"""``florence-tune evaluate``: generate over a split, score it, write predictions.jsonl (and a report).

    florence-tune evaluate --model runs/demo --dataset synthetic --split validation --output preds.jsonl
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from florence_tune import data, distributed, paths
from florence_tune.commands import options
from florence_tune.config import EvalConfig, check_bounds
from florence_tune.errors import UsageError
from florence_tune.evaluation import records, task_metrics
from florence_tune.evaluation.generation import CUT_ANSWERS
from florence_tune.evaluation.loop import predict_dataset
from florence_tune.model import loading
from florence_tune.reporting.report import check_column, write_evaluation_report


def run(config: EvalConfig) -> dict[str, Any]:
    """Returns the summary (metrics, counts of skipped rows, where the predictions went)."""
    metric_names = validate(config)
    distributed.init()  # joins the process group under torchrun, before the first barrier
    with distributed.main_process_first():
        dataset = data.load(config.dataset, config.split, options.data_options(config, limit=config.max_samples))
    data.check_usable(dataset, f"split '{config.split}' of '{config.dataset}'")
    with distributed.main_process_first():
        model, processor = loading.load(config.model, trust_remote_code=config.trust_remote_code,
                                        device=distributed.device(),
                                        dtype=options.generation_dtype(config, distributed.device()))
    found, skipped = predict_dataset(model, processor, dataset, batch_size=config.batch_size,
                                     decoding=options.decoding(config), num_workers=config.num_workers)
    summary = (records.unscored(found, config.dataset, config.split) if dataset.predict_only
               else records.summarise(found, metric_names))
    cut = skipped.pop(CUT_ANSWERS, 0)
    summary.update({"skipped": dict(skipped), CUT_ANSWERS: cut, "predictions": str(config.output)})
    if distributed.is_main():
        data.warn_if_mostly_unusable(skipped, len(found), f"split '{config.split}' of '{config.dataset}'")
    if distributed.is_main():
        records.write_predictions(found, config.output)
        with report_errors(f"the predictions are written to {config.output}"):
            check_column(found, config.group_by)  # the columns are known only now; the predictions are kept
        if config.report and not dataset.predict_only:
            path = Path(config.output).with_name("report.html")
            write_evaluation_report(found, summary, asdict(config), dataset, path, column=config.group_by)
            summary["report"] = str(path)
    return summary


@contextlib.contextmanager
def report_errors(note: str):
    """A usage error raised after the predictions were written says where they are."""
    try:
        yield
    except UsageError as exc:
        raise UsageError(f"{exc}; {note}") from None


def validate(config: EvalConfig) -> list[str] | None:
    """Everything that can be checked before a model or a row is loaded; returns the metric names."""
    if not config.model:
        raise UsageError("evaluate needs --model (e.g. --model runs/demo, --model tiny or a hub id)")
    check_bounds(config)
    options.task_prompt(config)
    options.generation_dtype(config, distributed.device())
    metric_names = task_metrics.parse_names(config.metrics)  # a misspelt metric fails before any heavy work
    paths.check_output_file(config.output, "--output", inputs=paths.local_inputs(config.model),
                            data=paths.local_inputs(config.dataset))
    return metric_names

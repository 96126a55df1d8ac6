"""Command line: parse flags (+ optional YAML), build one config object, call one function.

    florence-tune train      fine-tune (no arguments: the embedded tiny model on the synthetic set)
    florence-tune evaluate   ANLS of a model on a dataset split, with predictions.jsonl
    florence-tune predict    answer a question about one image, or run a Florence-2 task on it
    florence-tune report     an HTML report of a run (curves, metrics per group, worst predictions)
    florence-tune export     one full checkpoint from a run (--merge folds LoRA adapters in)
    florence-tune convert SRC DST   an original-layout (remote-code) Florence-2 checkpoint → native
    florence-tune bench      throughput of training, data loading and evaluation (--suite gpu for an H100)
    florence-tune data inspect SPEC   counts, lengths, bad samples and a contact sheet of a dataset split
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from florence_tune import __version__
from florence_tune.bench.settings import BenchSettings
from florence_tune.config import (
    ConvertConfig,
    EvalConfig,
    ExportConfig,
    InspectConfig,
    PredictConfig,
    ReportConfig,
    TrainConfig,
    add_arguments,
    resolve,
)
from florence_tune.errors import FlorenceTuneError


def _train(config: TrainConfig) -> int:
    from florence_tune.commands import train

    summary = train.run(config)
    if not _is_main():
        return 0
    if "anls" in (summary.get("metrics_after") or {}) or summary.get("anls_after") is not None:  # questions
        print(f"validation ANLS before fine-tuning: {_num(summary['anls_before'])}")
        print(f"validation ANLS after fine-tuning:  {_num(summary['anls_after'])}")
        print(f"image-blind baseline ANLS:          {_num(summary['anls_blind_baseline'])}")
    for name, value in (summary.get("metrics_after") or {}).items():  # the task metrics (mAP, CER...)
        if name not in ("anls", "exact_match"):
            before = (summary.get("metrics_before") or {}).get(name)
            print(f"validation {name} before / after:  {_num(before)} / {_num(value)}")
    print(f"samples skipped or altered:         {_counts(summary.get('data') or {})}")
    print(f"model saved to {summary['final']}")
    print(json.dumps(summary))
    return 0


def _evaluate(config: EvalConfig) -> int:
    from florence_tune.commands import evaluate

    summary = evaluate.run(config)
    if _is_main():
        print(json.dumps(summary))
    return 0


def _is_main() -> bool:
    from florence_tune.distributed import is_main

    return is_main()


def _predict(config: PredictConfig) -> int:
    from florence_tune.commands import predict

    result = predict.run(config, lines=sys.stdout)
    if result.summary is None:  # one image, no --output: its answer alone, as predict has always printed
        print(result.answer if isinstance(result.answer, str) else json.dumps(result.answer))
    else:  # with the lines on stdout, the summary goes to stderr
        print(json.dumps(result.summary), file=sys.stdout if result.summary["output"] else sys.stderr)
    return 0


def _report(config: ReportConfig) -> int:
    from florence_tune.commands import report

    print(f"report written to {report.run(config)}")
    return 0


def _export(config: ExportConfig) -> int:
    from florence_tune.commands import export

    print(f"exported to {export.run(config)}")
    return 0


def _bench(config: BenchSettings) -> int:
    from florence_tune.commands import bench

    result = bench.run(config)
    print("\n".join(bench.table(config, result)))
    print(json.dumps(result))
    return 0


def _convert(config: ConvertConfig) -> int:
    from florence_tune.commands import convert

    print(f"converted to {convert.run(config)}")
    return 0


COMMANDS: dict[str, tuple[type, Callable[[Any], int], str]] = {
    "train": (TrainConfig, _train, "Fine-tune Florence-2 (no arguments: tiny model on the synthetic set)."),
    "evaluate": (EvalConfig, _evaluate, "Generate answers for a dataset split and score them (ANLS)."),
    "predict": (PredictConfig, _predict, "Answer a question about an image, or run a Florence-2 task on it."),
    "report": (ReportConfig, _report, "Write an HTML report of a run: curves, metrics per group, worst predictions."),
    "export": (ExportConfig, _export, "Write a run's model as one full checkpoint (--merge folds LoRA adapters in)."),
    "convert": (ConvertConfig, _convert, "Convert an original-layout Florence-2 checkpoint (auto_map, remote code) "
                                         "into a native one, without running its code."),
    "bench": (BenchSettings, _bench, "Measure training, data-loading and evaluation throughput (samples/s, MFU, "
                                   "peak memory), optionally against the original scripts' way (--compare naive)."),
}


def _inspect(config: InspectConfig) -> int:
    from florence_tune.commands import inspect
    from florence_tune.reporting import inspection

    summary = inspect.run(config)
    print("\n".join(inspection.describe(summary)))
    print(json.dumps(summary))
    return 0


DESCRIPTION = """\
Fine-tune Florence-2 (base 0.23B, large 0.77B) on document question answering, the Cauldron mixture
or your own images; evaluate, report on and export the result.

    florence-tune train                        the embedded tiny model on the built-in synthetic documents
    florence-tune train --model florence-community/Florence-2-base --dataset docvqa --output-dir runs/docvqa
    florence-tune evaluate --model runs/docvqa --dataset docvqa --split validation
    florence-tune predict --model runs/docvqa --image page.png --question "What is the total?"
    florence-tune data inspect ./my_data       what a dataset holds, and which rows cannot be used
"""
EPILOG = """\
Every command takes --config FILE.yaml (flags override it); 'florence-tune COMMAND --help' lists its
settings with their defaults. Several GPUs: torchrun --nproc-per-node N -m florence_tune train ...
"""

# Commands with subcommands: ``florence-tune data inspect SPEC``.
GROUPS: dict[str, tuple[str, dict[str, tuple[type, Callable[[Any], int], str]]]] = {
    "data": ("Look at a dataset before training on it.", {
        "inspect": (InspectConfig, _inspect, "Counts, token lengths, image sizes, bad samples by reason and a "
                                             "contact sheet of a dataset split."),
    }),
}


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="florence-tune", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"florence-tune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (config_cls, _, help_text) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text), config_cls)
    for name, (help_text, commands) in GROUPS.items():
        group = sub.add_parser(name, help=help_text, description=help_text).add_subparsers(
            dest="subcommand", metavar="SUBCOMMAND")
        for sub_name, (config_cls, _, sub_help) in commands.items():
            add_arguments(group.add_parser(sub_name, help=sub_help, description=sub_help), config_cls)
    return parser


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """(config class, function, name to print) of the command line, or None after printing the help."""
    if args.command in GROUPS:
        if args.subcommand is None:  # like a bare florence-tune: the group's help, exit status 2
            with contextlib.suppress(SystemExit):
                parser.parse_args([args.command, "--help"])
            return None
        config_cls, run, _ = GROUPS[args.command][1][args.subcommand]
        return config_cls, run, f"{args.command} {args.subcommand}"
    config_cls, run, _ = COMMANDS[args.command]
    return config_cls, run, args.command


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    chosen = _chosen(parser, args)
    if chosen is None:
        return 2
    config_cls, run, name = chosen
    _quiet_libraries()
    try:
        code = run(resolve(config_cls, args))
        from florence_tune.distributed import shutdown

        shutdown()  # under torchrun: every rank done before any leaves
        return code
    except FlorenceTuneError as exc:
        print(f"florence-tune {name}: {exc.label}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"florence-tune {name}: interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """Keep the console to our own progress and results; library warnings stay available via env."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("FLORENCE_TUNE_VERBOSE"):
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()  # its cache-building bars; downloads keep huggingface_hub's own


if __name__ == "__main__":
    sys.exit(main())

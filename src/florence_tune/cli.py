"""Command line: parse flags (+ optional YAML), build one config object, call one function.

    florence-tune train      fine-tune (no arguments: the embedded tiny model on the synthetic set)
    florence-tune evaluate   ANLS of a model on a dataset split, with predictions.jsonl
    florence-tune predict    answer a question about one image, or run a Florence-2 task on it
    florence-tune export     one full checkpoint from a run (--merge folds LoRA adapters in)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from florence_tune import __version__
from florence_tune.config import EvalConfig, ExportConfig, PredictConfig, TrainConfig, add_arguments, resolve
from florence_tune.errors import FlorenceTuneError


def _train(config: TrainConfig) -> int:
    from florence_tune.training import train

    summary = train(config)
    if not _is_main():
        return 0
    print(f"validation ANLS before fine-tuning: {_num(summary['anls_before'])}")
    print(f"validation ANLS after fine-tuning:  {_num(summary['anls_after'])}")
    print(f"image-blind baseline ANLS:          {_num(summary['anls_blind_baseline'])}")
    print(f"model saved to {summary['final']}")
    print(json.dumps(summary))
    return 0


def _evaluate(config: EvalConfig) -> int:
    from florence_tune.evaluation import run_evaluation

    summary = run_evaluation(config)
    if _is_main():
        print(json.dumps(summary))
    return 0


def _is_main() -> bool:
    from florence_tune.distributed import is_main

    return is_main()


def _predict(config: PredictConfig) -> int:
    from florence_tune.predict import predict

    answer = predict(config)
    print(answer if isinstance(answer, str) else json.dumps(answer))
    return 0


def _export(config: ExportConfig) -> int:
    from florence_tune.export import export

    print(f"exported to {export(config)}")
    return 0


COMMANDS: dict[str, tuple[type, Callable[[Any], int], str]] = {
    "train": (TrainConfig, _train, "Fine-tune Florence-2 (no arguments: tiny model on the synthetic set)."),
    "evaluate": (EvalConfig, _evaluate, "Generate answers for a dataset split and score them (ANLS)."),
    "predict": (PredictConfig, _predict, "Answer a question about an image, or run a Florence-2 task on it."),
    "export": (ExportConfig, _export, "Write a run's model as one full checkpoint (--merge folds LoRA adapters in)."),
}


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="florence-tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"florence-tune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (config_cls, _, help_text) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text), config_cls)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    config_cls, run, _ = COMMANDS[args.command]
    _quiet_libraries()
    try:
        return run(resolve(config_cls, args))
    except FlorenceTuneError as exc:
        print(f"florence-tune {args.command}: {exc.label}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"florence-tune {args.command}: interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """Keep the console to our own progress and results; library warnings stay available via env."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("FLORENCE_TUNE_VERBOSE"):
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())

"""Config objects → the typed values components take; each mapping written once, here.

Only ``commands/`` reads config objects (tests/test_layout.py checks it); everything below receives
``DataOptions``, ``Decoding``, ``LoraSettings`` and plain values.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import yaml

from florence_tune import tasks
from florence_tune.data import DataOptions
from florence_tune.errors import UsageError
from florence_tune.evaluation.generation import Decoding
from florence_tune.model.strategies import LoraSettings


def task_prompt(config) -> str:
    """The prompt put before questions: the one given, else the one the run named by ``--model`` was trained
    with (its config.yaml), else VQA. A task token that takes no text cannot be one."""
    prompt = config.task_prompt if config.task_prompt is not None else (
        _run_settings(config.model).get("task_prompt") or tasks.VQA)
    if prompt.strip() in tasks.BARE_TOKEN_TASKS:
        raise UsageError(f"--task-prompt '{prompt}' takes no text, so no question can follow it: ask with a "
                         "question prompt such as <VQA> or <DocVQA>, or run the task itself (predict --task "
                         f"{prompt.strip()}; task data such as synthetic:detection to train it)")
    return prompt


def _run_settings(model_spec: str | None) -> dict:
    """The settings of the run ``--model`` names (its config.yaml), or {} for anything else."""
    model = Path(str(model_spec or "")).expanduser()
    for saved in (model / "config.yaml", model.parent / "config.yaml"):  # a run, or its final/ or checkpoint-N/
        if model.exists() and saved.is_file():
            with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
                found = yaml.safe_load(saved.read_text())
                return found if isinstance(found, dict) else {}
    return {}


def generation_dtype(config, device):
    """The torch dtype answers are generated in: ``--dtype``, or with ``auto`` on a GPU the precision the run
    trained in (bf16 / fp16), float32 otherwise."""
    import torch

    if config.dtype == "auto":
        saved = _run_settings(config.model) if device.type == "cuda" else {}
        return torch.bfloat16 if saved.get("bf16") else torch.float16 if saved.get("fp16") else torch.float32
    if config.dtype == "float16" and device.type != "cuda":
        raise UsageError("--dtype float16 needs a CUDA GPU; on this machine use float32 or bfloat16")
    return getattr(torch, config.dtype)


def data_options(config, *, limit: int = 0, shuffle: bool = False, seed: int = 0) -> DataOptions:
    """How ``config``'s dataset is read (train, evaluate, data inspect share these settings)."""
    return DataOptions(task_prompt=task_prompt(config), clean_questions=config.clean_questions,
                       multi_image=config.multi_image, holdout_rows=config.holdout_rows,
                       streaming=config.streaming, limit=limit, shuffle=shuffle, seed=seed)


def decoding(config) -> Decoding:
    return Decoding(num_beams=config.num_beams, max_new_tokens=config.max_new_tokens)


def split_list(text: str) -> tuple[str, ...]:
    """'a, b,,c' → ('a', 'b', 'c'): the comma-separated flags (--freeze, --lora-targets, --report-to)."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def lora(config) -> LoraSettings:
    """The LoRA settings (used by the lora and qlora strategies)."""
    targets = split_list(config.lora_targets)
    return LoraSettings(rank=config.lora_rank, alpha=config.lora_alpha, dropout=config.lora_dropout,
                        **({"targets": targets} if targets else {}), use_dora=config.use_dora,
                        use_rslora=config.use_rslora, init=config.lora_init)

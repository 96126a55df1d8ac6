"""One config dataclass per command; each setting is written once, with its help text beside it.

Precedence: dataclass default < ``--config file.yaml`` < command-line flag. The flags are generated
from the fields (``batch_size`` becomes ``--batch-size``), unknown YAML keys are a one-line error
with a did-you-mean, and the resolved config is saved into every run directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from florence_tune import tasks
from florence_tune.errors import UsageError


def setting(default: Any, help: str, *, flag: str | None = None, choices: list[str] | None = None,
            const: Any = None, saved: bool = True, positional: bool = False, nargs: int | None = None,
            minimum: float | None = None, free_on_resume: bool = False) -> Any:
    """A config field carrying its own ``--help`` text, bounds and resume rule (and optionally a custom flag).

    ``const``: the value a bare flag takes (``--resume`` alone means ``--resume auto``).
    ``saved=False``: the setting says what this invocation does with the run folder (overwrite,
    resume), so the run's ``config.yaml`` leaves it out and replaying that file never repeats it.
    ``positional``: given without a flag (``florence-tune report RUN_DIR``); ``nargs``: a fixed count of values.
    ``minimum``: the smallest value accepted (``check_bounds``). ``free_on_resume``: the setting changes what
    is written, evaluated or reported, or how memory is spent, never the optimisation, so ``--resume`` may
    change it; every other setting of a run must match its config.yaml.
    """
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices,
                                            "const": const, "saved": saved, "positional": positional,
                                            "nargs": nargs, "minimum": minimum,
                                            "free_on_resume": free_on_resume})


def check_bounds(config: Any) -> None:
    """Every numeric setting against its field's ``minimum``, in one wording."""
    for f in dataclasses.fields(config):
        minimum, value = f.metadata.get("minimum"), getattr(config, f.name)
        if minimum is None or value is None or isinstance(value, bool) or value >= minimum:
            continue
        bound = "0 or more" if minimum == 0 else f"at least {minimum:g}" if minimum >= 1 else f"over {minimum:g}"
        raise UsageError(f"{_flag(f)} must be {bound} (got {value})")


def free_on_resume(cls: type) -> frozenset[str]:
    """The settings ``--resume`` may change (see ``setting``)."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("free_on_resume") or
                     not f.metadata.get("saved", True))


@dataclass
class GenerationSettings:
    """Decoding options shared by evaluate and predict (set explicitly, never inherited)."""

    num_beams: int = setting(3, "Beam count for generation.", minimum=1, free_on_resume=True)
    max_new_tokens: int = setting(64, "Longest answer generated, in tokens.", minimum=1, free_on_resume=True)


@dataclass
class PrecisionSettings:
    """The precision generation runs in; shared by evaluate and predict (training evaluates in its own)."""

    dtype: str = setting("auto", "Precision of generation: auto (on a GPU, the one the run trained in, from its "
                                 "config.yaml; float32 on a CPU), float32, bfloat16 or float16 (GPU only).",
                         choices=["auto", "float32", "bfloat16", "float16"])


@dataclass
class TaskSettings:
    """The task prompt of VQA samples; shared by train, evaluate, data inspect and predict."""

    task_prompt: str = setting(tasks.VQA, "Task prompt put before every question (task datasets carry their own).")


@dataclass
class LoraFields:
    """The LoRA settings of train (used by --strategy lora and qlora); model/strategies.py's defaults."""

    lora_rank: int = setting(8, "LoRA rank r.", minimum=1)
    lora_alpha: int = setting(16, "LoRA scaling alpha.", minimum=1)
    lora_dropout: float = setting(0.05, "Dropout on the LoRA input.", minimum=0)
    lora_targets: str = setting("", "Comma-separated module names to adapt (default: every linear layer of both "
                                    "towers: q_proj,k_proj,v_proj,out_proj,fc1,fc2,qkv,proj,image_projection).")
    use_dora: bool = setting(False, "Weight-decomposed LoRA (DoRA).")
    use_rslora: bool = setting(False, "Rank-stabilised LoRA scaling (alpha / sqrt(r)).")
    lora_init: str = setting("default", "How new adapters start: peft's default (A Kaiming-uniform, B zero) or "
                                        "gaussian (A normal with std 1/r, B zero).", choices=["default", "gaussian"])


@dataclass
class DataSettings:
    """How a dataset spec is read; shared by train, evaluate and data inspect."""

    streaming: bool = setting(False, "Stream the dataset instead of downloading or converting it whole (hub ids, "
                                     "parquet, JSONL); training then needs --max-steps.")
    clean_questions: bool = setting(False, "Capitalise questions and end them with '?' (DocVQA-style questions), "
                                           "as the original training scripts did.")
    multi_image: str = setting("tile", "Rows with several images (Cauldron, Docmatix): tile them into one image, "
                                       "or skip them; either way they are counted.", choices=["tile", "skip"])
    holdout_rows: int = setting(100, "Rows per configuration held out as the validation split of a source that has "
                                     "none (the Cauldron, Docmatix, a single JSONL file); its train split leaves "
                                     "them out.", minimum=0)


@dataclass
class TrainConfig(LoraFields, TaskSettings, DataSettings, GenerationSettings):
    model: str = setting("tiny", "Model: 'tiny', a hub id (florence-community/Florence-2-base) or a local folder.")
    dataset: str = setting("synthetic", "Dataset spec: 'synthetic', 'docvqa', 'cauldron[:chartqa,...]', "
                                       "'docmatix', a hub id, a JSONL file or a folder (JSONL + images, parquet, "
                                       "save_to_disk), or a mixture 'docvqa=0.7,cauldron:chartqa=0.3'.")
    train_split: str = setting("train", "Split to train on.")
    eval_split: str = setting("validation", "Split to evaluate on ('none' to skip evaluation).", free_on_resume=True)
    output_dir: str = setting("runs/demo", "Run directory (checkpoints, final/, metrics.jsonl, model card).",
                              free_on_resume=True)
    overwrite: bool = setting(False, "Replace an existing run in --output-dir (only a folder that is a run, never "
                                     "the working directory or one holding the dataset or model).", saved=False)
    resume: str | None = setting(None, "Continue the run in --output-dir from its newest complete checkpoint "
                                       "(--resume alone, or 'auto'; a finished run is left as it is), or from the "
                                       "checkpoint folder given (--resume runs/x/checkpoint-500).",
                                 const="auto", saved=False)
    strategy: str = setting("full", "What trains: all weights, all but the vision tower, LoRA adapters, or LoRA on a "
                                    "4-bit base (GPU + bitsandbytes).",
                            choices=["full", "freeze-vision", "lora", "qlora"])
    freeze: str = setting("", "Comma-separated glob patterns of parameter names to freeze as well "
                              "(e.g. 'model.language_model.encoder.*').")
    gradient_checkpointing: bool = setting(False, "Recompute activations in the backward pass to save memory.",
                                           free_on_resume=True)
    epochs: float = setting(3.0, "Number of passes over the training split.")
    max_steps: int = setting(-1, "Stop after this many optimizer steps (overrides --epochs when > 0).")
    batch_size: int = setting(8, "Samples per device per step.", minimum=1)
    eval_batch_size: int = setting(0, "Samples per device per evaluation step (0: same as --batch-size).", minimum=0,
                                   free_on_resume=True)
    grad_accum: int = setting(1, "Gradient accumulation steps.", minimum=1)
    lr: float | None = setting(None, "Peak learning rate (default: 1e-3 for the randomly initialised 'tiny', "
                                     "1e-5 for pretrained checkpoints).")
    lr_scheduler: str = setting("linear", "Learning-rate schedule (any transformers scheduler name).")
    warmup_steps: int = setting(0, "Linear warm-up steps.", minimum=0)
    optim: str | None = setting(None, "Optimizer, any transformers name (adamw_torch_fused, adamw_torch, sgd, "
                                      "adafactor...; default: the Trainer's).")
    weight_decay: float = setting(0.0, "AdamW weight decay.")
    max_grad_norm: float = setting(1.0, "Gradient clipping norm.")
    max_nonfinite_steps: int = setting(5, "Steps whose loss or gradients are NaN/inf skip their update; "
                                          "this many in a row stop the run (after a checkpoint).", minimum=1,
                                          free_on_resume=True)
    eval_steps: int = setting(0, "Evaluate every N steps (0: at the end of each epoch).", minimum=0,
                              free_on_resume=True)
    save_steps: int = setting(0, "Save a checkpoint every N steps (0: at the end of each epoch).", minimum=0,
                              free_on_resume=True)
    save_total_limit: int = setting(2, "Keep at most this many checkpoints, the newest (0: keep every one).",
                                    minimum=0, free_on_resume=True)
    logging_steps: int = setting(10, "Log the training loss every N steps.", minimum=1, free_on_resume=True)
    load_best_model_at_end: bool = setting(False, "Put the weights of the checkpoint with the best "
                                                  "--metric-for-best-model into final/ (a checkpoint at every "
                                                  "evaluation; the best one is always kept).")
    metric_for_best_model: str | None = setting(None, "Evaluation metric that picks the best checkpoint: any "
                                                      "name --metrics takes (anls, map, field_f1...), source_score "
                                                      "or loss (default: the first metric of the evaluation's "
                                                      "task); implies --load-best-model-at-end.")
    early_stopping_patience: int = setting(0, "Stop after this many evaluations in a row without a better "
                                              "--metric-for-best-model (0: never); implies "
                                              "--load-best-model-at-end.", minimum=0)
    max_eval_samples: int = setting(0, "Evaluate on at most this many samples (0: the whole split).", minimum=0,
                                    free_on_resume=True)
    max_train_samples: int = setting(0, "Train on at most this many samples (0: the whole split).", minimum=0)
    max_target_tokens: int = setting(128, "Answers longer than this many tokens are truncated (and counted).",
                                     minimum=1)
    num_workers: int = setting(0, "Data-loader worker processes.", minimum=0, free_on_resume=True)
    seed: int = setting(42, "Random seed (data order, initialisation of new layers).")
    shuffle: bool = setting(True, "Shuffle the training data every epoch (--no-shuffle keeps the dataset order).")
    report_to: str = setting("tensorboard", "Where to log besides metrics.jsonl: tensorboard (local files in the run "
                                            "directory), wandb, mlflow (comma-separated), or none.",
                                            free_on_resume=True)
    ddp_timeout: int = setting(600, "Seconds a distributed collective waits for a stalled rank before the job fails.",
                               minimum=1, free_on_resume=True)
    fsdp: bool = setting(False, "Shard weights, gradients and optimizer state with FSDP instead of DDP (for the "
                                "large model on many GPUs; wrapped per layer of both towers).")
    deepspeed: str = setting("", "DeepSpeed config JSON (ZeRO stages) handed to the Trainer; needs the deepspeed "
                                 "package and GPUs.")
    bf16: bool = setting(False, "Train in bfloat16 autocast (GPU).")
    fp16: bool = setting(False, "Train in float16 autocast with loss scaling (GPUs without bfloat16: T4, V100).")
    push_to_hub: bool = setting(False, "At the end, upload final/ (model and processor), the model card and "
                                       "report.html to a hub model repository (needs a token: hf auth login).",
                                free_on_resume=True)
    hub_model_id: str | None = setting(None, "The repository to push to, 'user/name' or 'name' (default: the "
                                             "--output-dir folder's name, under the token's account).",
                                       free_on_resume=True)
    hub_private: bool = setting(False, "Create the hub repository as private.", free_on_resume=True)
    page_cache: str | None = setting(None, "Decode and resize every page once into a uint8 cache at model resolution "
                                           "in this folder ('auto': under ~/.cache/florence_tune/pages; bare flag), "
                                           "and train from it (fastpath.py).", const="auto")
    page_cache_draft: bool = setting(False, "Build the page cache from JPEGs decoded at reduced scale: several times "
                                            "faster, pixels within ~2 grey levels of the processor's on average.")
    group_by_page: bool = setting(False, "Batch the questions of a page together and run the vision tower once per "
                                         "page in the batch (same loss and gradients, far fewer FLOPs).")
    feature_cache_mib: int = setting(0, "With a frozen vision tower: keep its output per page on the device, up to "
                                        "this many MiB, so later epochs skip it (0: off).", minimum=0)
    compile: bool = setting(False, "torch.compile the vision tower and the language model (lengths padded to "
                                   "multiples of 32, last partial batch dropped).")
    trust_remote_code: bool = setting(False, "Allow code from the model repository to run (off by default).",
                                      free_on_resume=True)
    eval_before: bool = setting(True, "Evaluate once before training, for a before/after comparison.",
                                free_on_resume=True)
    metrics: str = setting("", "Comma-separated metrics to report (anls, exact_match, cer, wer, bleu, map, map_50, "
                               "recall_50, mask_map, mean_iou, region_f1, field_f1...); default: chosen by each "
                               "sample's task.", free_on_resume=True)


@dataclass
class EvalConfig(TaskSettings, DataSettings, GenerationSettings, PrecisionSettings):
    task_prompt: str | None = setting(None, "Task prompt put before every question (default: the one the run given "
                                            "as --model was trained with, else <VQA>).")
    model: str = setting(None, "Model: 'tiny', a hub id, a run directory, or a final/ or checkpoint folder.")
    dataset: str = setting("synthetic", "Dataset spec: 'synthetic', 'docvqa', 'cauldron[:chartqa,...]', "
                                       "'docmatix', a hub id, a JSONL file or a folder (JSONL + images, parquet, "
                                       "save_to_disk), or a mixture 'docvqa=0.7,cauldron:chartqa=0.3'.")
    split: str = setting("validation", "Split to evaluate (DocVQA's 'test' has no answers: predictions only).")
    output: str = setting("predictions.jsonl", "Where to write the predictions (JSON lines).")
    batch_size: int = setting(16, "Samples per generation batch.", minimum=1)
    num_workers: int = setting(0, "Data-loader worker processes decoding and resizing pages during generation.",
                               minimum=0)
    max_samples: int = setting(0, "Evaluate on at most this many samples (0: the whole split).", minimum=0)
    trust_remote_code: bool = setting(False, "Allow code from the model repository to run (off by default).")
    report: bool = setting(False, "Also write report.html (metrics per group, worst predictions) next to --output.")
    group_by: str = setting(None, "Metadata column to group the report by (default: question type).")
    metrics: str = setting("", "Comma-separated metrics to report (anls, exact_match, cer, wer, bleu, map, map_50, "
                               "recall_50, mask_map, mean_iou, region_f1, field_f1...); default: chosen by each "
                               "sample's task.")


@dataclass
class InspectConfig(TaskSettings, DataSettings):
    dataset: str = setting("synthetic", "Dataset spec to inspect (any form train --dataset accepts).", positional=True)
    split: str = setting("train", "Split to inspect.")
    model: str = setting("tiny", "Model whose tokenizer counts the question and answer tokens.")
    max_samples: int = setting(0, "Inspect at most this many samples (0: the whole split).", minimum=0)
    max_target_tokens: int = setting(128, "Count answers longer than this many tokens (training truncates them).",
                                     minimum=1)
    sheet: str = setting("contact_sheet.png", "Where to write the contact sheet (an image of samples with their "
                                              "question and answer; .png, .jpg, .webp...).")
    sheet_samples: int = setting(12, "How many samples the contact sheet shows.", minimum=0)


@dataclass
class PredictConfig(TaskSettings, GenerationSettings, PrecisionSettings):
    task_prompt: str | None = setting(None, "Task prompt put before every question (default: the one the run given "
                                            "as --model was trained with, else <VQA>).")
    model: str = setting(None, "Model: 'tiny', a hub id, a run directory, or a final/ or checkpoint folder.")
    image: str = setting(None, "What to ask about: an image file; a folder (every image and PDF below it, sorted); "
                               "a glob ('scans/*.jpg', quoted); a PDF (each page); or a JSON lines file of "
                               '{"image": ..., "question": ...} or {"image": ..., "task": ...} rows, paths '
                               "relative to it.")
    question: str = setting(None, "Question about the image (VQA).")
    task: str = setting(None, "Florence-2 task token instead of a question: <CAPTION>, <OCR>, <OD>, ...")
    output: str = setting(None, "Write one JSON line per image, page or row here (default: to stdout; one image "
                                "without --output prints its answer alone).")
    batch_size: int = setting(8, "Images per generation batch.", minimum=1)
    pdf_dpi: int = setting(200, "Resolution PDF pages are rendered at (200: a Letter or A4 page is about "
                                "1700 x 2300 px).", minimum=1)
    trust_remote_code: bool = setting(False, "Allow code from the model repository to run (off by default).")


@dataclass
class ReportConfig:
    run: str = setting(None, "Run directory to report on (its metrics.jsonl, predictions.jsonl, summary.json).",
                       positional=True)
    group_by: str = setting(None, "Metadata column to group metrics by (default: question type / family / source).")
    compare: list[str] = setting(None, "Two run directories to show side by side (metric deltas per group).",
                                 nargs=2)
    output: str = setting(None, "HTML file to write (default: report.html in the run; comparison.html).")


@dataclass
class ConvertConfig:
    source: str = setting(None, "Folder of a checkpoint in Microsoft's original Florence-2 layout (auto_map).",
                          positional=True)
    destination: str = setting(None, "Folder to write the native checkpoint to.", positional=True)
    overwrite: bool = setting(False, "Replace a non-empty destination folder.", saved=False)


@dataclass
class ExportConfig:
    model: str = setting(None, "Run directory or checkpoint to export (LoRA runs need --merge).")
    output: str = setting(None, "Folder to write the full model + processor to.")
    merge: bool = setting(False, "Fold LoRA adapters into the base weights (the result loads without peft).")
    trust_remote_code: bool = setting(False, "Allow code from the model repository to run (off by default).")


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _field_type(cls: type, f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(cls)[f.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None → X
        return next(t for t in typing.get_args(hint) if t is not type(None))
    return typing.get_origin(hint) or hint  # list[str] → list


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per dataclass field. Defaults are left as None so we can tell what was given."""
    parser.add_argument("--config", metavar="YAML", help="YAML file of settings; flags override it.")
    for f in dataclasses.fields(cls):
        kind = _field_type(cls, f)
        help_text = f.metadata.get("help", "")
        if f.metadata.get("choices"):
            help_text += f" Choices: {', '.join(f.metadata['choices'])}."
        if not (f.default is None or f.default is False or f.default == ""):  # 0 and 0.0 are defaults worth showing
            help_text += f" (default: {f.default})"
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs="?", default=None, metavar=f.name.upper(), help=help_text)
        elif f.metadata.get("nargs"):
            parser.add_argument(_flag(f), dest=f.name, nargs=f.metadata["nargs"], default=None, help=help_text)
        elif kind is bool:
            parser.add_argument(_flag(f), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            bare = {"nargs": "?", "const": f.metadata["const"]} if f.metadata.get("const") is not None else {}
            parser.add_argument(_flag(f), dest=f.name, type=kind, default=None, metavar=f.name.upper(),
                                choices=f.metadata.get("choices"), help=help_text, **bare)


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of setting: value")
    return data


def build(cls: type, values: dict[str, Any], *, source: str = "config") -> Any:
    """Create ``cls`` from a mapping, rejecting unknown keys with a did-you-mean."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        normalised = str(key).replace("-", "_")
        if normalised not in names:
            close = difflib.get_close_matches(normalised, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UsageError(f"unknown setting '{key}' in {source}{hint}")
    kwargs = {str(k).replace("-", "_"): v for k, v in values.items()}
    for f in dataclasses.fields(cls):
        if f.name in kwargs:
            kwargs[f.name] = _coerce(cls, f, kwargs[f.name], source)
    return cls(**kwargs)


_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _coerce(cls: type, f: dataclasses.Field, value: Any, source: str) -> Any:
    """A value from YAML held to the type its flag takes: nothing is rounded (2.5 → 2) or reread (true → 1)."""
    kind = _field_type(cls, f)
    if value is None:
        if f.default is None:
            return None
        raise UsageError(f"setting '{f.name}' in {source} is empty (null); give a value of type {kind.__name__} "
                         "or leave it out")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    # YAML 1.1 reads 1e-4 (no dot) as text; the flag takes it as the number it is, and so does the file
    written_number = isinstance(value, str) and _FLOAT_TEXT.match(value.strip()) is not None
    accepted = {bool: isinstance(value, bool), int: number and isinstance(value, int),
                float: number or written_number, str: isinstance(value, str) or number, list: isinstance(value, list)}
    if not accepted.get(kind, True):
        raise UsageError(f"setting '{f.name}' in {source} must be {kind.__name__}, got {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:  # the flag's argparse checks these; a file or the Python API must too
        raise UsageError(f"setting '{f.name}' in {source} must be one of {', '.join(choices)}, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"setting '{f.name}' in {source} must be {kind.__name__}, got {value!r}") from None


def resolve(cls: type, args: argparse.Namespace) -> Any:
    """Default < YAML < flags."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_yaml(args.config))
        build(cls, values, source=args.config)  # validate keys and types before merging flags
    for f in dataclasses.fields(cls):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    return build(cls, values)


def to_yaml(config: Any) -> str:
    """The settings of a run, without the per-invocation ones (``saved=False``)."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.metadata.get("saved", True)}
    return yaml.safe_dump(values, sort_keys=False)

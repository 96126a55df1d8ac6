"""Load Florence-2 (model + processor) from any model spec, through ``from_pretrained`` every time.

Accepted specs: ``tiny`` (the embedded model, built on first use), a hub id such as
``florence-community/Florence-2-base``, a run directory (its ``final/`` is used, or its newest
checkpoint), or any folder holding a checkpoint (``final/``, ``checkpoint-<step>/``).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from florence_tune import hub
from florence_tune.errors import FlorenceTuneError, UsageError
from florence_tune.model import checkpoints
from florence_tune.model.tiny import tiny_dir

log = logging.getLogger(__name__)

MODEL_FORMS = (
    "'tiny', a hub id like florence-community/Florence-2-base, a run directory, "
    "or a folder with config.json (final/ or checkpoint-N/)"
)
ADAPTER_CONFIG = "adapter_config.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_path(spec: str) -> str:
    """Turn a model spec into something ``from_pretrained`` accepts (local folder or hub id)."""
    if spec == "tiny":

        return str(tiny_dir())
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(_checkpoint_folder(path))
    if path.exists():
        raise UsageError(f"model '{spec}' is a file; pass a folder or hub id instead ({MODEL_FORMS})")
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return spec
    raise UsageError(f"model '{spec}' not found; accepted forms: {MODEL_FORMS}")


def holds_adapters(spec: str) -> bool:
    """Whether a model spec names a local folder of LoRA adapters (a LoRA run, its final/ or a checkpoint)."""
    location = resolve_model_path(spec)
    return (Path(location) / ADAPTER_CONFIG).is_file()


def _is_checkpoint(path: Path) -> bool:
    """A full model (config.json) or LoRA adapters (adapter_config.json)."""
    return (path / "config.json").is_file() or (path / ADAPTER_CONFIG).is_file()


def _checkpoint_folder(path: Path) -> Path:
    if _is_checkpoint(path):
        return path
    if _is_checkpoint(path / "final"):
        return path / "final"
    found = [p for p in path.glob("checkpoint-*") if checkpoints.step_of(p) is not None and _is_checkpoint(p)]
    # a folder without the COMPLETE marker may be half-written; only runs from before atomic saves lack it everywhere
    complete = [p for p in found if checkpoints.is_complete(p)]
    candidates = sorted(complete or found, key=checkpoints.step_of)
    if candidates:
        return candidates[-1]
    raise UsageError(f"model folder '{path}' holds no config.json, final/ or checkpoint-N/; "
                     f"accepted forms: {MODEL_FORMS}")


def _reject_remote_code_layout(location: str, trust_remote_code: bool) -> None:
    """Checkpoints in Microsoft's original layout need their own Python code; never run it silently."""
    config_file = Path(location) / "config.json"
    if trust_remote_code or not config_file.exists():
        return
    config = json.loads(config_file.read_text())
    if "auto_map" in config:
        raise UsageError(
            f"model '{location}' is in the original Florence-2 layout that runs code from the repository; "
            f"convert it without running that code with 'florence-tune convert {location} NATIVE_DIR' and pass "
            "--model NATIVE_DIR, use a native checkpoint (florence-community/Florence-2-base or -large), "
            "or pass --trust-remote-code if you trust its code"
        )


def load(spec: str, *, trust_remote_code: bool = False, quantization=None, device=None, train_adapters: bool = False,
         dtype=None):
    """Return ``(model, processor)`` for a model spec, in eval mode, on ``device`` (default: the CPU).

    A folder of LoRA adapters loads its base model (named in the adapter config) and wraps it.
    Commands that generate pass ``distributed.device()``: the GPU of this process when there is one.
    """
    model, processor = _load(spec, trust_remote_code=trust_remote_code, quantization=quantization,
                             train_adapters=train_adapters)
    if dtype is not None:  # generation in bf16 / fp16 (evaluate, predict); training keeps float32 weights
        model = model.to(dtype=dtype)
    return (model.to(device) if device is not None else model), processor


def _load(spec: str, *, trust_remote_code: bool, quantization, train_adapters: bool = False):
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    location = resolve_model_path(spec)
    if (Path(location) / ADAPTER_CONFIG).exists():
        return _load_adapters(Path(location), trust_remote_code=trust_remote_code, trainable=train_adapters)
    _reject_remote_code_layout(location, trust_remote_code)
    online = True if Path(location).exists() else hub.prepare_for_hub()
    if trust_remote_code:
        log.warning("trust_remote_code is on: code from '%s' will run on this machine", location)
    try:
        if trust_remote_code:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(location, trust_remote_code=True)
        else:
            extra = {"quantization_config": quantization} if quantization is not None else {}
            model = Florence2ForConditionalGeneration.from_pretrained(location, use_safetensors=True, **extra)
        processor = AutoProcessor.from_pretrained(location, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise FlorenceTuneError(
            f"could not load model '{spec}'{'' if online else ' (the hub is unreachable and it is not cached)'}: "
            f"{first_line(exc)[:200]}. Check the hub id and the network, or pass a local folder ({MODEL_FORMS})"
        ) from None
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise UsageError(f"model '{spec}' needs --trust-remote-code to load ({first_line(exc)})") from None
        raise
    return model.eval(), processor


def _load_adapters(folder: Path, *, trust_remote_code: bool, trainable: bool = False):
    from peft import PeftModel
    from transformers import AutoProcessor

    base_spec = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base_spec:
        raise UsageError(f"adapter folder '{folder}' does not name its base model (base_model_name_or_path)")
    base, processor = load(base_spec, trust_remote_code=trust_remote_code)
    if (folder / "processor_config.json").exists():
        processor = AutoProcessor.from_pretrained(folder)
    return PeftModel.from_pretrained(base, folder, is_trainable=trainable).eval(), processor


def save(model, processor, directory: str | Path) -> Path:
    """Write a checkpoint that plain ``transformers`` ``from_pretrained`` reloads (safetensors)."""
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    return directory


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

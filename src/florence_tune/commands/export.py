"""``florence-tune export``: a run's model as one full checkpoint, folding LoRA adapters into the weights.

    florence-tune export --model runs/lora-demo --merge --output exported/

The result loads with plain ``transformers`` (``Florence2ForConditionalGeneration.from_pretrained``),
without peft.
"""

from __future__ import annotations

import sys
from pathlib import Path

from florence_tune import paths
from florence_tune.config import ExportConfig
from florence_tune.errors import UsageError
from florence_tune.model import loading, strategies


def run(config: ExportConfig) -> Path:
    """Returns the folder written."""
    if not config.model or not config.output:
        raise UsageError("export needs --model RUN_OR_CHECKPOINT and --output DIR")
    output = Path(config.output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output '{output}' is a file; name a new folder for the model")
    if output.exists() and any(output.iterdir()):
        raise UsageError(f"--output '{output}' is not empty; choose a new folder")
    paths.check_creatable(output, "--output")
    model, processor = loading.load(config.model, trust_remote_code=config.trust_remote_code)
    if strategies.is_adapter_model(model):
        if not config.merge:
            raise UsageError(f"'{config.model}' holds LoRA adapters; pass --merge to fold them into a full model")
        model = model.merge_and_unload()
    elif config.merge:
        print(f"note: nothing to merge: '{config.model}' holds a full model, no LoRA adapters; writing it unchanged "
              f"to '{output}'", file=sys.stderr)
    return loading.save(model, processor, output)

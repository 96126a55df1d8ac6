"""``florence-tune data inspect SPEC``: a split read exactly as training reads it, counted and drawn.

    florence-tune data inspect cauldron:chartqa --split validation --sheet chartqa.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from florence_tune import data, hub, paths
from florence_tune.commands import options
from florence_tune.config import InspectConfig, check_bounds
from florence_tune.model import loading
from florence_tune.reporting import sheet
from florence_tune.reporting.inspection import Inspection


def run(config: InspectConfig) -> dict[str, Any]:
    """Statistics of one split (the JSON the command prints) and its contact sheet."""
    check_bounds(config)
    sheet.format_of(config.sheet)  # a name no image format fits is refused before the pass, not after
    paths.check_creatable(Path(config.sheet).expanduser().absolute().parent, "--sheet")
    answerless = data.predict_only(config.dataset, config.split)
    dataset = data.load(config.dataset, config.split, options.data_options(config, limit=config.max_samples),
                        require_answer=not answerless)
    inspection = Inspection(tokenizer_of(config.model), config.max_target_tokens, config.sheet_samples)
    for item in tqdm(dataset, total=len(dataset) if dataset.random_access else None, desc="inspect", unit="sample"):
        inspection.add(item)
    summary = {"dataset": config.dataset, "split": config.split,
               "kind": "map-style" if dataset.random_access else "stream", **inspection.summary()}
    if answerless:
        summary["note"] = f"split '{config.split}' has no answers: it is for predictions only"
    summary["contact_sheet"] = str(sheet.draw(inspection.cards, f"{config.dataset} · {config.split}", config.sheet))
    return summary


def tokenizer_of(model: str):
    """The tokenizer of a model spec (only the tokenizer: no weights are loaded)."""
    from transformers import AutoTokenizer

    location = loading.resolve_model_path(model)
    if not Path(location).exists():
        hub.prepare_for_hub()
    return AutoTokenizer.from_pretrained(location)

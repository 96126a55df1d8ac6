"""``florence-tune bench``: one measurement set (bench/measure.py) or the GPU suite (bench/suite.py).

    florence-tune bench --compare naive
    florence-tune bench --suite gpu --output bench-gpu.json      # scripts/gpu_bench.sh
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from florence_tune.bench import measure, suite
from florence_tune.bench.settings import BenchSettings
from florence_tune.config import check_bounds
from florence_tune.errors import UsageError


def run(config: BenchSettings) -> dict[str, Any]:
    """The result (also written to ``--output``); ``table`` turns it into lines for a person."""
    validate(config)
    result = suite.run_suite(config) if config.suite else measure.measure(config)
    if config.output:
        Path(config.output).write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(config: BenchSettings, result: dict[str, Any]) -> list[str]:
    return suite.table(result) if config.suite else measure.table(result)


def validate(config: BenchSettings) -> None:
    check_bounds(config)
    unknown = set(measure.parts_of(config)) - set(measure.PARTS)
    if unknown:
        raise UsageError(f"unknown --parts {sorted(unknown)}; choose from {', '.join(measure.PARTS)}")
    if config.feature_cache and config.strategy != "freeze-vision":
        raise UsageError("--feature-cache needs --strategy freeze-vision (a training tower changes its features)")
    if config.dry_run and not config.suite:
        raise UsageError("--dry-run goes with --suite (e.g. --suite gpu --dry-run)")
    measure.page_size(config)



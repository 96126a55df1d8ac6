"""``florence-tune bench --suite gpu``: the fixed set of measurements for one H100/H200, under 8 minutes.

    scripts/gpu_bench.sh                                  # = florence-tune bench --suite gpu --output bench-gpu.json
    florence-tune bench --suite gpu --dry-run             # the same code on the tiny model and small shapes (CPU)

Florence-2 base at batch 32 and large at batch 16, bf16: full fine-tuning eager and compiled, with and
without per-page grouping (3.9 questions per page, DocVQA's ratio), the frozen tower, the frozen tower
with cached features; base at batch 8 with and without vision-inclusive activation checkpointing (peak
memory); then the data loader, the loader feeding the step, and beam-3 evaluation against the naive
reference. Variants run one after another in this process, each on a fresh model; once
``--time-budget`` seconds have passed the rest are recorded as skipped, so the script always ends
with its JSON. The targets of the throughput issue are checked at the end (``targets``).
"""

from __future__ import annotations

import gc
import time
from dataclasses import replace
from typing import Any

import torch

from florence_tune.bench import measure, parts
from florence_tune.bench.settings import BenchSettings

BASE = {"model": "base", "batch_size": 32}
LARGE = {"model": "large", "batch_size": 16}
# Eager variants first (~10-20 s each on an H100), compiled ones last (inductor needs a minute or two
# for the vision tower and BART, forward and backward).
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("base_full", {**BASE}),
    ("base_grouped", {**BASE, "group_by_page": True}),
    ("base_frozen", {**BASE, "strategy": "freeze-vision"}),
    ("base_frozen_grouped", {**BASE, "strategy": "freeze-vision", "group_by_page": True}),
    ("base_cached", {**BASE, "strategy": "freeze-vision", "feature_cache": True, "group_by_page": True}),
    ("large_full", {**LARGE}),
    ("large_grouped", {**LARGE, "group_by_page": True}),
    ("large_frozen", {**LARGE, "strategy": "freeze-vision"}),
    ("base_b8_memory", {"model": "base", "batch_size": 8}),
    ("base_b8_checkpointed", {"model": "base", "batch_size": 8, "gradient_checkpointing": True}),
]
COMPILED: list[tuple[str, dict[str, Any]]] = [
    ("base_full_compiled", {**BASE, "compile": True}),
    ("base_grouped_compiled", {**BASE, "group_by_page": True, "compile": True}),
]
# Shape-only counts (seconds, any machine): FLOPs per question and activation memory with/without checkpointing.
COUNTS = [("base_b8", {"model": "base", "batch_size": 8}), ("base_b32_grouped", {**BASE, "group_by_page": True}),
          ("large_b16", {**LARGE})]
# Seconds a step of the suite may need, so one is started only when it can end inside the budget.
RESERVE_S = {"eager": 30, "pipeline": 120, "compiled": 180}
# (label, where the measured value sits in the result, the value to reach).
TARGETS = [
    ("base full >= 250 samples/s", ("variants", "base_full", "samples_per_s"), 250.0),
    ("base grouped >= 500 questions/s", ("variants", "base_grouped", "samples_per_s"), 500.0),
    ("base frozen >= 600 samples/s", ("variants", "base_frozen", "samples_per_s"), 600.0),
    ("base cached >= 1500 samples/s", ("variants", "base_cached", "samples_per_s"), 1500.0),
    ("large full >= 80 samples/s", ("variants", "large_full", "samples_per_s"), 80.0),
    ("large frozen >= 180 samples/s", ("variants", "large_frozen", "samples_per_s"), 180.0),
    ("evaluation beam 3 >= 5x naive", ("pipeline", "ratios", "eval_vs_naive"), 5.0),
    ("vision checkpointing cuts peak memory at batch 8 by >= 40 %", ("memory_cut",), 0.40),
]


def suite_config(config: BenchSettings, changes: dict[str, Any]) -> BenchSettings:
    """One variant's settings: bf16 throughout; the dry run swaps in the tiny model and small shapes."""
    values = {"bf16": True, "parts": "train", "steps": config.steps, "warmup": config.warmup, "compare": None,
              **changes}
    if config.dry_run:
        values.update(model="tiny", batch_size=min(int(values["batch_size"]), 4), steps=2, warmup=1,
                      bf16=torch.cuda.is_available())
    return replace(config, suite=None, output=None, **values)


def pipeline_config(config: BenchSettings) -> BenchSettings:
    """Base: the loaders, the loader feeding the step, beam-3 evaluation — each against naive. Training at
    batch 8: the naive twin runs in float32, whose activations at batch 32 (~100 GiB) would not fit an H100."""
    return suite_config(config, {"model": "base", "batch_size": 8, "eval_batch_size": 32,
                                 "parts": "loader,e2e,eval", "compare": "naive", "rounds": min(config.rounds, 2),
                                 "workers": config.workers if config.dry_run else max(config.workers, 8),
                                 "pages": 4 if config.dry_run else max(config.pages, 48)})


def run_suite(config: BenchSettings) -> dict[str, Any]:
    start = time.perf_counter()
    backend = "eager" if config.dry_run else "inductor"  # the dry run checks tracing, not Triton codegen
    device = parts.pick_device()
    result: dict[str, Any] = {"suite": config.suite, "dry_run": config.dry_run, "device": measure.describe(device),
                              "variants": {}, "skipped": [], "errors": {}}

    def fits(kind: str) -> bool:
        return config.dry_run or time.perf_counter() - start + RESERVE_S[kind] <= config.time_budget

    for kind, variants in (("eager", VARIANTS), ("pipeline", [("pipeline", {})]), ("compiled", COMPILED)):
        for name, changes in variants:
            if not fits(kind):
                result["skipped"].append(name)
                continue
            try:
                if kind == "pipeline":
                    result["pipeline"] = measure.measure(pipeline_config(config), compile_backend=backend)
                else:
                    variant = suite_config(config, changes)
                    result["variants"][name] = {**measure.measure(variant, compile_backend=backend)["train"],
                                                "settings": measure.settings(variant)}
            except Exception as exc:  # out of memory, a compiler error...: recorded, and the suite goes on
                result["errors"][name] = _first_line(exc)
            _free()
    result["counts"] = {name: measure.measure(suite_config(config, {**changes, "parts": "count"}))["count"]
                        for name, changes in COUNTS}
    result["memory_cut"] = _memory_cut(result["variants"])
    result["targets"] = check_targets(result)
    result["elapsed_s"] = time.perf_counter() - start
    return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _memory_cut(variants: dict[str, Any]) -> float | None:
    plain = variants.get("base_b8_memory", {}).get("peak_memory_mib")
    checkpointed = variants.get("base_b8_checkpointed", {}).get("peak_memory_mib")
    if not plain or not checkpointed or not torch.cuda.is_available():
        return None  # CPU peak RSS never resets, so it cannot compare two variants of one process
    return 1.0 - checkpointed / plain


def check_targets(result: dict[str, Any]) -> dict[str, Any]:
    """Each target of the issue: measured value, goal, met (None where not measured)."""
    checked = {}
    for label, keys, goal in TARGETS:
        value = measure._dig(result, keys)
        met = None if value is None or result["dry_run"] else value >= goal  # tiny shapes prove nothing
        checked[label] = {"value": value, "goal": goal, "met": met}
    return checked


def table(result: dict[str, Any]) -> list[str]:
    lines = [f"suite {result['suite']}{' (dry run: tiny model, small shapes)' if result['dry_run'] else ''} "
             f"on {result['device']}"]
    lines.append(f"  {'variant':<24} {'samples/s':>10} {'step ms':>9} {'GFLOP/q':>9} {'MFU':>6} {'peak MiB':>9}")
    for name, values in result["variants"].items():
        mfu = values.get("mfu")
        lines.append(f"  {name:<24} {values['samples_per_s']:>10.1f} {values['step_ms']:>9.1f} "
                     f"{values['train_gflop']:>9.1f} {f'{mfu:.2f}' if mfu is not None else 'n/a':>6} "
                     f"{values['peak_memory_mib']:>9.0f}")
    if "pipeline" in result:
        lines += measure.table(result["pipeline"])[1:]
    for label, check in result["targets"].items():
        state = {True: "met", False: "NOT met", None: "not measured"}[check["met"]]
        value = "n/a" if check["value"] is None else f"{check['value']:.3g}"
        lines.append(f"  target  {label:<62} {value:>10}  {state}")
    if result["skipped"]:
        lines.append(f"  skipped (time budget): {', '.join(result['skipped'])}")
    lines += [f"  failed: {name}: {error}" for name, error in result["errors"].items()]
    return lines

"""``florence-tune bench``: how fast training, data loading and evaluation run, as a table and one JSON line.

    florence-tune bench --compare naive                                   # tiny on this machine, every part
    florence-tune bench --model base --batch-size 32 --bf16 --group-by-page --parts train
    florence-tune bench --model large --batch-size 16 --bf16 --strategy freeze-vision --parts train
    florence-tune bench --suite gpu --output bench-gpu.json               # scripts/gpu_bench.sh, < 8 min on an H100
    florence-tune bench --suite gpu --dry-run                             # that suite on tiny shapes, any CPU

Per measurement: training samples/s and step time on a device-resident batch of the requested shape
(warm-up, device synchronised around the timed window only), FLOPs per question and MFU on a GPU
(flops.py), peak memory (GPU: max allocated; CPU: the process's peak RSS), data-loader samples/s
from full-size page JPEGs (decode + resize + tokenize + collate in worker processes), the same
loader feeding the step (e2e), and generation samples/s with beam search. ``--compare naive`` also
times bench_naive.py — the original scripts' way — on the same inputs and prints each ratio. Timings
on a shared machine are noisy, so each side is timed in turn with its reference, round after round
(``--rounds``), and reported as the median with its spread; a ratio is the median of the round-by-round
ratios.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from florence_tune.batch.pages import PixelSpec
from florence_tune.bench import flops
from florence_tune.bench import naive as bench_naive
from florence_tune.bench import parts as bench_parts
from florence_tune.bench.settings import BenchSettings
from florence_tune.errors import UsageError
from florence_tune.evaluation.generation import Decoding, generation_config
from florence_tune.evaluation.loop import predict_dataset
from florence_tune.model import page_path, strategies

PARTS = ("train", "loader", "e2e", "eval", "count")


def parts_of(config: BenchSettings) -> list[str]:
    return [p.strip() for p in config.parts.split(",") if p.strip()]


def page_size(config: BenchSettings) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in config.page_size.lower().split("x"))
    except ValueError:
        width = height = 0
    if width < 1 or height < 1:
        raise UsageError(f"--page-size must look like 1700x2200, two positive sides (got '{config.page_size}')")
    return width, height


def measure(config: BenchSettings, compile_backend: str = "inductor") -> dict[str, Any]:
    """Every part asked for, on one device, in this process."""
    device = bench_parts.pick_device()
    parts = parts_of(config)
    result: dict[str, Any] = {"device": describe(device), "model": config.model, "settings": settings(config)}
    only_count = set(parts) == {"count"}  # shapes are enough: no weights, any machine
    model, processor = bench_parts.load_model(config.model, config.image_size, "meta" if only_count else device,
                                              config.seed)
    result["image_size"] = PixelSpec.from_processor(processor).height
    if "count" in parts:
        result["count"] = count_part(model, processor, config)
    step = path = None
    if "train" in parts or "e2e" in parts:
        result["train"], step, path = train_part(model, processor, config, device, compile_backend)
    if {"loader", "e2e", "eval"} & set(parts):
        source = bench_parts.page_source(config.pages, page_size(config), config.seed)
    if {"loader", "e2e"} & set(parts):
        with tempfile.TemporaryDirectory(prefix="bench-page-cache-") as cache_dir:
            loaders = bench_parts.page_loaders(source, processor, batch_size=config.batch_size,
                                               workers=config.workers, cache_dir=cache_dir, seed=config.seed)
            if "loader" in parts:
                result["loader"] = loader_part(loaders, config)
            if "e2e" in parts:
                result["e2e"] = e2e_part(model, step, path, loaders, config, device)
            _close(loaders)
    del model, step, path
    if "eval" in parts:
        result["eval"] = eval_part(config, device, source)
    result["ratios"] = ratios(result)
    return result


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def settings(config: BenchSettings) -> dict[str, Any]:
    keep = ("batch_size", "question_tokens", "answer_tokens", "bf16", "compile", "strategy", "group_by_page",
            "feature_cache", "gradient_checkpointing", "workers", "pages", "page_size", "eval_beams")
    values = asdict(config)
    return {name: values[name] for name in keep} | ({"questions_per_page": config.questions_per_page}
                                                    if config.group_by_page else {})


# --- training ------------------------------------------------------------------------------------


def host_batch(processor, config: BenchSettings) -> dict[str, Any]:
    return bench_parts.synthetic_batch(processor, batch_size=config.batch_size, question_tokens=config.question_tokens,
                                       answer_tokens=config.answer_tokens, seed=config.seed,
                                       questions_per_page=config.questions_per_page if config.group_by_page else 1)


def count_part(model, processor, config: BenchSettings) -> dict[str, Any]:
    """FLOPs per question and activation memory of one step, with and without checkpointing (no timing)."""

    strategies.apply(model, strategies.parse_strategy(config.strategy))
    spec = PixelSpec.from_processor(processor)
    batch = host_batch(processor, config)
    plain = bench_parts.saved_activations(model, batch, spec, checkpointing=False)
    checkpointed = bench_parts.saved_activations(model, batch, spec, checkpointing=True)
    return {**bench_parts.count_flops(model, batch, spec, feature_cache=config.feature_cache).as_gflop(), **plain,
            "activation_mib_fp32_checkpointed": checkpointed["activation_mib_fp32"],
            "checkpointing_activation_cut": 1 - checkpointed["activation_mib_fp32"] / plain["activation_mib_fp32"]}


def train_part(model, processor, config: BenchSettings, device: torch.device, compile_backend: str):
    """Step time of the fast path (and of the naive twin with --compare), FLOPs, MFU, peak memory."""
    spec = PixelSpec.from_processor(processor)
    host = host_batch(processor, config)
    bench_parts.prepare(model, strategy=config.strategy, gradient_checkpointing=config.gradient_checkpointing,
                        compile_backend=compile_backend if config.compile else None)
    features = page_path.FeatureCache(2**20) if config.feature_cache else None
    path = page_path.PagePath(spec, features)
    step = bench_parts.train_step(model, bench_parts.fast_optimizer(model), path, config.bf16)
    batch = bench_parts.to_device(host, device)
    counted = bench_parts.count_flops(model, host, spec, feature_cache=config.feature_cache)

    fast_step = lambda: step(batch)  # noqa: E731
    bench_parts.reset_peak(device)
    bench_parts.seconds_per_call(fast_step, config.steps, config.warmup, device)  # warm-up, and the peak
    out: dict[str, Any] = {"peak_memory_mib": bench_parts.peak_memory_mib(device),
                           "pages_per_step": len(host["page_ids"]), **counted.as_gflop()}
    measures = {"fast": lambda: config.batch_size / bench_parts.seconds_per_call(fast_step, config.steps, 0, device)}
    if config.compare == "naive":
        twin, _ = bench_parts.load_model(config.model, config.image_size, device, config.seed)
        bench_parts.prepare(twin, strategy=config.strategy)
        twin_batch = bench_parts.to_device(bench_parts.naive_batch(host, spec), device)
        optimizer = bench_naive.optimizer(twin)
        naive_step = lambda: bench_naive.step(twin, optimizer, twin_batch)  # noqa: E731
        bench_parts.seconds_per_call(naive_step, 0, config.warmup, device)
        measures["naive"] = lambda: config.batch_size / bench_parts.seconds_per_call(naive_step, config.steps, 0,
                                                                                    device)
    timed = bench_parts.interleaved(measures, config.rounds, reference="naive")
    out.update(_rate(timed["fast"], config.batch_size))
    out["mfu"] = flops.mfu(counted.train, out["samples_per_s"], flops.device_peak_tflops(config.peak_tflops))
    if features is not None:
        out["feature_cache_mib"] = features.used / 2**20
    if "naive" in timed:
        out["naive"] = _rate(timed["naive"], config.batch_size)
        out["vs_naive"] = timed["fast"]["vs_reference"]
    return out, step, path


# --- data loading --------------------------------------------------------------------------------


def loader_part(loaders: dict[str, Any], config: BenchSettings) -> dict[str, Any]:
    """Samples/s of each loader over one epoch, the loaders taking turns round after round."""
    sizes = {"naive": lambda b: len(b["input_ids"])}
    names = ["uint8", "uint8_grouped", "cached"] + (["naive"] if config.compare == "naive" else [])
    for name in names:  # warm: worker start-up, first decodes
        bench_parts.samples_per_second(loaders[name], sizes.get(name, lambda b: b.size))
    timed = bench_parts.interleaved({name: (lambda name=name: bench_parts.samples_per_second(
        loaders[name], sizes.get(name, lambda b: b.size))) for name in names}, config.rounds, reference="naive")
    out: dict[str, Any] = {f"{name}_samples_per_s": timed[name]["median"] for name in names}
    out["spread"] = {name: [timed[name]["min"], timed[name]["max"]] for name in names}
    if "naive" in timed:  # each fast loader against naive, round by round
        out["vs_naive"] = {name: timed[name]["vs_reference"] for name in names if name != "naive"}
    out["cache_build_ms_per_page"] = loaders["cache_build_s_per_page"] * 1e3
    out["questions"] = len(loaders["index"].page_of)
    out["unique_pages"] = loaders["index"].n_pages
    return out


def e2e_part(model, step, path, loaders: dict[str, Any], config: BenchSettings, device: torch.device):
    """The step fed by the cached loader (and the naive twin by the processor collate, with --compare)."""
    if config.compile:  # real questions vary in length: every new shape would be a recompilation
        return {"note": "not measured with --compile"}
    batches = bench_parts.cycle(loaders["cached_grouped" if config.group_by_page else "cached"])
    fed = lambda: step(bench_parts.to_device(next(batches).inputs, device))  # noqa: E731
    bench_parts.seconds_per_call(fed, 0, 2, device)
    measures = {"fast": lambda: config.batch_size / bench_parts.seconds_per_call(fed, config.steps, 0, device)}
    if config.compare == "naive":
        twin, _ = bench_parts.load_model(config.model, config.image_size, device, config.seed)
        bench_parts.prepare(twin, strategy=config.strategy)
        optimizer = bench_naive.optimizer(twin)
        naive_batches = bench_parts.cycle(loaders["naive"])
        naive = lambda: bench_naive.step(twin, optimizer, bench_naive.to_device(next(naive_batches), device))  # noqa: E731
        bench_parts.seconds_per_call(naive, 0, 1, device)
        measures["naive"] = lambda: config.batch_size / bench_parts.seconds_per_call(naive, config.steps, 0, device)
    timed = bench_parts.interleaved(measures, config.rounds, reference="naive")
    out = {"samples_per_s": timed["fast"]["median"], "spread": [timed["fast"]["min"], timed["fast"]["max"]]}
    if "naive" in timed:
        out["naive_samples_per_s"] = timed["naive"]["median"]
        out["vs_naive"] = timed["fast"]["vs_reference"]
    return out


def _close(loaders: dict[str, Any]) -> None:
    """Stop persistent workers before their page cache folder goes away."""
    for value in loaders.values():
        if isinstance(value, torch.utils.data.DataLoader):
            iterator = getattr(value, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()


# --- evaluation ----------------------------------------------------------------------------------


def eval_part(config: BenchSettings, device: torch.device, source) -> dict[str, Any]:
    """Generation over the page source with fixed-length answers: the page path, and the naive loop."""

    model, processor = bench_parts.load_model(config.model, config.image_size, device, config.seed)
    model.eval()
    batch_size = config.eval_batch_size or config.batch_size
    fixed = {"min_new_tokens": config.answer_tokens}
    decoding = Decoding(num_beams=config.eval_beams, max_new_tokens=config.answer_tokens)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if config.bf16 else contextlib.nullcontext()

    def fast(dataset):
        with autocast:
            return predict_dataset(model, processor, dataset, batch_size=batch_size, decoding=decoding,
                                   num_workers=config.workers, progress=False, **fixed)

    def timed_pass(run) -> Callable[[], float]:
        def rate() -> float:
            start = time.perf_counter()
            answered = len(run())
            bench_parts.synchronize(device)
            counts.append(answered)
            return answered / (time.perf_counter() - start)
        return rate

    counts: list[int] = []
    fast(bench_parts.page_source(config.pages, page_size(config), config.seed, limit=batch_size))  # warm-up
    measures = {"fast": timed_pass(lambda: fast(source)[0])}
    if config.compare == "naive":
        generation = generation_config(processor, decoding, **fixed)
        measures["naive"] = timed_pass(lambda: bench_naive.evaluate(model, processor, source, batch_size=batch_size,
                                                                    generation_config=generation))
    timed = bench_parts.interleaved(measures, config.rounds, reference="naive")
    out = {"samples_per_s": timed["fast"]["median"], "spread": [timed["fast"]["min"], timed["fast"]["max"]],
           "questions": counts[0], "beams": config.eval_beams}
    if "naive" in timed:
        out["naive_samples_per_s"] = timed["naive"]["median"]
        out["vs_naive"] = timed["fast"]["vs_reference"]
    return out


# --- ratios and printing -------------------------------------------------------------------------


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """Each fast path over its naive reference, where both were measured: the median of the round-by-round
    ratios of interleaved timings (their spread is next to each measurement, under ``vs_naive``)."""
    where = {
        "train_vs_naive": ("train", "vs_naive"),
        "e2e_vs_naive": ("e2e", "vs_naive"),
        "loader_uint8_vs_naive": ("loader", "vs_naive", "uint8"),
        "loader_grouped_vs_naive": ("loader", "vs_naive", "uint8_grouped"),
        "loader_cached_vs_naive": ("loader", "vs_naive", "cached"),
        "eval_vs_naive": ("eval", "vs_naive"),
    }
    found = {name: _dig(result, (*keys, "median")) for name, keys in where.items()}
    return {name: value for name, value in found.items() if value}


def _rate(timed: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """Samples/s (median of the rounds) with its spread, and the step time it means."""
    return {"samples_per_s": timed["median"], "spread": [timed["min"], timed["max"]],
            "step_ms": batch_size / timed["median"] * 1e3}


def _dig(values: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if not isinstance(values, dict) or key not in values:
            return None
        values = values[key]
    return values if isinstance(values, int | float) else None


def table(result: dict[str, Any]) -> list[str]:
    """The result as aligned ``section  metric  value`` lines."""
    lines = [f"device: {result.get('device')}   model: {result.get('model')}"]
    for section in ("count", "train", "loader", "e2e", "eval", "ratios"):
        for name, value in _flatten(result.get(section) or {}):
            lines.append(f"  {section:<7} {name:<42} {_fmt(value)}")
    return lines


def _flatten(values: dict[str, Any], prefix: str = ""):
    for name, value in values.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return "n/a" if value is None else str(value)



"""The measurements behind ``florence-tune bench`` (bench.py), each a plain function of plain values.

    florence-tune bench --model tiny --compare naive

* training step: a device-resident batch of the requested shape (uint8 pages, random token ids),
  warm-up, device synchronisation only around the timed window — none inside a step;
* FLOPs: one step counted on a fake (shape-only) copy of the model, see flops.py;
* data loader: full-size page JPEGs generated once (synthetic documents at 1700x2200), read the way
  training reads them — decode + resize + tokenize + collate — in worker processes;
* evaluation: generation over those pages with fixed-length answers (``min_new_tokens`` =
  ``max_new_tokens``), so both paths decode the same number of tokens.
"""

from __future__ import annotations

import io
import math
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from florence_tune import data
from florence_tune.batch.collate import PixelCollator
from florence_tune.batch.page_cache import build_cache
from florence_tune.batch.pages import PagePixels, PixelSpec, index_pages
from florence_tune.batch.samplers import PageBatchSampler
from florence_tune.bench import flops, naive
from florence_tune.data import synthetic
from florence_tune.model import acceleration, architectures, loading, page_path, strategies
from florence_tune.paths import cache_root

BUILT_IN = ("tiny", "base", "large")


# --- devices, clocks, memory ---------------------------------------------------------------------


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """GPU: peak allocated since the last reset; CPU: this process's peak resident set (never reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def seconds_per_call(fn: Callable[[], Any], calls: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / max(calls, 1)


def interleaved(measures: dict[str, Callable[[], float]], rounds: int,
                reference: str | None = None) -> dict[str, dict[str, Any]]:
    """Each measure (a rate, e.g. samples/s) taken in turn, A B A B ..., for ``rounds`` rounds, so a machine
    that speeds up or slows down (other jobs, clocks) affects every side alike: per side the median and its
    spread, and for each side but ``reference`` its ratio to ``reference`` round by round ("vs_reference":
    the median of those pairs and their spread)."""
    values: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            values[name].append(measure())
    out: dict[str, dict[str, Any]] = {name: spread(found) for name, found in values.items()}
    if reference in values:
        for name in values:
            if name != reference:
                pairs = zip(values[name], values[reference], strict=True)
                out[name]["vs_reference"] = spread([a / b for a, b in pairs])
    return out


def spread(values: list[float]) -> dict[str, Any]:
    """The median of a measurement's rounds with their minimum and maximum."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


# --- the model -----------------------------------------------------------------------------------


def load_model(spec: str, image_size: int, device: torch.device | str, seed: int = 0):
    """(model, processor): built-in architectures with random weights, or a checkpoint.

    ``device='meta'`` (built-in architectures only): shapes without weights, for counting.
    """
    torch.manual_seed(seed)
    if spec in BUILT_IN:
        on = str(device) if spec != "tiny" or str(device) == "meta" else None
        model, processor = architectures.build(spec, image_size, device=on)
    else:

        model, processor = loading.load(spec)
        if image_size:
            architectures.resize_processor(processor, image_size)
    return model.to(device), processor


def prepare(model, *, strategy: str, gradient_checkpointing: bool = False, compile_backend: str | None = None):
    """The strategy, then ``acceleration.prepare``: the very call ``train`` makes."""
    strategies.apply(model, strategies.parse_strategy(strategy))
    model.train()
    acceleration.prepare(model, gradient_checkpointing=gradient_checkpointing, compile_backend=compile_backend)
    return model


# --- a training batch of a given shape -----------------------------------------------------------


def synthetic_batch(processor, *, batch_size: int, question_tokens: int, answer_tokens: int,
                    questions_per_page: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """A ``PixelCollator``-shaped batch: uint8 pages, questions of ``question_tokens`` random ids."""
    spec = PixelSpec.from_processor(processor)
    tokenizer = processor.tokenizer
    generator = torch.Generator().manual_seed(seed)
    pages = max(1, math.ceil(batch_size / max(questions_per_page, 1.0)))
    page_index = torch.arange(batch_size) * pages // batch_size
    special = set(tokenizer.added_tokens_decoder) | set(tokenizer.all_special_ids)  # <image>, <loc_*>, <s>...
    vocabulary = torch.tensor([i for i in range(min(len(tokenizer), 2000)) if i not in special])
    words = vocabulary[torch.randint(len(vocabulary), (batch_size, question_tokens + answer_tokens),
                                     generator=generator)]
    image = [processor.image_token_id] * processor.num_image_tokens
    prompts = [image + [tokenizer.bos_token_id] + w[:question_tokens].tolist() + [tokenizer.eos_token_id]
               for w in words]
    answers = [[tokenizer.bos_token_id] + w[question_tokens:question_tokens + max(answer_tokens - 2, 0)].tolist()
               + [tokenizer.eos_token_id] for w in words]
    collator = PixelCollator(processor, max_positions=architectures.ENCODER_POSITIONS)
    input_ids, attention_mask = collator._pad([torch.tensor(p) for p in prompts], tokenizer.pad_token_id)
    labels, _ = collator._pad([torch.tensor(a) for a in answers], -100)
    pixels = torch.randint(0, 256, (pages, 3, spec.height, spec.width), dtype=torch.uint8, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixels,
            "page_index": page_index, "page_ids": list(range(pages)), "labels": labels}


def naive_batch(batch: dict[str, Any], spec: PixelSpec) -> dict[str, torch.Tensor]:
    """The same batch as the original scripts fed it: one float page per question."""
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": batch["labels"],
            "pixel_values": spec.normalise(batch["pixel_values"].index_select(0, batch["page_index"]))}


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def fast_optimizer(model):
    """Fused AdamW (one kernel for all parameters) — the Trainer's default optimizer, adamw_torch_fused."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)


def train_step(model, optimizer, path: page_path.PagePath, bf16: bool) -> Callable:
    """One training step of the fast path as ``step(batch)``; it never reads a device value on the host."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    device_type = next(model.parameters()).device.type

    def step(batch: dict[str, Any]) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**path.model_inputs(model, batch)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        return loss

    return step


# --- FLOPs ---------------------------------------------------------------------------------------


def fake_copy(model, checkpointing: bool = False):
    """A shape-only twin of ``model`` (same config, same trainable set) and its ``FakeTensorMode``.

    Fake rather than plain meta tensors: HF skips its host-side mask checks on fake tensors, which meta
    tensors alone would trip.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = page_path.base_model(model)
    with torch.device("meta"):
        meta = type(real)(real.config)
    trains = {name: p.requires_grad for name, p in real.named_parameters()}
    for name, parameter in meta.named_parameters():
        parameter.requires_grad_(trains.get(name, True))
    meta.train()
    if checkpointing:  # both towers, whether or not the vision tower trains: the memory a full run can save
        acceleration.checkpoint_text_layers(meta)
        acceleration.checkpoint_vision_blocks(meta)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    _fakeify(meta, mode)
    return meta, mode


def count_flops(model, batch: dict[str, Any], spec: PixelSpec, feature_cache: bool = False) -> flops.StepFlops:
    """FLOPs per question of one step of the fast path, on a fake copy of ``model`` (model FLOPs: no recompute)."""
    meta, mode = fake_copy(model)
    with mode:
        fake = _fake_batch(batch, mode)
        path = page_path.PagePath(spec, page_path.FeatureCache(2**30) if feature_cache else None)

        def run():
            return meta(**path.model_inputs(meta, fake)).loss

        if feature_cache:
            run()  # the first epoch fills the cache; count a later one
        return flops.count_step(run, int(batch["input_ids"].shape[0]))


def saved_activations(model, batch: dict[str, Any], spec: PixelSpec, checkpointing: bool) -> dict[str, float]:
    """Bytes autograd keeps for the backward of one step (float32; bf16 autocast keeps about half), and the
    vision tower's share — counted on a fake copy, so it is exact on any machine without running the model."""
    from torch.multiprocessing.reductions import StorageWeakRef

    meta, mode = fake_copy(model, checkpointing)
    with mode:
        fake = _fake_batch(batch, mode)
        weights = {StorageWeakRef(p.untyped_storage()).cdata for p in meta.parameters()}

        def saved_by(run) -> int:
            kept: dict[int, int] = {}

            def pack(tensor):
                key = StorageWeakRef(tensor.untyped_storage()).cdata
                if key not in weights:  # weights are saved for matmul backwards but are no activation
                    kept.setdefault(key, tensor.untyped_storage().nbytes())
                return tensor

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                run()
            return sum(kept.values())

        total = saved_by(lambda: meta(**page_path.PagePath(spec).model_inputs(meta, fake)).loss)
        tower = saved_by(lambda: meta.model.vision_tower(spec.normalise(fake["pixel_values"])))
    return {"activation_mib_fp32": total / 2**20, "vision_activation_share": tower / max(total, 1)}


def _fake_batch(batch: dict[str, Any], mode) -> dict[str, Any]:
    return {k: mode.from_tensor(v.to("meta")) if torch.is_tensor(v) else v for k, v in batch.items()}


def _fakeify(model, mode) -> None:
    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None:
                module._parameters[name] = torch.nn.Parameter(mode.from_tensor(parameter),
                                                              requires_grad=parameter.requires_grad)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = mode.from_tensor(buffer)


# --- a real page source --------------------------------------------------------------------------


def page_source(pages: int, page_size: tuple[int, int], seed: int = 0, limit: int = 0):
    """A DocVQA-schema dataset of ``pages`` full-size synthetic page JPEGs (3-4 questions each), saved
    once under the cache folder and read back like any local dataset (``limit``: its first questions)."""

    folder = cache_root() / f"bench-pages-{pages}-{page_size[0]}x{page_size[1]}-{seed}"
    if not (folder / "READY").exists():
        _write_pages(folder, pages, page_size, seed)
    return data.load(str(folder), "train", limit=limit)


def _write_pages(folder: Path, pages: int, page_size: tuple[int, int], seed: int) -> None:
    import datasets


    records = []
    for document in synthetic.generate_documents("train", pages, seed=seed, image_size=page_size):
        jpeg = io.BytesIO()
        document.image.save(jpeg, format="JPEG", quality=90)
        for number, (family, question, answers) in enumerate(document.questions):
            records.append({"questionId": document.doc_id * 10 + number, "question": question,
                            "question_types": [family], "image": {"bytes": jpeg.getvalue(), "path": None},
                            "docId": document.doc_id, "answers": list(answers)})
    split = datasets.Dataset.from_list(records, features=synthetic.FEATURES)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bench-pages-", dir=folder.parent))
    try:
        datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(staging / "data"))
        (staging / "data" / "READY").write_text("1")
        (staging / "data").rename(folder)
    except OSError:  # a concurrent run wrote it first
        if not (folder / "READY").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- data loading --------------------------------------------------------------------------------


def loader(dataset, collate, *, batch_size: int, workers: int, sampler=None, seed: int = 0):
    common = {"collate_fn": collate, "num_workers": workers, "pin_memory": torch.cuda.is_available(),
              "persistent_workers": workers > 0, "prefetch_factor": 4 if workers > 0 else None}
    if sampler is not None:
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **common)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, **common)


def samples_per_second(batches, size: Callable[[Any], int] = lambda batch: batch.size) -> float:
    """One timed epoch of a loader; ``size``: questions in a batch (the naive collate returns a plain dict,
    as the original scripts' did). Warm the loader first (worker start-up, first decodes)."""
    start, count = time.perf_counter(), 0
    for batch in batches:
        count += size(batch)
    return count / (time.perf_counter() - start)


def page_loaders(source, processor, *, batch_size: int, workers: int, cache_dir: str,
                 seed: int = 0) -> dict[str, Any]:
    """The loaders to compare, by name, plus the page-cache build time (seconds per unique page)."""
    spec = PixelSpec.from_processor(processor)
    index = index_pages(source)
    pixels = PixelCollator(processor, max_positions=architectures.ENCODER_POSITIONS)
    start = time.perf_counter()
    cache = build_cache(source, index, spec, cache_dir, workers=max(workers, 1))
    build_s = time.perf_counter() - start
    grouped = PageBatchSampler(index.page_of, batch_size, seed=seed)
    return {
        "naive": loader(source, naive.NaiveCollate(processor), batch_size=batch_size, workers=0, seed=seed),
        "uint8": loader(PagePixels(source, index, spec), pixels, batch_size=batch_size, workers=workers, seed=seed),
        "uint8_grouped": loader(PagePixels(source, index, spec), pixels, batch_size=batch_size, workers=workers,
                                sampler=grouped),
        "cached": loader(PagePixels(source, index, spec, cache), pixels, batch_size=batch_size, workers=workers,
                         seed=seed),
        "cached_grouped": loader(PagePixels(source, index, spec, cache), pixels, batch_size=batch_size,
                                 workers=workers, sampler=grouped),
        "cache_build_s_per_page": build_s / max(index.n_pages, 1),
        "cache": cache, "index": index,
    }


def cycle(batches):
    while True:
        yield from batches


def average(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")

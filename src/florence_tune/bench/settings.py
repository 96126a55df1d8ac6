"""``BenchSettings``: the benchmark's own parameter object (model, shapes, parts, suite), one field per
``florence-tune bench`` flag, each written once with its help and bounds."""

from __future__ import annotations

from dataclasses import dataclass

from florence_tune.config import setting


@dataclass
class BenchSettings:
    """What ``bench`` measures and on which shapes; the bench command's flags come from these fields."""

    model: str = setting("tiny", "Model: 'tiny', 'base' or 'large' (the published architectures with random "
                                 "weights; nothing is downloaded), or a checkpoint folder / hub id.")
    image_size: int = setting(0, "Page side at model resolution, in pixels (0: the model's own; 768 for base/large).",
                              minimum=0)
    batch_size: int = setting(8, "Questions per training step (and per loader batch).", minimum=1)
    question_tokens: int = setting(20, "Question length in tokens (the image's tokens come on top).", minimum=1)
    answer_tokens: int = setting(10, "Answer length in tokens (training labels; generated tokens at evaluation).",
                                 minimum=2)
    questions_per_page: float = setting(3.9, "Questions sharing a page when --group-by-page is on (DocVQA: 3.9).",
                                        minimum=1)
    steps: int = setting(10, "Timed training steps.", minimum=1)
    rounds: int = setting(3, "Timings of each side, taken in turn with the reference (fast, naive, fast, naive...); "
                             "the median and the spread are reported.", minimum=1)
    warmup: int = setting(3, "Untimed steps before timing (allocator, kernel autotuning, compilation).", minimum=0)
    bf16: bool = setting(False, "bfloat16 autocast with float32 master weights (GPU).")
    compile: bool = setting(False, "torch.compile the vision tower and the language model.")
    strategy: str = setting("full", "What trains.", choices=["full", "freeze-vision"])
    group_by_page: bool = setting(False, "Questions share pages (--questions-per-page); the tower runs once per page.")
    feature_cache: bool = setting(False, "Frozen tower with its outputs cached: times a later epoch "
                                         "(needs --strategy freeze-vision).")
    gradient_checkpointing: bool = setting(False, "Recompute activations (BART layers and DaViT blocks).")
    parts: str = setting("train,loader,e2e,eval", "Comma-separated measurements: train (step on a device-resident "
                                                   "batch), loader, e2e (loader + step), eval (generation).")
    workers: int = setting(2, "Data-loader worker processes.", minimum=0)
    pages: int = setting(8, "Full-size page JPEGs generated for the loader, e2e and eval measurements.", minimum=1)
    page_size: str = setting("1700x2200", "Size of those pages, WIDTHxHEIGHT (a DocVQA scan is about 1700x2200).")
    eval_beams: int = setting(3, "Beams at evaluation.", minimum=1)
    eval_batch_size: int = setting(0, "Questions per generation batch (0: --batch-size).", minimum=0)
    compare: str = setting(None, "Also time the reference written like the original scripts, in this process on "
                                 "the same inputs, and print each ratio.", choices=["naive"])
    suite: str = setting(None, "Run a fixed set of measurements instead (gpu: base at batch 32 and large at 16, "
                               "bf16, eager vs compiled, full vs frozen vs cached, with and without grouping).",
                         choices=["gpu"])
    dry_run: bool = setting(False, "With --suite: the same suite on the tiny model and small shapes (CPU is enough).")
    time_budget: int = setting(420, "With --suite: seconds it may take; a variant that would end later is skipped.",
                               minimum=1)
    output: str = setting(None, "Also write the JSON result to this file.")
    peak_tflops: float = setting(0.0, "Device peak for MFU in TFLOP/s (0: known GPUs by name; H100/H200: 790).",
                                 minimum=0)
    seed: int = setting(0, "Random seed (weights of the built-in architectures, inputs).")

"""Batched generation over a dataset split, ANLS scoring, predictions.jsonl.

Run it: ``florence-tune evaluate --model runs/demo --dataset synthetic --split validation``.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from florence_tune import distributed, metrics
from florence_tune.data.collate import Collator, encoder_positions
from florence_tune.data.sample import Sample


def generation_config(processor, *, num_beams: int, max_new_tokens: int):
    """Decoding options set explicitly, so nothing is inherited from the checkpoint's BART defaults
    (``no_repeat_ngram_size=3`` and forced BOS/EOS would silently damage answers)."""
    from transformers import GenerationConfig

    tokenizer = processor.tokenizer
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        do_sample=False,
        early_stopping=num_beams > 1,
        no_repeat_ngram_size=0,
        repetition_penalty=1.0,
        length_penalty=1.0,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        decoder_start_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@torch.no_grad()
def generate(model, processor, batch: dict[str, torch.Tensor], config) -> list[str]:
    """Answers for one encoded batch (decoded text, special tokens removed)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "pixel_values")}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    output = model.generate(**inputs, generation_config=config)
    return [text.strip() for text in processor.batch_decode(output, skip_special_tokens=True)]


IndexedBatch = tuple[list[tuple[int, Sample]], collections.Counter]


def batches(dataset, batch_size: int, indices: Iterable[int]) -> Iterable[IndexedBatch]:
    """Group usable samples (with their dataset index) into batches; unusable rows are counted, not raised."""
    current: list[tuple[int, Sample]] = []
    skipped: collections.Counter = collections.Counter()
    for index in indices:
        item = dataset[index]
        if isinstance(item, Sample):
            current.append((index, item))
        else:
            skipped[f"skipped_{item.reason}"] += 1
        if len(current) == batch_size:
            yield current, skipped
            current, skipped = [], collections.Counter()
    if current or skipped:
        yield current, skipped


def predict_dataset(model, processor, dataset, *, batch_size: int, num_beams: int, max_new_tokens: int,
                    progress: bool = True) -> tuple[list[dict[str, Any]], collections.Counter]:
    """Generate an answer for every usable sample; returns (records, counts of skipped rows).

    Under torchrun each rank generates for its own disjoint share of the split and the records are
    gathered, so every rank returns the same complete list, in dataset order, each question once.
    """
    from tqdm.auto import tqdm

    model.eval()
    collator = Collator(processor, max_positions=encoder_positions(model), with_labels=False)
    config = generation_config(processor, num_beams=num_beams, max_new_tokens=max_new_tokens)
    indexed: list[tuple[int, dict[str, Any]]] = []
    counts: collections.Counter = collections.Counter()
    mine = distributed.shard(len(dataset))
    show = progress and distributed.is_main()
    with tqdm(total=len(mine), desc="evaluate", unit="sample", disable=not show) as bar:
        for batch_items, skipped in batches(dataset, batch_size, mine):
            counts.update(skipped)
            if batch_items:
                samples = [sample for _, sample in batch_items]
                answers = generate(model, processor, collator.encode(samples, counts), config)
                indexed += [(i, score_record(s, a)) for (i, s), a in zip(batch_items, answers, strict=True)]
            bar.update(len(batch_items) + sum(skipped.values()))
    everything = sorted(distributed.gather(indexed), key=lambda pair: pair[0])
    total_counts = sum((collections.Counter(c) for c in distributed.gather([dict(counts)])), collections.Counter())
    return [record for _, record in everything], total_counts


def score_record(sample: Sample, prediction: str) -> dict[str, Any]:
    return {
        "question_id": sample.id,
        "question": sample.meta.get("question", sample.prompt),
        "prediction": prediction,
        "references": sample.references,
        "anls": metrics.anls_score(prediction, sample.references),
        "exact_match": metrics.exact_match(prediction, sample.references),
        "group": sample.meta.get("question_type", "all"),
    }


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall ANLS / exact match / n, plus per-group ANLS."""
    summary = metrics.score_predictions(records)
    groups = metrics.group_scores(records, key=lambda r: r["group"])
    summary["anls_by_group"] = {name: values["anls"] for name, values in sorted(groups.items())}
    return summary


def majority_baseline(train: list[Sample], evaluation: list[Sample]) -> float:
    """ANLS of always answering the most frequent training answer of the question's group.

    A model that never looks at the image can do this well; a fine-tuned model must beat it.
    """
    by_group: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for sample in train:
        by_group[sample.meta.get("question_type", "all")][sample.target] += 1
    overall = collections.Counter(s.target for s in train)
    fallback = overall.most_common(1)[0][0] if overall else ""
    scores = []
    for sample in evaluation:
        counter = by_group.get(sample.meta.get("question_type", "all"))
        guess = counter.most_common(1)[0][0] if counter else fallback
        scores.append(metrics.anls_score(guess, sample.references))
    return metrics.aggregate(scores)


def write_predictions(records: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def run_evaluation(config) -> dict[str, Any]:
    """The ``evaluate`` command: generate over a split, write predictions, return the summary."""
    from florence_tune import data, modeling
    from florence_tune.errors import UsageError

    if not config.model:
        raise UsageError("evaluate needs --model (e.g. --model runs/demo, --model tiny or a hub id)")
    if config.batch_size < 1 or config.num_beams < 1 or config.max_new_tokens < 1:
        raise UsageError("--batch-size, --num-beams and --max-new-tokens must be at least 1")
    state = distributed.init()
    with distributed.main_process_first():
        dataset = data.load(config.dataset, config.split, config.task_prompt, limit=config.max_samples)
        model, processor = modeling.load(config.model, trust_remote_code=config.trust_remote_code)
    model.to(state.device)
    records, skipped = predict_dataset(model, processor, dataset, batch_size=config.batch_size,
                                       num_beams=config.num_beams, max_new_tokens=config.max_new_tokens)
    if distributed.is_main():
        write_predictions(records, config.output)
    summary = summarise(records)
    summary.update({"skipped": dict(skipped), "predictions": str(config.output)})
    return summary

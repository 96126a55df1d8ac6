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

from florence_tune import distributed, paths, tasks
from florence_tune.batch.collate import Collator, encoder_positions
from florence_tune.data.sample import Sample
from florence_tune.evaluation import metrics, task_metrics


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
def generate(model, processor, batch: dict[str, torch.Tensor], config,
             samples: list[Sample] | None = None) -> list[str]:
    """Answers for one encoded batch (decoded text, special tokens removed).

    With ``samples``, answers of box tasks (<OD>, grounding...) keep their location tokens, which
    plain decoding would drop as special tokens; post-processing reads them later.
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "pixel_values")}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    return decode_answers(processor, model.generate(**inputs, generation_config=config), samples)


def decode_answers(processor, output: torch.Tensor, samples: list[Sample] | None = None) -> list[str]:
    """Generated ids → answer text (box tasks keep their location tokens; see ``generate``)."""
    plain = [text.strip() for text in processor.batch_decode(output, skip_special_tokens=True)]
    if not samples or not any(tasks.task_of(s.meta, s.prompt) in tasks.BOX_TASKS for s in samples):
        return plain
    raw = processor.batch_decode(output, skip_special_tokens=False)
    return [tasks.strip_markers(r) if tasks.task_of(s.meta, s.prompt) in tasks.BOX_TASKS else p
            for s, r, p in zip(samples, raw, plain, strict=True)]


Key = tuple[int, int]  # orders the records gathered from every rank
IndexedBatch = tuple[list[tuple[Key, Sample]], collections.Counter]


def my_items(dataset) -> tuple[Iterable[tuple[Key, Any]], int | None]:
    """This rank's (key, item) pairs and how many there are (None: a stream does not know).

    Map-style: a strided share of the indices, key (index, 0). A stream already reads only this
    rank's shard; its key is (position, rank), which for a bounded stream (every n-th sample) is the
    order of the whole split.
    """
    from florence_tune.data import is_stream

    if is_stream(dataset):
        rank = distributed.rank()
        return (((position, rank), item) for position, item in enumerate(dataset)), None
    mine = distributed.shard(len(dataset))
    return (((index, 0), dataset[index]) for index in mine), len(mine)


def batches(pairs: Iterable[tuple[Key, Any]], batch_size: int) -> Iterable[IndexedBatch]:
    """Group usable samples (with their key) into batches; unusable rows are counted, not raised."""
    current: list[tuple[Key, Sample]] = []
    skipped: collections.Counter = collections.Counter()
    for key, item in pairs:
        if isinstance(item, Sample):
            current.append((key, item))
        else:
            skipped[f"skipped_{item.reason}"] += 1
        if len(current) == batch_size:
            yield current, skipped
            current, skipped = [], collections.Counter()
    if current or skipped:
        yield current, skipped


def predict_dataset(model, processor, dataset, *, batch_size: int, num_beams: int, max_new_tokens: int,
                    progress: bool = True, num_workers: int = 0) -> tuple[list[dict[str, Any]], collections.Counter]:
    """Generate an answer for every usable sample; returns (records, counts of skipped rows).

    Under torchrun each rank generates for its own disjoint share of the split and the records are
    gathered, so every rank returns the same complete list, in dataset order, each question once.
    Map-style datasets take the page path (page_loop.py: pages decoded once, vision once per page,
    length-sorted batches, ``num_workers`` loader processes); streams the loop below.
    """
    from tqdm.auto import tqdm

    from florence_tune.evaluation import page_loop

    if page_loop.applies(dataset, processor):
        return page_loop.predict(model, processor, dataset, batch_size=batch_size, num_beams=num_beams,
                                 max_new_tokens=max_new_tokens, num_workers=num_workers, progress=progress)
    model.eval()
    collator = Collator(processor, max_positions=encoder_positions(model), with_labels=False)
    config = generation_config(processor, num_beams=num_beams, max_new_tokens=max_new_tokens)
    indexed: list[tuple[Key, dict[str, Any]]] = []
    counts: collections.Counter = collections.Counter()
    pairs, total = my_items(dataset)
    show = progress and distributed.is_main()
    with tqdm(total=total, desc="evaluate", unit="sample", disable=not show) as bar:
        for batch_items, skipped in batches(pairs, batch_size):
            counts.update(skipped)
            if batch_items:
                samples = [sample for _, sample in batch_items]
                answers = generate(model, processor, collator.encode(samples, counts), config, samples)
                # index: the report finds the page again (a stream cannot be indexed: None)
                indexed += [(key, {**score_record(s, a, processor), "index": key[0] if total is not None else None})
                            for (key, s), a in zip(batch_items, answers, strict=True)]
            bar.update(len(batch_items) + sum(skipped.values()))
    everything = sorted(distributed.gather(indexed), key=lambda pair: pair[0])
    total_counts = sum((collections.Counter(c) for c in distributed.gather([dict(counts)])), collections.Counter())
    return [record for _, record in everything], total_counts


@torch.no_grad()
def mean_loss(loss_of, batches: Iterable[dict[str, Any]]) -> float | None:
    """Sample-weighted mean of ``loss_of(batch)`` over this rank's batches and then every rank's.

    One collective at the end, so ranks may hold unequal numbers of batches (each reads its own shard
    of a stream); the Trainer's own evaluation loop gathers after every batch and would wait forever.
    """
    total, count = 0.0, 0
    for batch in batches:
        batch.pop("stats", None)
        if "input_ids" not in batch:  # every sample of this batch was unusable
            continue
        size = len(batch["input_ids"])
        total += float(loss_of(batch)) * size
        count += size
    parts = distributed.gather([(total, count)])
    count = sum(c for _, c in parts)
    return sum(t for t, _ in parts) / count if count else None


def score_record(sample: Sample, prediction: str, processor=None) -> dict[str, Any]:
    """One predictions.jsonl line; box tasks add their parsed boxes (``task_metrics.record_fields``)."""
    return {
        "question_id": sample.id,
        "question": sample.meta.get("question", sample.prompt),
        "prediction": prediction,
        "references": sample.references,
        "anls": metrics.anls_score(prediction, sample.references),
        "exact_match": metrics.exact_match(prediction, sample.references),
        "group": sample.meta.get("question_type", "all"),
        "meta": {k: v for k, v in sample.meta.items() if v is None or isinstance(v, str | int | float | bool)},
        **task_metrics.record_fields(sample, prediction, processor),
    }


def summarise(records: list[dict[str, Any]], metric_names: list[str] | None = None) -> dict[str, Any]:
    """The metrics of the records' tasks (VQA: ANLS / exact match, plus per-group ANLS) and n;
    ``metric_names`` replaces the choice (see ``task_metrics``)."""
    summary: dict[str, Any] = {**task_metrics.compute(records, metric_names), "n": len(records)}
    scored_by_anls = task_metrics.select(records, metric_names).get("anls")
    if scored_by_anls is not None:
        groups = metrics.group_scores(scored_by_anls, key=lambda r: r["group"])
        summary["anls_by_group"] = {name: values["anls"] for name, values in sorted(groups.items())}
    return summary


def majority_baseline(train: list[Sample], evaluation: list[Sample]) -> float | None:
    """ANLS of always answering the most frequent training answer of the question's group.

    A model that never looks at the image can do this well; a fine-tuned model must beat it.
    None when there are no questions to answer (a detection, OCR or caption set).
    """
    if not evaluation:
        return None
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


def unscored(records: list[dict[str, Any]], spec: str, split: str) -> dict[str, Any]:
    """The summary of a split without answers (DocVQA's test split): predictions, no score."""
    return {"n": len(records), "predict_only": True,
            "note": f"split '{split}' of '{spec}' has no answers: predictions only, nothing scored"}


def write_predictions(records: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def run_evaluation(config) -> dict[str, Any]:
    """The ``evaluate`` command: generate over a split, write predictions, return the summary."""
    from florence_tune import data
    from florence_tune.errors import UsageError
    from florence_tune.model import loading

    if not config.model:
        raise UsageError("evaluate needs --model (e.g. --model runs/demo, --model tiny or a hub id)")
    if config.batch_size < 1 or config.num_beams < 1 or config.max_new_tokens < 1:
        raise UsageError("--batch-size, --num-beams and --max-new-tokens must be at least 1")
    metric_names = task_metrics.parse_names(config.metrics)  # a misspelt metric fails before any heavy work
    paths.check_output_file(config.output, "--output", inputs=paths.local_inputs(config.model),
                            data=paths.local_inputs(config.dataset))
    state = distributed.init()
    with distributed.main_process_first():
        dataset = data.load(config.dataset, config.split, config.task_prompt, limit=config.max_samples,
                            clean_questions=config.clean_questions, streaming=config.streaming,
                            multi_image=config.multi_image, holdout_rows=config.holdout_rows)
        model, processor = loading.load(config.model, trust_remote_code=config.trust_remote_code)
    model.to(state.device)
    records, skipped = predict_dataset(model, processor, dataset, batch_size=config.batch_size,
                                       num_beams=config.num_beams, max_new_tokens=config.max_new_tokens,
                                       num_workers=config.num_workers)
    predict_only = getattr(dataset, "predict_only", False)
    summary = (unscored(records, config.dataset, config.split) if predict_only
               else summarise(records, metric_names))
    summary.update({"skipped": dict(skipped), "predictions": str(config.output)})
    if distributed.is_main():
        write_predictions(records, config.output)
        if config.report and not predict_only:
            from dataclasses import asdict

            from florence_tune.reporting.report import write_evaluation_report

            path = Path(config.output).with_name("report.html")
            write_evaluation_report(records, summary, asdict(config), dataset, path, column=config.group_by)
            summary["report"] = str(path)
    return summary

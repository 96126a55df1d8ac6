"""Predictions as records: one scored line per question, the summary of a split, the image-blind baseline.

    florence-tune evaluate --model runs/demo --output predictions.jsonl   # one record per line
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from florence_tune import paths, tasks
from florence_tune.data.sample import Sample
from florence_tune.evaluation import answer_metrics, metrics, task_metrics


def score_record(sample: Sample, prediction: str, processor=None) -> dict[str, Any]:
    """One predictions.jsonl line; answers with locations add their parsed regions
    (``task_metrics.record_fields``). A question also carries its source (``dataset``), the metric that
    source is judged by (``metric``) and its ``score`` by it."""
    record = {
        "question_id": sample.id,
        "question": sample.meta.get("question", sample.prompt),
        "prediction": prediction,
        "references": sample.references,
        "group": sample.meta.get("question_type", "all"),
        "meta": {k: v for k, v in sample.meta.items() if v is None or isinstance(v, str | int | float | bool)},
        **task_metrics.record_fields(sample, prediction, processor),
    }
    # scored on the answer's words (a region task's echoed box is not part of them)
    record["anls"] = metrics.anls_score(record["prediction"], record["references"])
    record["exact_match"] = metrics.exact_match(record["prediction"], record["references"])
    if record["task"] == tasks.VQA:
        metric = sample.meta.get("metric") or "anls"
        record.update(dataset=str(sample.meta.get("dataset") or "all"), metric=metric,
                      score=answer_metrics.BY_NAME[metric](record["prediction"], record["references"]))
    return record


def summarise(records: list[dict[str, Any]], metric_names: list[str] | None = None) -> dict[str, Any]:
    """The metrics of the records' tasks (VQA: ANLS / exact match, per-group ANLS, and each source by its
    own metric) and n; ``metric_names`` replaces the choice (see ``task_metrics``)."""
    summary: dict[str, Any] = {**task_metrics.compute(records, metric_names), "n": len(records)}
    scored_by_anls = task_metrics.select(records, metric_names).get("anls")
    if scored_by_anls is not None:
        groups = metrics.group_scores(scored_by_anls, key=lambda r: r["group"])
        summary["anls_by_group"] = {name: values["anls"] for name, values in sorted(groups.items())}
    summary.update(by_source(records))
    if metric_names is None and len({r.get("task") for r in records}) > 1:
        # a metric two tasks choose is pooled above: each task apart too (an explicit list means every record)
        summary["by_task"] = task_metrics.metrics_by_task(records)
    return summary


def by_source(records: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"source_score": mean, "by_source": {source: {"metric", "score", "n"}}}`` over the questions, each
    answer judged by its source's metric (ChartQA's relaxed accuracy, VQA accuracy, ...): the overall number
    is the mean over all questions, as a mixture's published score is. Empty without questions."""
    questions = [r for r in records if "score" in r]
    if not questions:
        return {}
    sources: dict[str, list[dict[str, Any]]] = {}
    for record in questions:
        sources.setdefault(record["dataset"], []).append(record)
    table = {name: {"metric": "/".join(sorted({r["metric"] for r in members})),
                    "score": metrics.aggregate(r["score"] for r in members), "n": len(members)}
             for name, members in sorted(sources.items())}
    return {"source_score": metrics.aggregate(r["score"] for r in questions), "by_source": table}


def unscored(records: list[dict[str, Any]], spec: str, split: str) -> dict[str, Any]:
    """The summary of a split without answers (DocVQA's test split): predictions, no score."""
    return {"n": len(records), "predict_only": True,
            "note": f"split '{split}' of '{spec}' has no answers: predictions only, nothing scored"}


def majority_baseline(train: Iterable[Sample], evaluation: Iterable[Sample]) -> float | None:
    """ANLS of always answering the most frequent training answer of the question's group (or, for a
    group training never saw, the most frequent answer overall).

    A model that never looks at the image can do this well; a fine-tuned model must beat it. Each input
    is read once, so both may be iterators. None when there are no questions to answer.
    """
    by_group: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    overall: collections.Counter = collections.Counter()
    for sample in _questions(train):
        by_group[sample.meta.get("question_type", "all")][sample.target] += 1
        overall[sample.target] += 1
    fallback = overall.most_common(1)[0][0] if overall else ""
    scores = []
    for sample in _questions(evaluation):
        counter = by_group.get(sample.meta.get("question_type", "all"))
        guess = counter.most_common(1)[0][0] if counter else fallback
        scores.append(metrics.anls_score(guess, sample.references))
    return metrics.aggregate(scores) if scores else None


def _questions(samples: Iterable[Sample]) -> Iterable[Sample]:
    """The VQA samples among ``samples`` (detection, OCR or caption samples ask no question)."""
    return (s for s in samples if tasks.task_of(s.meta, s.prompt) == tasks.VQA)


def write_predictions(records: list[dict[str, Any]], path: str | Path) -> Path:
    """predictions.jsonl, written atomically (the previous file stays whole if this write fails)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return paths.write_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))

"""The run directory's README.md: what was trained, on what, how well, and how to load it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from florence_tune import data, paths, tasks
from florence_tune.data.spec import is_hub_id
from florence_tune.model import loading
from florence_tune.reporting.report import read_jsonl

# How the card names the metrics summary.json holds (task_metrics.NAMES).
LABELS = {"anls": "ANLS", "exact_match": "exact match", "cer": "CER", "wer": "WER", "bleu": "BLEU",
          "map": "mAP@[.5:.95]", "map_50": "mAP@.5", "recall_50": "recall@.5", "mask_map": "mask mAP@[.5:.95]",
          "mask_map_50": "mask mAP@.5", "mean_iou": "mean IoU", "region_f1": "line F1@.5",
          "region_precision": "line precision@.5", "region_recall": "line recall@.5",
          "region_cer": "CER of matched lines", "field_f1": "field F1", "field_precision": "field precision",
          "field_recall": "field recall", "field_anls": "field ANLS", "json_valid": "valid JSON",
          "source_score": "each question by its source's metric"}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("—" if value is None else str(value))


def write_model_card(run_dir: Path, config, summary: dict[str, Any]) -> Path:
    skipped = summary.get("data") or {}
    final = Path(summary["final"])
    adapters = (final / loading.ADAPTER_CONFIG).is_file()  # what final/ holds decides how it loads
    lines = [
        f"# Florence-2 fine-tuned on {config.dataset}",
        "",
        f"- Base model: `{config.model}`",
        f"- Data: `{config.dataset}` (train split `{config.train_split}`, evaluated on `{config.eval_split}`)",
        task_line(run_dir, config.task_prompt),
        f"- Strategy: `{config.strategy}`",
        f"- Optimizer steps: {summary['steps']} (batch {config.batch_size} x accumulation {config.grad_accum}, "
        f"learning rate {summary.get('learning_rate')}, seed {config.seed})",
        *([f"- Weights in `final/`: the best checkpoint, step {summary['best_step']} "
           f"({config.metric_for_best_model or 'the task metric'} {_fmt(summary.get('best_metric'))})"]
          if summary.get("best_step") else []),
        "",
        "## Metrics (validation)",
        "",
        *metric_lines(summary),
        "",
        "Data counters (skipped or altered samples): "
        + (", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "none"),
        "",
        "## Load it",
        "",
        *(adapter_lines(run_dir, config.model, final) if adapters
          else model_lines(final, example_prompt(run_dir, config))),
        "",
        "Report: [report.html](report.html) — curves, metrics per question type, the worst predictions.",
        "",
        "Files: `config.yaml` (resolved settings), `metrics.jsonl` (every logged event), "
        f"`predictions.jsonl` (last evaluation), `final/` ({'LoRA adapters' if adapters else 'model'} + processor).",
        "",
    ]
    path = run_dir / "README.md"
    paths.write_atomic(path, front_matter(run_dir, config, summary) + "\n".join(lines))
    return path


# The hub's task type for each Florence-2 task a run can be evaluated on (model-index results).
HUB_TASKS = {tasks.VQA: "visual-question-answering", tasks.OD: "object-detection",
             tasks.GROUNDING: "object-detection", tasks.OCR: "image-to-text", tasks.CAPTION: "image-to-text"}


def evaluated_tasks(run_dir: Path) -> list[str]:
    """The tasks the run was evaluated on, as its prediction records name them."""
    return sorted({r["task"] for r in read_jsonl(Path(run_dir) / "predictions.jsonl") if r.get("task")})


def example_prompt(run_dir: Path, config) -> str:
    """A prompt of the run's own task for the card's examples: a question after the task prompt, or the token."""
    found = evaluated_tasks(run_dir)
    task = found[0] if found else tasks.VQA
    return f"{config.task_prompt}What is the total?" if task == tasks.VQA else tasks.prompt_for(task, "a stamp")


def front_matter(run_dir: Path, config, summary: dict[str, Any]) -> str:
    """The YAML block the hub reads: base model, library, pipeline, datasets, tags, results (model-index)."""
    meta: dict[str, Any] = {}
    if is_hub_id(config.model):
        meta["base_model"] = config.model
    meta.update({"library_name": "transformers", "pipeline_tag": "image-text-to-text"})
    hub_data = data.hub_datasets(config.dataset)
    if hub_data:
        meta["datasets"] = hub_data
    meta["tags"] = ["florence-2", "florence-tune", "vision-language"]
    after = summary.get("metrics_after") or {}
    if after:
        found = evaluated_tasks(run_dir)
        task = HUB_TASKS.get(found[0] if found else tasks.VQA, "image-text-to-text")
        dataset = {"name": config.dataset, "type": hub_data[0] if hub_data else config.dataset,
                   "split": config.eval_split}
        metrics = [{"type": name, "value": value, "name": LABELS.get(name, name)} for name, value in after.items()
                   if value is not None]
        meta["model-index"] = [{"name": Path(config.output_dir).name or "florence-2",
                                "results": [{"task": {"type": task}, "dataset": dataset, "metrics": metrics}]}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


def task_line(run_dir: Path, task_prompt: str) -> str:
    """The tasks the run was evaluated on, as its prediction records name them."""
    found = evaluated_tasks(run_dir)
    if found:
        return "- Task: " + ", ".join(f"`{task}`" for task in found)
    return f"- Task prompt: `{task_prompt}` (before questions; task data carries its own)"


def metric_lines(summary: dict[str, Any]) -> list[str]:
    """Before / after for each metric the run's tasks chose (ANLS, mAP, CER...), the eval loss, the baseline."""
    before, after = summary.get("metrics_before") or {}, summary.get("metrics_after") or {}
    rows = [(LABELS.get(name, name), before.get(name), after.get(name)) for name in dict.fromkeys([*before, *after])]
    losses = summary.get("eval_loss_before"), summary.get("eval_loss_after")
    if any(loss is not None for loss in losses):
        rows.append(("eval loss", *losses))
    if not rows:
        return ["The run was not evaluated (no evaluation split)."]
    lines = ["| | before fine-tuning | after fine-tuning |", "|---|---|---|",
             *(f"| {label} | {_fmt(b)} | {_fmt(a)} |" for label, b, a in rows)]
    sources_before, sources_after = summary.get("by_source_before") or {}, summary.get("by_source_after") or {}
    if sources_after:
        lines += ["", "| source | metric | questions | before fine-tuning | after fine-tuning |",
                  "|---|---|---|---|---|",
                  *(f"| {name} | {LABELS.get(v['metric'], v['metric'])} | {v['n']} | "
                    f"{_fmt((sources_before.get(name) or {}).get('score'))} | {_fmt(v['score'])} |"
                    for name, v in sources_after.items())]
    if summary.get("anls_blind_baseline") is not None:  # only question-answering runs have one
        lines += ["", "Image-blind baseline (the most frequent training answer per question type): "
                      f"ANLS {_fmt(summary['anls_blind_baseline'])}."]
    return lines


def model_lines(final: Path, example: str) -> list[str]:
    return [
        "```python",
        "from transformers import AutoProcessor, Florence2ForConditionalGeneration",
        f'model = Florence2ForConditionalGeneration.from_pretrained("{final}")',
        f'processor = AutoProcessor.from_pretrained("{final}")',
        "```",
        "",
        "or through a pipeline:",
        "",
        "```python",
        "from transformers import pipeline",
        f'answer = pipeline("image-text-to-text", model="{final}")',
        f'answer(images="page.png", text="{example}")',
        "```",
    ]


def adapter_lines(run_dir: Path, base: str, final: Path) -> list[str]:
    """final/ of a LoRA run holds only the adapters: the base model first, then peft puts them on it."""
    return [
        "`final/` holds LoRA adapters, not a whole model: load the base model, then the adapters with peft.",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoProcessor, Florence2ForConditionalGeneration",
        f'base = Florence2ForConditionalGeneration.from_pretrained("{loading.resolve_model_path(base)}")',
        f'model = PeftModel.from_pretrained(base, "{final}")',
        f'processor = AutoProcessor.from_pretrained("{final}")',
        "```",
        "",
        "Or fold the adapters in, for a folder that loads with `Florence2ForConditionalGeneration.from_pretrained` "
        f"alone (no peft): `florence-tune export --model {run_dir} --merge --output {run_dir}-merged`",
    ]

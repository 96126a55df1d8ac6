"""The run directory's README.md: what was trained, on what, how well, and how to load it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from florence_tune import paths


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("n/a" if value is None else str(value))


def write_model_card(run_dir: Path, config, summary: dict[str, Any]) -> Path:
    skipped = summary.get("data") or {}
    lines = [
        f"# Florence-2 fine-tuned on {config.dataset}",
        "",
        f"- Base model: `{config.model}`",
        f"- Data: `{config.dataset}` (train split `{config.train_split}`, evaluated on `{config.eval_split}`)",
        f"- Task prompt: `{config.task_prompt}`",
        f"- Strategy: `{config.strategy}`",
        f"- Optimizer steps: {summary['steps']} (batch {config.batch_size} x accumulation {config.grad_accum}, "
        f"learning rate {summary.get('learning_rate')}, seed {config.seed})",
        "",
        "## Metrics (validation)",
        "",
        "| | ANLS | exact match | eval loss |",
        "|---|---|---|---|",
        f"| before fine-tuning | {_fmt(summary.get('anls_before'))} | | {_fmt(summary.get('eval_loss_before'))} |",
        f"| after fine-tuning | {_fmt(summary.get('anls_after'))} | {_fmt(summary.get('exact_match_after'))} "
        f"| {_fmt(summary.get('eval_loss_after'))} |",
        f"| image-blind baseline (most frequent answer per question type) "
        f"| {_fmt(summary.get('anls_blind_baseline'))} | | |",
        "",
        "Data counters (skipped or altered samples): "
        + (", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "none"),
        "",
        "## Load it",
        "",
        "```python",
        "from transformers import AutoProcessor, Florence2ForConditionalGeneration",
        f'model = Florence2ForConditionalGeneration.from_pretrained("{summary["final"]}")',
        f'processor = AutoProcessor.from_pretrained("{summary["final"]}")',
        "```",
        "",
        "Report: [report.html](report.html) — curves, metrics per question type, the worst predictions.",
        "",
        "Files: `config.yaml` (resolved settings), `metrics.jsonl` (every logged event), "
        "`predictions.jsonl` (last evaluation), `final/` (model + processor).",
        "",
    ]
    path = run_dir / "README.md"
    paths.write_atomic(path, "\n".join(lines))
    return path

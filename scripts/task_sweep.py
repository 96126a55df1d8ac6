"""Fine-tune the tiny model on every built-in synthetic task and print each task's metric before and after.

    .venv/bin/python scripts/task_sweep.py                       # every task, 300 steps each (CPU: ~15 min)
    .venv/bin/python scripts/task_sweep.py --steps 50 region_to_category ocr_with_region
    .venv/bin/python scripts/task_sweep.py --json sweep.json     # also write the rows

The score is the first metric the task's evaluation reports (``task_metrics.DEFAULTS``): higher is better except
for error rates (CER, WER). Greedy decoding; targets up to 768 tokens are trained whole, and the tasks with long
answers (whole-page OCR, OCR with regions, extraction) may generate as many, so neither side cuts them (the
counts of cut answers are in each row).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import florence_tune  # noqa: E402
from florence_tune import tasks  # noqa: E402
from florence_tune.data.adapters.tasks import TASK_NAMES  # noqa: E402
from florence_tune.evaluation import task_metrics  # noqa: E402

LONG = 768  # tokens: the longest synthetic target (OCR with regions of a table page) is under 700
SHORT = 128
LONG_TASKS = {tasks.OCR, tasks.OCR_WITH_REGION, tasks.EXTRACTION}


def one_name_per_task() -> list[str]:
    """Each task once, under its own name (not the short aliases)."""
    seen, names = set(), []
    for name, task in TASK_NAMES.items():
        if task not in seen and name == task.strip("<>").lower():
            seen.add(task)
            names.append(name)
    return names


def last_evaluation(path: Path) -> dict:
    """The last logged generation evaluation of a run (its metrics.jsonl line with ``eval_n``)."""
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return next((event for event in reversed(events) if "eval_n" in event), {})


def sweep(name: str, steps: int, eval_samples: int, root: Path) -> dict:
    task = TASK_NAMES[name]
    metric = task_metrics.defaults_for(task)[0]
    started = time.perf_counter()
    summary = florence_tune.train(dataset=f"synthetic:{name}", output_dir=str(root / name), overwrite=True,
                                  max_steps=steps, max_eval_samples=eval_samples, num_beams=1,
                                  max_new_tokens=LONG if task in LONG_TASKS else SHORT, max_target_tokens=LONG,
                                  report_to="none")
    before, after = summary["metrics_before"].get(metric), summary["metrics_after"].get(metric)
    lower = metric in task_metrics.LOWER_IS_BETTER
    better = before is not None and after is not None and (after < before if lower else after > before)
    return {"task": task, "name": name, "metric": metric, "before": before, "after": after, "better": better,
            "steps": summary["steps"], "seconds": round(time.perf_counter() - started, 1),
            "truncated_answers": summary["data"].get("truncated_answers", 0),
            "cut_answers": last_evaluation(root / name / "metrics.jsonl").get("eval_cut_answers", 0),
            "kind": tasks.TASKS[task].answer}


def _number(value) -> str:
    return "—" if value is None else f"{value:.4f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="synthetic task names (default: every task)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-samples", type=int, default=24)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="task-sweep-") as folder:
        for name in args.names or one_name_per_task():
            rows.append(sweep(name, args.steps, args.eval_samples, Path(folder)))
            row = rows[-1]
            print(f"| {row['task']} | {row['metric']} | {_number(row['before'])} | {_number(row['after'])} | "
                  f"{'yes' if row['better'] else 'NO'} | {row['steps']} | {row['seconds']} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(row["better"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""A self-contained HTML report of a run: curves, metrics per group, the worst predictions.

    florence-tune report runs/demo                       # writes runs/demo/report.html
    florence-tune report runs/demo --group-by doc_id     # group by any metadata column
    florence-tune report --compare runs/a runs/b         # two runs side by side, deltas per group

Every number comes from the run's own files (metrics.jsonl, predictions.jsonl, summary.json,
config.yaml); plots and thumbnails are embedded as data URIs, so the file opens from disk with no
server and can be mailed around.
"""

from __future__ import annotations

import base64
import html
import io
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from florence_tune import data, paths, tasks
from florence_tune.errors import FlorenceTuneError, UsageError
from florence_tune.evaluation import metrics, task_metrics
from florence_tune.evaluation import records as prediction_records

GALLERY_SIZE = 12
THUMBNAIL = (320, 320)


# ---------------------------------------------------------------- reading the run directory

def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a run file; a damaged line (a kill cuts the last one short) is skipped with a note."""
    if not path.exists():
        return []
    found, damaged = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            value = json.loads(line) if line.strip() else None
        except ValueError:
            value, damaged = None, damaged + 1
        if isinstance(value, dict):
            found.append(value)
    if damaged:
        print(f"note: {path}: skipped {damaged} damaged line{'s' if damaged > 1 else ''}", file=sys.stderr)
    return found


def read_run(run_dir: Path) -> dict[str, Any]:
    if not (run_dir / "predictions.jsonl").exists() and not (run_dir / "metrics.jsonl").exists():
        raise UsageError(f"'{run_dir}' holds no predictions.jsonl or metrics.jsonl; pass a run directory")
    return {
        "dir": run_dir,
        "config": read_mapping(run_dir / "config.yaml", yaml.safe_load, "YAML"),
        "summary": read_mapping(run_dir / "summary.json", json.loads, "JSON"),
        "events": read_jsonl(run_dir / "metrics.jsonl"),
        "predictions": read_jsonl(run_dir / "predictions.jsonl"),
    }


def read_mapping(path: Path, parse, kind: str) -> dict[str, Any]:
    """A run file of names and values ({} when absent); one the run did not leave so (edited, cut) is one line."""
    if not path.exists():
        return {}
    try:
        value = parse(path.read_text(errors="replace"))
    except (ValueError, yaml.YAMLError):
        value, reason = None, f"not valid {kind}"
    else:
        reason = "empty" if value is None else f"a {type(value).__name__}, not names and values"
    if not isinstance(value, dict):
        raise UsageError(f"'{path}' is damaged ({reason}); restore it, or move it away to report without it")
    return value


# ---------------------------------------------------------------- numbers

def group_key(record: dict[str, Any], column: str | None) -> str:
    """The record's group: a named metadata column (absent or empty: 'unknown'), else the question type."""
    if column:
        value = record.get("meta", {}).get(column, record.get(column))
        return "unknown" if value is None else str(value)
    return str(record.get("group", "all"))


def columns(records: list[dict[str, Any]]) -> set[str]:
    """What --group-by can name: the metadata columns and the text fields of the records."""
    return {name for r in records for name in r.get("meta", {})} | {
        name for r in records for name, value in r.items() if isinstance(value, str)}


def check_column(records: list[dict[str, Any]], column: str | None) -> None:
    """A column no record has would put every question under 'unknown': refuse it, naming those there are."""
    if column and records and column not in columns(records):
        raise UsageError(f"--group-by '{column}': no prediction has that column; choose one of "
                         f"{', '.join(sorted(columns(records)))}")


def grouped_metrics(records: list[dict[str, Any]], column: str | None = None) -> dict[str, dict[str, float]]:
    return metrics.group_scores(records, key=lambda r: group_key(r, column))


def worst(records: list[dict[str, Any]], n: int = GALLERY_SIZE) -> list[dict[str, Any]]:
    """Lowest score first, each record by its own task's metric (``task_metrics.record_score``: a question by
    its source's metric, a page of boxes by its mAP@.5...); ties broken by question id so the gallery is stable."""
    return sorted(records, key=lambda r: (task_metrics.record_score(r), str(r.get("question_id"))))[:n]


def curves(events: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Per-metric (step, value) series from metrics.jsonl."""
    series: dict[str, list[tuple[int, float]]] = {}
    for event in events:
        for key in ("loss", "eval_loss", "eval_anls", "eval_exact_match", "before_anls", "before_loss"):
            if isinstance(event.get(key), int | float):
                series.setdefault(key, []).append((int(event["step"]), float(event[key])))
    return series


# ---------------------------------------------------------------- pictures

def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def plot(series: dict[str, list[tuple[int, float]]], keys: list[str], title: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    present = [k for k in keys if series.get(k)]
    if not present:
        return None
    figure, axis = plt.subplots(figsize=(6, 3.2))
    for key in present:
        steps, values = zip(*series[key], strict=True)
        axis.plot(steps, values, marker="o" if len(steps) < 30 else None, label=key)
    axis.set_xlabel("step")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    uri = _png(figure)
    plt.close(figure)
    return uri


def thumbnail(image, regions: dict[str, list] | None = None) -> str:
    """JPEG data URI of a page, with the record's predicted (red) and reference (green) regions drawn: boxes,
    polygons, text-line quads, and a region task's prompt box (blue)."""
    from PIL import ImageDraw

    page = image.convert("RGB").copy()
    if regions:
        draw = ImageDraw.Draw(page)
        width = max(2, page.width // 200)
        region = regions.get("region")
        if isinstance(region, list) and len(region) == 4:
            draw.rectangle(region, outline="#1565c0", width=width)
        for colour, side in (("#2e7d32", "reference"), ("#c62828", "predicted")):
            for x1, y1, x2, y2 in regions.get(f"{side}_boxes") or []:  # generated corners may come swapped
                draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=colour, width=width)
            outlines = [p for polygons in regions.get(f"{side}_polygons") or [] for p in polygons]
            for outline in [*outlines, *(regions.get(f"{side}_quads") or [])]:
                if len(outline) >= 6:
                    draw.polygon(list(zip(outline[0::2], outline[1::2], strict=False)), outline=colour, width=width)
    page.thumbnail(THUMBNAIL)
    buffer = io.BytesIO()
    page.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def gallery_images(records: list[dict[str, Any]], dataset) -> dict[int, str]:
    """Thumbnails of the given records' pages, looked up by dataset index (skipped rows get none)."""
    images = {}
    for record in records:
        index = record.get("index")
        if index is None or dataset is None:
            continue
        sample = dataset[index]
        if getattr(sample, "image", None) is not None:
            images[index] = thumbnail(sample.image, record)
    return images


# ---------------------------------------------------------------- HTML

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}
th{background:#f5f5f5} .num{text-align:right;font-variant-numeric:tabular-nums}
.plots img{max-width:49%} .gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:1rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.5rem;font-size:.9rem} .card img{max-width:100%}
.bad{color:#c62828} .good{color:#2e7d32} pre{background:#f7f7f7;padding:.6rem;overflow:auto}
"""


DASH = "—"  # what a cell without a value shows


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else _e(value if value is not None else DASH)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_num(c)}</td>' if isinstance(c, int | float) else f"<td>{_num(c)}</td>"
                         for c in row) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def task_section(records: list[dict[str, Any]]) -> str:
    """Each task's own metrics over its records (a VQA set: ANLS and exact match; <OD>: mAP...)."""
    found = task_metrics.metrics_by_task(records)
    names = list(dict.fromkeys(name for values in found.values() for name in values if name != "n"))
    rows = [[task, values["n"], *(values.get(name) for name in names)] for task, values in found.items()]
    return table(["task", "n", *names], rows)


def source_section(records: list[dict[str, Any]]) -> str:
    """Each question's source judged by its own metric (ChartQA: relaxed accuracy...), and all of them."""
    scored = prediction_records.by_source(records)
    if not scored:
        return ""
    rows = [[name, v["metric"], v["n"], v["score"]] for name, v in scored["by_source"].items()]
    rows.append(["(all questions)", "", sum(v["n"] for v in scored["by_source"].values()), scored["source_score"]])
    return "<h2>Questions by source, each by its own metric</h2>" + table(["source", "metric", "n", "score"], rows)


def overview(run: dict[str, Any]) -> str:
    s = run["summary"]
    overall = metrics.score_predictions(run["predictions"]) if run["predictions"] else {}
    rows = [
        ["ANLS (predictions.jsonl)", overall.get("anls")],
        ["exact match (predictions.jsonl)", overall.get("exact_match")],
        ["questions scored", overall.get("n")],
    ]
    rows += [[label, s[key]] for label, key in (
        ("ANLS before fine-tuning", "anls_before"), ("ANLS after fine-tuning", "anls_after"),
        ("image-blind baseline ANLS", "anls_blind_baseline"), ("optimizer steps", "steps"),
        ("training samples / s", "train_samples_per_second"), ("peak memory (MiB)", "peak_memory_mib"),
    ) if s.get(key) is not None]
    before, after = s.get("metrics_before") or {}, s.get("metrics_after") or {}
    rows += [[f"{name} before → after fine-tuning", f"{_num(before.get(name))} → {_num(after.get(name))}"]
             for name in dict.fromkeys([*before, *after]) if name not in ("anls", "exact_match")]
    return table(["", "value"], rows)


def group_section(records: list[dict[str, Any]], column: str | None) -> str:
    groups = grouped_metrics(records, column)
    rows = [[name, v["n"], v["anls"], v["exact_match"]] for name, v in sorted(groups.items())]
    return table([column or "group", "n", "ANLS", "exact match"], rows)


def _first_metric(record: dict[str, Any]) -> str:
    return task_metrics.defaults_for(record.get("task") or tasks.VQA)[0]


def gallery_section(records: list[dict[str, Any]], images: dict[int, str]) -> str:
    cards = []
    for r in records:
        picture = f'<img src="{images[r["index"]]}" alt="page">' if r.get("index") in images else ""
        cards.append(
            f'<div class="card">{picture}<div><b>Q:</b> {_e(r.get("question", ""))}</div>'
            f'<div class="bad"><b>predicted:</b> {_e(r.get("prediction", ""))}</div>'
            f'<div class="good"><b>references:</b> {_e(" | ".join(map(str, r.get("references", []))))}</div>'
            f'<div>{_e(r.get("metric") or _first_metric(r))} {_num(abs(task_metrics.record_score(r)))} · '
            f'{_e(r.get("group", ""))} · id {_e(r.get("question_id"))}</div></div>')
    return f'<div class="gallery">{"".join(cards)}</div>'


def render(run: dict[str, Any], *, column: str | None, images: dict[int, str]) -> str:
    series = curves(run["events"])
    plots = [plot(series, ["loss", "eval_loss"], "loss"),
             plot(series, ["eval_anls", "eval_exact_match"], "evaluation metrics")]
    counts = run["summary"].get("data") or {}
    config = yaml.safe_dump(run["config"], sort_keys=False) if run["config"] else "(no config.yaml)"
    parts = [
        f"<h1>florence-tune report</h1><p>{_e(run['dir'])}</p>",
        "<h2>Overview</h2>", overview(run),
        "<h2>Curves</h2>", '<div class="plots">' + "".join(f'<img src="{p}" alt="plot">' for p in plots if p)
        + ("" if any(plots) else "<p>No logged events.</p>") + "</div>",
        "<h2>Metrics by task</h2>", task_section(run["predictions"]),
        source_section(run["predictions"]),
        f"<h2>Metrics by {_e(column or 'question type')}</h2>", group_section(run["predictions"], column),
        f"<h2>The {GALLERY_SIZE} worst predictions</h2>", gallery_section(worst(run["predictions"]), images),
        "<h2>Data</h2>", table(["counter", "count"], sorted(counts.items())) if counts
        else "<p>No samples skipped or altered.</p>",
        "<h2>Resolved config</h2>", f"<pre>{_e(config)}</pre>",
    ]
    return f"<!doctype html><html><head><meta charset='utf-8'><title>florence-tune report</title>" \
           f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"


def write_report(run_dir: str | Path, *, dataset=None, column: str | None = None,
                 output: str | Path | None = None) -> Path:
    """Write ``report.html`` for a run (``dataset`` supplies page images for the gallery)."""
    run = read_run(Path(run_dir))
    check_column(run["predictions"], column)
    if dataset is None:
        dataset = _dataset_from_config(run["config"])
    return _write(run, dataset, column, Path(output) if output else Path(run_dir) / "report.html")


def write_evaluation_report(records: list[dict[str, Any]], summary: dict[str, Any], config: dict[str, Any],
                            dataset, output: str | Path, column: str | None = None) -> Path:
    """The same report for a standalone ``evaluate`` (no training curves)."""
    run = {"dir": Path(output).parent, "config": config, "summary": summary, "events": [], "predictions": records}
    return _write(run, dataset, column, Path(output))


def _write(run: dict[str, Any], dataset, column: str | None, path: Path) -> Path:
    images = gallery_images(worst(run["predictions"]), dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    paths.write_atomic(path, render(run, column=column, images=images))
    return path


def _dataset_from_config(config: dict[str, Any]):
    """Re-open the evaluation split named in config.yaml to draw the gallery pages (None if it fails)."""
    spec, split = config.get("dataset"), config.get("eval_split") or config.get("split")
    if not spec or not split or split == "none" or config.get("streaming"):
        return None  # a streamed split has no index to find pages by, and reading it again may mean downloading it
    import dataclasses


    saved = {f.name: config[f.name] for f in dataclasses.fields(data.DataOptions)
             if config.get(f.name) is not None and f.name not in ("limit", "shuffle")}
    try:
        return data.load(spec, split, data.DataOptions(**saved, limit=config.get("max_eval_samples") or 0))
    except FlorenceTuneError:
        return None  # the report still renders, without thumbnails


# ---------------------------------------------------------------- comparing two runs

def write_comparison(run_a: str | Path, run_b: str | Path, output: str | Path, column: str | None = None) -> Path:
    a, b = read_run(Path(run_a)), read_run(Path(run_b))
    check_column(a["predictions"] + b["predictions"], column)
    groups_a, groups_b = grouped_metrics(a["predictions"], column), grouped_metrics(b["predictions"], column)
    rows = []
    for name in sorted(set(groups_a) | set(groups_b)):
        anls_a = groups_a.get(name, {}).get("anls")
        anls_b = groups_b.get(name, {}).get("anls")
        delta = anls_b - anls_a if anls_a is not None and anls_b is not None else None
        rows.append([name, anls_a, anls_b, delta])
    overall_a, overall_b = metrics.score_predictions(a["predictions"]), metrics.score_predictions(b["predictions"])
    rows.append(["(all)", overall_a["anls"], overall_b["anls"], overall_b["anls"] - overall_a["anls"]])
    body = (f"<h1>florence-tune comparison</h1><p>A = {_e(run_a)}<br>B = {_e(run_b)}</p>"
            f"<h2>ANLS by {_e(column or 'question type')}</h2>"
            + table(["group", "A", "B", "B − A"], rows))
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    paths.write_atomic(path, f"<!doctype html><html><head><meta charset='utf-8'><title>comparison</title>"
                             f"<style>{STYLE}</style></head><body>{body}</body></html>")
    return path

"""Fixture data in the exact hub schemas, written to local folders that the real loaders read.

``write_hub_copy`` lays parquet files out like the hub repositories (``data/train-*.parquet`` for
DocVQA, one folder per configuration for the Cauldron) with the README ``configs:`` block, so
``datasets.load_dataset(folder, config, ...)`` takes the same path it takes for a hub id.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
from PIL import Image

TEXT = datasets.Value("string")
# HuggingFaceM4/DocumentVQA's features, as its card declares them.
DOCVQA_FEATURES = datasets.Features({
    "questionId": datasets.Value("int32"), "question": TEXT, "question_types": datasets.List(TEXT),
    "image": datasets.Image(), "docId": datasets.Value("int32"), "ucsf_document_id": TEXT,
    "ucsf_document_page_no": TEXT, "answers": datasets.List(TEXT),
})
# HuggingFaceM4/the_cauldron's (and Docmatix's) features.
CAULDRON_FEATURES = datasets.Features({
    "images": datasets.List(datasets.Image()),
    "texts": datasets.List({"user": TEXT, "assistant": TEXT, "source": TEXT}),
})
SPLIT_NUMBERS = {"train": 1, "validation": 2, "test": 3}


def png(colour=(200, 30, 30), size=(48, 32), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def image_value(index: int, size=(48, 32)) -> dict:
    return {"bytes": png((index * 37 % 256, 90, 160), size), "path": None}


def docvqa_rows(split: str, count: int) -> list[dict]:
    """Rows as the hub has them; the test split withholds answers and question types."""
    answered = split != "test"
    return [{
        "questionId": SPLIT_NUMBERS[split] * 1000 + i,
        "question": f"what is written in box {i}",
        "question_types": ["form"] if answered else None,
        "image": image_value(i),
        "docId": i // 2,
        "ucsf_document_id": f"doc{i // 2}",
        "ucsf_document_page_no": "1",
        "answers": [f"value {i}", f"val {i}"] if answered else [],
    } for i in range(count)]


def turns_of(index: int) -> int:
    return index % 3 + 1


def images_of(index: int) -> int:
    return 2 if index % 4 == 3 else 1


def cauldron_rows(config: str, count: int) -> list[dict]:
    """Multi-turn rows (1-3 turns), every fourth with two images."""
    return [{
        "images": [image_value(i * 10 + k, size=(40 + 8 * k, 30)) for k in range(images_of(i))],
        "texts": [{"user": f"{config} question {i}.{t}", "assistant": f"{config} answer {i}.{t}", "source": config}
                  for t in range(turns_of(i))],
    } for i in range(count)]


def write_hub_copy(root: Path, features: datasets.Features, tables: dict[str, dict[str, list[dict]]],
                   files: int = 1) -> Path:
    """``tables``: configuration → split → rows; 'default' is stored under data/ as DocVQA does."""
    card = ["---", "configs:"]
    for config, splits in tables.items():
        folder = "data" if config == "default" else config
        card += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            dataset = datasets.Dataset.from_list(rows, features=features)
            (root / folder).mkdir(parents=True, exist_ok=True)
            for k in range(files):
                part = dataset.shard(files, k, contiguous=True)
                part.to_parquet(str(root / folder / f"{split}-{k:05d}-of-{files:05d}.parquet"))
            card += [f"  - split: {split}", f"    path: {folder}/{split}-*"]
    (root / "README.md").write_text("\n".join([*card, "---", ""]))
    return root


def write_jsonl(path: Path, lines: list) -> Path:
    """Objects become JSON; strings are written as they are (to plant broken lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n"
                            for line in lines), encoding="utf-8")
    return path

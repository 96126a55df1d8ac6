"""Shared fixtures: offline hub, a private cache for built-in assets, the tiny model built once."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "data"))  # builders.py: hub-schema fixtures, for every test folder
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Built-in assets and the datasets cache live in a per-session folder (clean-build path tested)."""
    root = tmp_path_factory.mktemp("florence_tune_cache")
    os.environ["FLORENCE_TUNE_CACHE"] = str(root)
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf_datasets")
    import datasets.config

    datasets.config.HF_DATASETS_CACHE = root / "hf_datasets"
    return root


@pytest.fixture(scope="session")
def tiny():
    """(model, processor) of the embedded tiny Florence-2, loaded through loading.load."""
    from florence_tune.model import loading

    return loading.load("tiny")


@pytest.fixture()
def fresh_tiny():
    """A model the test may modify."""
    from florence_tune.model import loading

    return loading.load("tiny")


@pytest.fixture(scope="session")
def page_image():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (300, 400), (235, 150, 150))
    ImageDraw.Draw(image).text((20, 20), "TOTAL $12.50", fill=(0, 0, 0))
    return image

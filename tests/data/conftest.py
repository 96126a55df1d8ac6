"""Hub-schema copies of DocVQA, the Cauldron and Docmatix, built once, and the registry pointed at them."""

import dataclasses

import builders  # noqa: E402
import pytest

DOCVQA_SIZES = {"train": 12, "validation": 6, "test": 4}
CAULDRON_SIZES = {"ai2d": 9, "chartqa": 7}


@pytest.fixture(scope="session")
def hub_copies(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    docvqa = builders.write_hub_copy(
        root / "DocumentVQA", builders.DOCVQA_FEATURES,
        {"default": {split: builders.docvqa_rows(split, n) for split, n in DOCVQA_SIZES.items()}}, files=4)
    cauldron = builders.write_hub_copy(
        root / "the_cauldron", builders.CAULDRON_FEATURES,
        {config: {"train": builders.cauldron_rows(config, n)} for config, n in CAULDRON_SIZES.items()})
    docmatix = builders.write_hub_copy(
        root / "Docmatix", builders.CAULDRON_FEATURES, {"images": {"train": builders.cauldron_rows("docmatix", 6)}})
    return {"docvqa": docvqa, "cauldron": cauldron, "docmatix": docmatix}


@pytest.fixture()
def hub(monkeypatch, hub_copies):
    """The built-in names read the local copies, through the same load_dataset calls as the hub ids."""
    from florence_tune.data import sources

    for name, folder in hub_copies.items():
        source = sources.REGISTRY[name]
        configs = tuple(CAULDRON_SIZES) if name == "cauldron" else source.configs
        monkeypatch.setitem(sources.REGISTRY, name,
                            dataclasses.replace(source, location=lambda f=folder: str(f), configs=configs))
    return hub_copies

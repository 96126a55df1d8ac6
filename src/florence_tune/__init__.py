"""florence-tune: fine-tune Florence-2 on document question answering and your own images.

    import florence_tune
    florence_tune.train(dataset=rows, max_steps=100, output_dir="runs/mine")
    florence_tune.load("runs/mine").ask("page.png", "What is the total?")

``train``, ``evaluate``, ``load`` and ``Model`` live in ``florence_tune.api`` and are imported on first use,
so ``import florence_tune`` (and the command line's ``--help``) loads neither torch nor transformers.
"""

__version__ = "0.1.0"
__all__ = ["Model", "__version__", "evaluate", "load", "train"]
_API = frozenset({"Model", "evaluate", "load", "train"})


def __getattr__(name: str):
    # The package's face hands out the API (the top layer) on first use; tests/test_layout.py allows this one
    # lazy import from the bottom layer, and only here.
    if name in _API:
        from florence_tune import api

        return getattr(api, name)
    raise AttributeError(f"module 'florence_tune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})

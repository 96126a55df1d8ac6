"""The original single-GPU command, kept working: ``python train.py``.

Runs the DocVQA experiment of the blog post the original scripts accompany: Florence-2-base-ft (its
native checkpoint), the vision tower frozen, 7 epochs, learning rate 1e-6, batch 6, ``<DocVQA>`` before
each question as it is. Any ``florence-tune train`` flag can be added and overrides these, e.g.
``python train.py --dataset ./docvqa_local --output-dir runs/docvqa``; ``--strategy full`` is what the
blog notebook's code actually trained (see the README's table of differences from the original scripts).
Without network access it stops at once and says how to use a local copy or the embedded demo.
"""

import sys
from pathlib import Path

SEED_SETTINGS = [
    "--model", "florence-community/Florence-2-base-ft",
    "--strategy", "freeze-vision",
    "--dataset", "docvqa",
    "--task-prompt", "<DocVQA>",
    "--epochs", "7",
    "--lr", "1e-6",
    "--batch-size", "6",
    "--output-dir", "runs/train_py",
]


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
    try:
        from florence_tune.cli import main as cli_main
    except ImportError:  # running from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
        from florence_tune.cli import main as cli_main
    return cli_main(["train", *SEED_SETTINGS, *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

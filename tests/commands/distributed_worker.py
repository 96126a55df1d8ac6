"""Started by tests under torchrun: the real ``florence-tune train`` on real processes, each rank's weights dumped.

    torchrun --nproc-per-node 2 tests/commands/distributed_worker.py OUT_DIR '{"max_steps": 4, ...}'

The settings are turned into the command's own flags and ``cli.main`` runs the command as a user would;
the only addition is a dump of every rank's weights once training ends (only rank 0 writes the run).
"""

import json
import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from florence_tune import cli, distributed
from florence_tune.training.trainer import FlorenceTrainer


def flags(settings: dict) -> list[str]:
    argv = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag, str(value)]
    return argv


def main(out_dir: str, settings: str) -> int:
    out = Path(out_dir)
    real_train = FlorenceTrainer.train

    def train_and_dump(self, *args, **kwargs):
        (out / f"pid-rank{distributed.rank()}").write_text(str(os.getpid()))
        result = real_train(self, *args, **kwargs)
        weights = {name: t.detach().contiguous().clone() for name, t in self.model.state_dict().items()}
        save_file(weights, str(out / f"weights-rank{distributed.rank()}.safetensors"))
        return result

    FlorenceTrainer.train = train_and_dump
    given = {"eval_split": "none", "output_dir": str(out / "run"), "report_to": "none", **json.loads(settings)}
    return cli.main(["train", *flags(given)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

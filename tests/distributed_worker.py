"""Started by tests under torchrun: train the tiny model on real processes and dump each rank's weights.

    torchrun --nproc-per-node 2 tests/distributed_worker.py OUT_DIR '{"max_steps": 4, ...}'
"""

import json
import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from florence_tune import distributed
from florence_tune.config import TrainConfig
from florence_tune.model import loading
from florence_tune.training.trainer import build_trainer, load_splits


def main(out_dir: str, settings: str) -> None:
    out = Path(out_dir)
    config = TrainConfig(**{"eval_split": "none", "output_dir": str(out / "run"), **json.loads(settings)})
    distributed.init()
    (out / f"pid-rank{distributed.rank()}").write_text(str(os.getpid()))
    with distributed.main_process_first():
        train_data, _ = load_splits(config)
        model, processor = loading.load(config.model)
    (out / "run").mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(model, processor, train_data, None, config, out / "run")
    trainer.train()
    weights = {name: t.detach().contiguous().clone() for name, t in trainer.model.state_dict().items()}
    save_file(weights, str(out / f"weights-rank{distributed.rank()}.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

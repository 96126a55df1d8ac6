"""The original multi-GPU command, now on PyTorch's own launcher (torchrun).

    python distributed_train.py --dataset docvqa --epochs 10 --eval-steps 1000

uses every visible GPU (one process each, NCCL). On a CPU machine ``--nproc N`` runs N gloo
processes. Across machines, run the same command on each node with ``--nnodes M --node-rank R
--rdzv-endpoint HOST:PORT``. The original flags keep their meaning (``--batch-size``,
``--use-lora``, ``--lr``, ``--run-name``, ``--max-val-item-count``) and every ``florence-tune
train`` option is accepted too, e.g.

    python distributed_train.py --dataset synthetic --model tiny --epochs 1 --nproc 2

By default it trains what the original script trained: Florence-2-large-ft (its native checkpoint),
``<VQA>`` before each question, cased as the original cased them (``--clean-questions``).
``--use-lora`` is the original LoRA recipe (r 8, alpha 8, dropout 0.05, rsLoRA, gaussian init) on the
modules of the original's target list that exist in Florence-2. ``--dataset vqainstruct`` is what the
original meant by it: Docmatix, single-page rows. The README's table lists every deliberate
difference from the original scripts.

This file only translates flags; ``torch.distributed.run`` (torchrun) starts, watches and stops the
processes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Any other option is passed to 'florence-tune train' (see its --help). "
                                            "How this differs from the original scripts, and why: the README's "
                                            "'Differences from the original scripts'.")
    original = parser.add_argument_group("original options")
    original.add_argument("--dataset", default="docvqa",
                          help="docvqa, cauldron, vqainstruct (Docmatix single pages), or any florence-tune spec.")
    original.add_argument("--epochs", type=float, default=10, help="Number of epochs (default 10).")
    original.add_argument("--eval-steps", type=int, default=10000, help="Evaluate every N steps (default 10000).")
    original.add_argument("--batch-size", type=int, default=6, help="Samples per GPU per step (default 6).")
    original.add_argument("--lr", type=float, default=None,
                          help="Learning rate (default 1e-6 for the default Florence-2 base; "
                               "florence-tune's own default when --model is given).")
    original.add_argument("--use-lora", action="store_true",
                          help="Train LoRA adapters (the original recipe) instead of all weights.")
    original.add_argument("--run-name", default=None, help="Run name; output goes to runs/<run-name>.")
    original.add_argument("--max-val-item-count", type=int, default=1000,
                          help="Evaluate on at most this many validation samples (default 1000).")
    launch = parser.add_argument_group("launcher options (torchrun)")
    launch.add_argument("--nproc", type=int, default=None,
                        help="Processes on this machine (default: one per visible GPU, or 1 on CPU).")
    launch.add_argument("--nnodes", default="1", help="Number of machines (or MIN:MAX for elastic runs).")
    launch.add_argument("--node-rank", type=int, default=None, help="This machine's rank (static rendezvous).")
    launch.add_argument("--rdzv-endpoint", default=None, help="HOST:PORT every node can reach (multi-node).")
    launch.add_argument("--rdzv-timeout", type=int, default=300,
                        help="Seconds to wait for all nodes to join before giving up (default 300).")
    return parser.parse_known_args(argv)


# The original script's LoRA settings. Of its target names (q_proj, o_proj, k_proj, v_proj, linear, Conv2d,
# lm_head, fc2) only these name modules of Florence-2, in its original layout and in transformers' alike.
ORIGINAL_LORA = ["--strategy", "lora", "--lora-rank", "8", "--lora-alpha", "8", "--lora-dropout", "0.05",
                 "--use-rslora", "--lora-init", "gaussian", "--lora-targets", "q_proj,k_proj,v_proj,fc2,lm_head"]
# The original's vqainstruct: Docmatix's single-image rows.
VQAINSTRUCT = ["--dataset", "docmatix", "--multi-image", "skip"]


def train_arguments(args: argparse.Namespace, passthrough: list[str]) -> list[str]:
    """The ``florence-tune train`` command line the original flags stand for."""
    train = ["--model", "florence-community/Florence-2-large-ft", "--task-prompt", "<VQA>", "--clean-questions",
             "--dataset", args.dataset, "--epochs", str(args.epochs), "--eval-steps", str(args.eval_steps),
             "--batch-size", str(args.batch_size), "--max-eval-samples", str(args.max_val_item_count),
             "--output-dir", f"runs/{args.run_name or 'distributed'}"]
    if args.dataset == "vqainstruct":
        print("distributed_train.py: --dataset vqainstruct is read as Docmatix's single-page rows "
              "(--dataset docmatix --multi-image skip)", file=sys.stderr)
        train += VQAINSTRUCT
    if args.lr is not None:
        train += ["--lr", str(args.lr)]
    elif "--model" not in passthrough:
        train += ["--lr", "1e-6"]  # the original script's rate for its model
    if args.use_lora:
        train += ORIGINAL_LORA
    return train + passthrough  # later flags win, so the user's own options override the defaults


def launcher_arguments(args: argparse.Namespace) -> list[str]:
    nproc = args.nproc if args.nproc is not None else _visible_gpus() or 1
    launch = ["--nproc-per-node", str(nproc), "--nnodes", str(args.nnodes), "--max-restarts", "0"]
    if args.rdzv_endpoint:
        launch += ["--rdzv-backend", "c10d", "--rdzv-endpoint", args.rdzv_endpoint,
                   "--rdzv-conf", f"join_timeout={args.rdzv_timeout}"]
        if args.node_rank is not None:
            launch += ["--node-rank", str(args.node_rank)]
    elif args.nnodes != "1":
        sys.exit("distributed_train.py: error: --nnodes above 1 needs --rdzv-endpoint HOST:PORT")
    else:
        launch += ["--standalone"]  # picks a free local port: no hard-coded rendezvous address
    return launch


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def main(argv: list[str]) -> int:
    args, passthrough = parse(argv)
    torchrun_args = [*launcher_arguments(args), "-m", "florence_tune", "train", *train_arguments(args, passthrough)]
    if os.environ.get("FLORENCE_TUNE_PRINT_LAUNCH"):
        print("torchrun " + " ".join(torchrun_args))
        return 0
    # torchrun's own entry point, in this process: its agent starts, watches and stops the workers.
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousTimeoutError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(torchrun_args)
    except SignalException as exc:  # the agent passed the signal on; the workers checkpointed and stopped
        again = " ".join(shlex.quote(a) for a in ["python", "distributed_train.py", *argv]
                         + ([] if "--resume" in argv else ["--resume"]))
        print(f"distributed_train.py: stopped: {signal.Signals(exc.sigval).name} received; the workers saved a "
              f"checkpoint after their current step; continue with: {again}", file=sys.stderr)
        return 75
    except RendezvousTimeoutError:
        print(f"distributed_train.py: error: not all {args.nnodes} nodes joined the rendezvous at "
              f"{args.rdzv_endpoint} within {args.rdzv_timeout}s; start this command on every node and check "
              "that the address is reachable and the port open", file=sys.stderr)
        return 1
    except ChildFailedError:
        return 1  # torchrun has already printed which rank failed and why
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

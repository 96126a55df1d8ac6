"""Rank helpers: one code path for 1 process, N processes and N nodes.

Distribution is a property of the environment, not of the code: under ``torchrun`` (or
``accelerate launch``) the launcher sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``, and
``init()`` joins the process group (nccl on GPU, gloo on CPU) through accelerate, the same state
``transformers.Trainer`` uses. Run as a plain process, every helper degrades to a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


def launched() -> bool:
    """True when a launcher asked for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init():
    """Join the process group if launched by torchrun/accelerate; returns accelerate's PartialState."""
    import torch
    from accelerate import PartialState

    # Without cpu=True accelerate treats a CPU-only torchrun job as one process (DistributedType.NO) and
    # every rank would train alone on all the data.
    return PartialState(cpu=not torch.cuda.is_available())


def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    if _group_ready():
        import torch.distributed as dist

        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    if _group_ready():
        import torch.distributed as dist

        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if _group_ready():
        import torch.distributed as dist

        dist.barrier()


def shutdown() -> None:
    """Leave the process group together: a rank that exits while gloo's threads still run aborts with
    "terminate called without an active exception" (seen on the 2-rank evaluate test)."""
    if _group_ready():
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (builds caches, downloads); the others follow from its results."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def shard(n_items: int) -> range:
    """This rank's share of ``n_items`` indices: strided, disjoint, no padding (every item exactly once).

    ``DistributedSampler`` pads the last round with repeated items so every rank gets the same count;
    for evaluation that would count some questions twice, so we split by hand.
    """
    return range(rank(), n_items, world_size())


def gather(items: list[Any]) -> list[Any]:
    """Concatenate every rank's list, in rank order (all ranks receive the result)."""
    if not _group_ready() or world_size() == 1:
        return list(items)
    import torch.distributed as dist

    gathered: list[list[Any] | None] = [None] * world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in (part or [])]


def sum_counts(counts: dict[str, int]) -> dict[str, int]:
    """Counters added up over every rank (each counts only the samples it saw)."""
    total: dict[str, int] = {}
    for part in gather([dict(counts)]):
        for name, count in part.items():
            total[name] = total.get(name, 0) + count
    return total


def device():
    """The device this rank computes on (its local GPU under torchrun, else the CPU)."""
    return init().device

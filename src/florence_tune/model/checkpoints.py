"""Checkpoint folders of a run directory: which are complete, which is newest, how one is published.

A checkpoint is written under a temporary name (``tmp-checkpoint-<step>/``), gets a ``COMPLETE``
marker once every file is on disk, and only then is renamed to ``checkpoint-<step>/``. A crash at any
moment therefore leaves either the previous checkpoints untouched or a temporary folder that nothing
loads. Standard library only, so ``modeling`` can use it without importing torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

MARKER = "COMPLETE"
TEMP_PREFIX = "tmp-"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def step_of(folder: Path) -> int | None:
    """The step number in ``checkpoint-<step>``, or None for any other name."""
    match = _CHECKPOINT.match(Path(folder).name)
    return int(match.group(1)) if match else None


def is_complete(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete ``checkpoint-<step>`` folders, oldest step first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and step_of(p) is not None and is_complete(p)]
    return sorted(found, key=step_of)


def newest_complete(run_dir: Path) -> Path | None:
    checkpoints = complete_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def staging_root(run_dir: Path, step: int) -> Path:
    """Where a checkpoint is assembled before it becomes visible as ``checkpoint-<step>``."""
    return Path(run_dir) / f"{TEMP_PREFIX}checkpoint-{step}"


def publish(staged: Path, run_dir: Path, step: int) -> Path:
    """Mark ``staged`` complete and rename it to ``run_dir/checkpoint-<step>`` in one atomic step."""
    staged, target = Path(staged), Path(run_dir) / f"checkpoint-{step}"
    files = sorted(p.name for p in staged.iterdir())
    _write_synced(staged / MARKER, json.dumps({"step": step, "files": files}) + "\n")
    _sync_tree(staged)
    if target.exists():
        # Resuming from an older checkpoint can meet a folder of the same step from the abandoned
        # future; rename() cannot replace a non-empty folder, so move it aside first.
        stale = Path(run_dir) / f"{TEMP_PREFIX}stale-{target.name}"
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(target, stale)
        os.replace(staged, target)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(staged, target)
    _sync_dir(Path(run_dir))
    return target


def rotate(run_dir: Path, keep: int, newest: Path, keep_also: Path | None = None) -> list[Path]:
    """Keep at most ``keep`` complete checkpoints (0: all); ``newest``, the one just published, always stays, and
    so does ``keep_also`` (the best checkpoint, when the run picks one), on top of the count.

    Checkpoints of a later step than ``newest`` are deleted too: they exist only when the run was
    resumed from an older checkpoint, belong to the abandoned continuation, and would otherwise be
    what ``--resume auto`` picks next time.
    """
    step = step_of(newest)
    spared = step_of(keep_also) if keep_also is not None else None
    others = [p for p in complete_checkpoints(run_dir) if step_of(p) not in (step, spared)]
    abandoned = [p for p in others if step_of(p) > step]
    older = [p for p in others if step_of(p) < step]
    doomed = abandoned + (older[: max(0, len(older) + 1 - keep)] if keep > 0 else [])
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return doomed


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete temporary folders that an interrupted save left behind (never loadable, never needed)."""
    run_dir = Path(run_dir)
    leftovers = [p for p in run_dir.glob(f"{TEMP_PREFIX}*") if p.is_dir()] if run_dir.is_dir() else []
    for folder in leftovers:
        shutil.rmtree(folder, ignore_errors=True)
    return leftovers


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_tree(folder: Path) -> None:
    """Flush every file to disk so the rename never publishes data still in the page cache (power loss)."""
    for root, _, names in os.walk(folder):
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_dir(Path(root))


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

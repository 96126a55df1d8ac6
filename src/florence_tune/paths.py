"""What the commands may delete or overwrite: only their own outputs, never the user's files.

``--overwrite`` removes a folder only when it is recognisably a florence-tune run (its ``config.yaml``
and nothing but the files a run writes), and never the working directory, a home folder, the file
system root or a folder that holds one of the command's inputs (its dataset, its model). No output
file is one of the inputs, nor lands inside a dataset folder (a folder source reads every JSON-lines
file below it). Every check here reads names only and runs before any model or data is loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from florence_tune.errors import UsageError

# Everything a training run writes into its folder (README.md is the model card).
LOCK_FILE = "run.lock"
DATA_FILE = "data.json"  # what the run's local data was: its files, sizes and modification times
MAX_STAMPED_FILES = 200_000
RUN_FILES = frozenset({"config.yaml", "final", "metrics.jsonl", "predictions.jsonl", "summary.json", "README.md",
                       "report.html", "tensorboard", LOCK_FILE, DATA_FILE})
# Checkpoints, and what an interrupted atomic write leaves (staged final/, ``.name.tmp-PID`` files).
_RUN_FOLDERS = re.compile(r"^(tmp-)?(stale-)?checkpoint-\d+$|^tmp-final$|^\.final\.old$|^\..+\.tmp-\d+$"
                          r"|^metrics\.jsonl\.tmp$")


def cache_root() -> Path:
    """Where built-in assets (tiny model, synthetic data, page caches) are materialised."""
    env = os.environ.get("FLORENCE_TUNE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "florence_tune"


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` through a temporary file renamed over ``path``: a reader, a crash or a full disk sees
    the old content or the new one, never half of it (the temporary file is removed on failure)."""
    path = Path(path)
    staged = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        staged.write_text(text)
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return path


def resolved(path: str | Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def resolve_spec(spec: str) -> str:
    """``spec`` with its local paths made absolute (hub ids, names, configurations and weights kept), so a
    run's config.yaml names the same data and model from any working directory."""
    if not spec:
        return spec
    if Path(spec).expanduser().exists():
        return str(resolved(spec))
    pieces = []
    for piece in spec.split(","):
        base, rest = re.match(r"([^:=]*)(.*)", piece).groups()
        pieces.append(str(resolved(base)) + rest if base.strip() and Path(base).expanduser().exists() else piece)
    return ",".join(pieces)


def data_stamps(inputs: Iterable[Path]) -> dict[str, str]:
    """``path: "size:mtime_ns"`` of the local data a spec names: a file, or a folder's files (at most
    MAX_STAMPED_FILES; runs and hidden folders inside it left out: they change while a run trains)."""
    stamps: dict[str, str] = {}
    for source in inputs:
        for file in ([source] if source.is_file() else _files_of(source)):
            if len(stamps) >= MAX_STAMPED_FILES:
                return stamps
            with contextlib.suppress(OSError):
                stat = file.stat()
                stamps[str(file)] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return stamps


def _files_of(folder: Path) -> Iterator[Path]:
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith(".")  # caches, .git
                            and run_state(Path(root) / f) in ("empty", "other"))
        yield from (Path(root) / name for name in sorted(files) if not name.startswith("."))


def changed_data(saved: dict[str, str], now: dict[str, str]) -> list[str]:
    """What differs between two ``data_stamps``: 'x changed', 'y added', 'z removed'."""
    found = [f"{p} changed" for p in saved if p in now and now[p] != saved[p]]
    found += [f"{p} added" for p in now if p not in saved] + [f"{p} removed" for p in saved if p not in now]
    return found


def local_inputs(*specs: str | None) -> list[Path]:
    """The existing local files and folders named by model or dataset specs (hub ids and names are not).

    A spec is taken whole when it is a path, else piece by piece as the dataset grammar splits it
    (``a.jsonl,b:cfg=0.5``): the pieces are only compared with output paths, so reading a name that is
    not a path as one can only make a check stricter.
    """
    found: list[Path] = []
    for spec in specs:
        if not spec:
            continue
        pieces = [spec, *(re.split(r"[=:]", piece)[0] for piece in spec.split(","))]
        found += [resolved(p) for p in pieces if p.strip() and Path(p.strip()).expanduser().exists()]
    return list(dict.fromkeys(found))


def _protected(folder: Path) -> str | None:
    """Why ``folder`` (resolved) must never be removed, or None."""
    here, home = resolved(Path.cwd()), resolved(Path.home())
    if folder == Path(folder.anchor):
        return "is the file system root"
    if here == folder or here.is_relative_to(folder):
        return "is the working directory" if here == folder else "holds the working directory"
    if home == folder or home.is_relative_to(folder):
        return "is a home folder" if home == folder else "holds a home folder"
    return None


def _holds_input(folder: Path, inputs: Iterable[Path]) -> Path | None:
    return next((p for p in inputs if p == folder or p.is_relative_to(folder)), None)


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir`` for this process while the block runs: one run per folder at a time.

    The lock is a file created exclusively (``O_EXCL``: two starts cannot both create it) holding this
    process's pid and host. A lock left by a process that is gone (same host, no such pid) is taken over;
    one held by a live process, or by another host, stops this start in one line.
    """
    folder = Path(run_dir)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is None:  # stale: its process is gone
                lock.unlink(missing_ok=True)
                continue
            raise UsageError(f"--output-dir '{run_dir}' is in use by another run ({holder}); wait for it to end or "
                             f"choose another --output-dir (remove {lock} if that run is gone)") from None
        with os.fdopen(descriptor, "w") as handle:
            handle.write(mine)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(folder.iterdir()):  # a start that failed before writing anything leaves nothing
            folder.rmdir()


def _holder(lock: Path) -> str | None:
    """Who holds ``lock`` ('pid 12 on host h, started ...'), or None when its process is gone."""
    try:
        held = json.loads(lock.read_text())
        pid, host = int(held["pid"]), str(held["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"an unreadable lock {lock}"
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, owned by another user
            pass
    return f"pid {pid} on host {host}" + (f", started {held['started']}" if held.get("started") else "")


def run_state(run_dir: str | Path) -> str:
    """'empty' (absent or empty), 'other' (files that are not a run), 'started' (a run's files, no complete
    checkpoint yet), 'checkpointed', or 'finished' (its summary.json and final/ written: training ended)."""
    folder = Path(run_dir)
    if not folder.is_dir() or not any(p.name != LOCK_FILE for p in folder.iterdir()):
        return "empty"
    if _foreign(folder) or not (folder / "config.yaml").is_file():
        return "other"
    if (folder / "summary.json").is_file() and (folder / "final").is_dir():
        return "finished"
    if any((p / "COMPLETE").is_file() for p in folder.glob("checkpoint-*")):
        return "checkpointed"
    return "started"


def check_creatable(folder: str | Path, flag: str) -> None:
    """Refuse, before any work, a folder that cannot be made or written: a file stands where one of its parent
    folders should be, or the nearest existing one is read-only."""
    target = resolved(folder)
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"{flag} '{folder}' cannot be created: '{existing}' is a file; choose a folder elsewhere")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} '{folder}' cannot be written: '{existing}' is read-only for this user; choose a "
                         "folder you can write to")


def check_replaceable_run(run_dir: str | Path, inputs: Iterable[Path]) -> None:
    """Raise unless ``--overwrite`` may delete ``run_dir`` (an existing, non-empty folder)."""
    check_replaceable_folder(run_dir, inputs, "--output-dir")
    folder = resolved(run_dir)
    foreign = _foreign(folder)
    if foreign or not (folder / "config.yaml").is_file():
        what = f"holds {foreign_listing(folder)}" if foreign else "no config.yaml"
        raise UsageError(f"--output-dir '{run_dir}' is not a florence-tune run ({what}); --overwrite replaces only "
                         "a run folder: choose another --output-dir or empty it yourself")


def foreign_listing(folder: str | Path) -> str:
    """The first few entries of ``folder`` that no run writes, for a message."""
    foreign = _foreign(Path(folder))
    return ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")


def _foreign(folder: Path) -> list[str]:
    """The entries of ``folder`` that no run writes."""
    return sorted(p.name for p in folder.iterdir() if p.name not in RUN_FILES and not _RUN_FOLDERS.match(p.name))


def check_replaceable_folder(destination: str | Path, inputs: Iterable[Path], flag: str) -> None:
    """Raise when deleting ``destination`` would take the working directory, a home folder, the root or one
    of the command's inputs with it."""
    folder = resolved(destination)
    why = _protected(folder)
    if why:
        raise UsageError(f"{flag} '{destination}' {why}; it is never deleted, choose an empty or new folder")
    held = _holds_input(folder, inputs)
    if held is not None:
        raise UsageError(f"{flag} '{destination}' holds this command's input '{held}'; deleting it would lose "
                         "that input, choose a folder outside it")


def check_output_file(output: str | Path, flag: str, *, inputs: Iterable[Path], data: Iterable[Path] = ()) -> None:
    """Raise when writing ``output`` would overwrite one of the ``inputs`` or land inside a dataset folder."""
    target = resolved(output)
    if target in set(inputs) | set(data):
        raise UsageError(f"{flag} '{output}' is an input of this command; writing it would destroy it, "
                         "choose another file")
    for source in data:
        if source.is_dir() and target.is_relative_to(source):
            raise UsageError(f"{flag} '{output}' lies inside the dataset folder '{source}' (it would be read as "
                             "part of the dataset next time); write it elsewhere")
    if target.is_dir():
        raise UsageError(f"{flag} '{output}' is a folder; name a file")
    check_creatable(target.parent, flag)

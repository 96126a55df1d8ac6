"""Peak resident memory of ``data inspect`` and ``train`` on generated parquet sources of growing size.

    python scripts/data_memory.py --rows 5000 50000
    python scripts/data_memory.py --rows 1000 4000 --modes inspect-stream,inspect --work /tmp/mem

For each row count it writes a DocVQA-shaped parquet source (every row its own incompressible PNG,
about 12 KB, in files of 2,000 rows), then runs each mode as a separate process and records its
peak RSS (``wait4``'s ``ru_maxrss``) and the peak of its anonymous memory (RssAnon, sampled every
0.1 s) — memory-mapped Arrow pages a map-style pass touches count in RSS as file-backed page cache
(reclaimable), not in RssAnon. The last line is one JSON object with every figure, in MiB.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

ROWS_PER_FILE = 2000
MODES = {
    "inspect": ["data", "inspect", "{source}", "--holdout-rows", "0", "--sheet", "{work}/sheet.png"],
    "inspect-stream": ["data", "inspect", "{source}", "--holdout-rows", "0", "--streaming", "--sheet",
                       "{work}/sheet.png"],
    "train": ["train", "--dataset", "{source}", "--holdout-rows", "0", "--eval-split", "none", "--max-steps", "20",
              "--batch-size", "4", "--report-to", "none", "--overwrite", "--output-dir", "{work}/run"],
    "train-stream": ["train", "--dataset", "{source}", "--holdout-rows", "0", "--eval-split", "none", "--streaming",
                     "--max-steps", "20", "--batch-size", "4", "--report-to", "none", "--overwrite",
                     "--output-dir", "{work}/run"],
}


def write_source(folder: Path, rows: int) -> Path:
    """``rows`` DocVQA rows in parquet files under ``folder/data`` (kept if already complete)."""
    import datasets
    from PIL import Image

    from florence_tune.data.synthetic import FEATURES

    done = folder / "READY"
    if done.exists():
        return folder
    (folder / "data").mkdir(parents=True, exist_ok=True)
    rng = random.Random(rows)
    for start in range(0, rows, ROWS_PER_FILE):
        records = []
        for index in range(start, min(start + ROWS_PER_FILE, rows)):
            buffer = io.BytesIO()
            Image.frombytes("RGB", (64, 64), rng.randbytes(64 * 64 * 3)).save(buffer, format="PNG")
            records.append({"questionId": index, "question": f"what is the value in box {index}?",
                            "question_types": ["form"], "image": {"bytes": buffer.getvalue(), "path": None},
                            "docId": index // 3, "answers": [f"value {index}"]})
        part = datasets.Dataset.from_list(records, features=FEATURES)
        part.to_parquet(str(folder / "data" / f"train-{start // ROWS_PER_FILE:05d}.parquet"))
    done.write_text(str(rows))
    return folder


def anon_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((line for line in status.splitlines() if line.startswith("RssAnon:")), "RssAnon: 0 kB")
    return int(line.split()[1]) / 1024


def measure(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``florence-tune argv`` and return its peak RSS and peak anonymous RSS in MiB, and its time."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "florence_tune", *argv], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak_anon = [0.0]

    def sample():
        while process.poll() is None:
            peak_anon[0] = max(peak_anon[0], anon_mib(process.pid))
            time.sleep(0.1)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    output = process.stdout.read()  # the command's report; its last line is JSON
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    if process.returncode != 0:
        raise SystemExit(f"florence-tune {' '.join(argv)} failed with status {process.returncode}")
    report = json.loads(output.strip().splitlines()[-1])
    return {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "peak_anon_mib": round(peak_anon[0], 1),
            "seconds": round(time.monotonic() - started, 1),
            # what the run covered: every sample for inspect, the optimizer steps for train
            "samples": report.get("samples"), "steps": report.get("steps")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--work", default="/tmp/florence_tune_memory", help="where sources and caches go")
    args = parser.parse_args(argv)
    work = Path(args.work)
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf_cache"), "FLORENCE_TUNE_CACHE": str(work / "cache"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for rows in args.rows:
        source = write_source(work / f"rows-{rows}", rows)
        for mode in args.modes.split(","):
            command = [part.format(source=source, work=work) for part in MODES[mode]]
            results.setdefault(mode, {})[str(rows)] = figures = measure(command, env)
            covered = f"{figures['samples']} samples" if figures["samples"] else f"{figures['steps']} steps"
            print(f"{mode:<15} {rows:>7} rows  peak RSS {figures['peak_rss_mib']:>7.1f} MiB  "
                  f"peak anonymous {figures['peak_anon_mib']:>7.1f} MiB  {figures['seconds']:>6.1f} s  {covered}",
                  flush=True)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()

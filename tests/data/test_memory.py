"""Resident memory does not grow with the size of the source (slow: generates and reads thousands of rows).

    pytest -m slow tests/data/test_memory.py
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import data_memory  # noqa: E402

GROWTH_ALLOWED_MIB = 64


@pytest.mark.slow
def test_peak_memory_is_flat_from_2k_to_8k_rows(tmp_path):
    results = data_memory.main(["--rows", "2000", "8000", "--modes", "inspect-stream,train-stream,inspect",
                                "--work", str(tmp_path)])
    for mode in ("inspect-stream", "train-stream"):
        small, large = results[mode]["2000"], results[mode]["8000"]
        assert large["peak_rss_mib"] - small["peak_rss_mib"] < GROWTH_ALLOWED_MIB, (mode, small, large)
    # map-style reads memory-mapped Arrow: touched pages count in RSS as page cache, so compare the
    # anonymous memory (the first pass also converts the parquet files, see scripts/data_memory.py)
    small, large = results["inspect"]["2000"], results["inspect"]["8000"]
    assert large["peak_anon_mib"] - small["peak_anon_mib"] < GROWTH_ALLOWED_MIB, (small, large)

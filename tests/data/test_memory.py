"""Resident memory does not grow with the size of the source (slow: generates and reads 22,000 rows).

    pytest -m slow tests/data/test_memory.py

The source grows by 18,000 rows of ~12 KB images (~210 MiB); allocator noise between runs is
~80 MiB, so anything that held the data would show well above the allowed growth.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import data_memory  # noqa: E402

GROWTH_ALLOWED_MIB = 100


@pytest.mark.slow
def test_peak_memory_is_flat_from_2k_to_20k_rows(tmp_path):
    # "inspect" twice: the first run converts the parquet files to the Arrow cache (the datasets
    # library's one-off step); the second, kept in the results, measures our own pass over it.
    results = data_memory.main(["--rows", "2000", "20000", "--modes", "inspect-stream,train-stream,inspect,inspect",
                                "--work", str(tmp_path)])
    for mode in ("inspect-stream", "train-stream"):
        small, large = results[mode]["2000"], results[mode]["20000"]
        assert large["peak_rss_mib"] - small["peak_rss_mib"] < GROWTH_ALLOWED_MIB, (mode, small, large)
    # map-style reads memory-mapped Arrow: the pages it touches count in RSS as page cache, so
    # compare its anonymous memory
    small, large = results["inspect"]["2000"], results["inspect"]["20000"]
    assert large["peak_anon_mib"] - small["peak_anon_mib"] < GROWTH_ALLOWED_MIB, (small, large)
    assert large["samples"] == 20000

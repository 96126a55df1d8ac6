"""Streams and mixtures: every sample exactly once across data-loader workers and ranks, weights,
reproducibility by seed, exact limits, and epochs that follow one another for training."""

import collections
import itertools

import pytest
import torch

from conftest import DOCVQA_SIZES
from florence_tune import data
from florence_tune.data import SampleStream, Skipped
from florence_tune.data.stream import split_limit


def as_items(batch):
    return batch


def ids_seen(monkeypatch, spec: str, split: str, *, ranks: int, workers: int, **options) -> list[str]:
    """Ids yielded by every (rank, worker) copy of the stream, each rank loaded as under torchrun."""
    seen = []
    for rank in range(ranks):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(ranks))
        stream = data.load(spec, split, streaming=True, **options)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=as_items)
        seen += [item.id for item in loader]
    return seen


@pytest.mark.parametrize(("spec", "split", "options"), [
    ("docvqa", "train", {}),  # 4 files over 4 shards: whole files per worker
    ("docvqa", "validation", {"shuffle": True, "seed": 3}),  # 4 files, 6 rows: every n-th row, shuffled
    ("cauldron", "train", {"holdout_rows": 2, "shuffle": True}),  # multi-turn rows, held-out rows left out
    ("docvqa=2,cauldron:chartqa=1", "train", {"holdout_rows": 1}),  # a weighted mixture
])
def test_two_workers_on_two_ranks_see_each_sample_exactly_once(hub, monkeypatch, spec, split, options):
    everything = [item.id for item in data.load(spec, split, **options)]  # one process, no sharding
    seen = ids_seen(monkeypatch, spec, split, ranks=2, workers=2, **options)
    assert sorted(seen) == sorted(everything) and len(set(seen)) == len(seen) > 0


def test_a_limited_stream_keeps_exactly_the_first_samples(hub, monkeypatch):
    everything = [item.id for item in data.load("docvqa", "train", streaming=True)]
    seen = ids_seen(monkeypatch, "docvqa", "train", ranks=2, workers=2, limit=7)
    assert sorted(seen) == sorted(everything[:7])


def test_forever_reshuffles_each_epoch_and_covers_everything(hub):
    stream = data.load("docvqa", "train", streaming=True, shuffle=True, seed=1)
    two_epochs = [item.id for item in itertools.islice(stream.forever(), 2 * DOCVQA_SIZES["train"])]
    first, second = two_epochs[: DOCVQA_SIZES["train"]], two_epochs[DOCVQA_SIZES["train"]:]
    assert sorted(first) == sorted(second) and len(set(first)) == DOCVQA_SIZES["train"]
    assert first != second, "a new order every epoch"
    assert first == [item.id for item in data.load("docvqa", "train", streaming=True, shuffle=True, seed=1)]


def test_weights_set_the_mix_and_the_seed_sets_the_order(hub):
    def sources(seed):
        stream = data.load("docvqa=3,cauldron:chartqa=1", "train", seed=seed, holdout_rows=0)
        return ["docvqa" if item.id.isdigit() else "chartqa" for item in stream]

    assert sources(0) == sources(0) and sources(0) != sources(1)
    head = collections.Counter(sources(0)[:8])
    assert head["docvqa"] > head["chartqa"], head
    assert isinstance(data.load("docvqa=3,cauldron=1", "train"), SampleStream), "weights make a stream"


def test_limit_is_shared_by_weight():
    assert split_limit(10, [3.0, 1.0]) == [8, 2]
    assert split_limit(5, [1.0, 1.0, 1.0]) == [2, 2, 1]
    assert sum(split_limit(7, [0.2, 0.5, 0.3])) == 7


def test_skipped_rows_travel_through_workers(hub, monkeypatch, tmp_path):
    import builders

    builders.write_jsonl(tmp_path / "train.jsonl", [{"image": "missing.png", "question": "q", "answers": ["a"]}] * 4)
    items = list(torch.utils.data.DataLoader(data.load(str(tmp_path), "train", streaming=True, holdout_rows=0),
                                             batch_size=None, num_workers=2, collate_fn=as_items))
    assert [item.reason for item in items if isinstance(item, Skipped)] == ["image_missing"] * 4

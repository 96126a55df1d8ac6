"""The dataset spec grammar: names, configurations, local paths, hub ids, mixtures and weights."""

import pytest

from florence_tune.data.sources import REGISTRY
from florence_tune.data.spec import Entry, parse
from florence_tune.errors import UsageError


@pytest.mark.parametrize(("spec", "expected"), [
    ("docvqa", [Entry("docvqa")]),
    ("cauldron", [Entry("cauldron")]),
    ("cauldron:ai2d,chartqa", [Entry("cauldron", "ai2d"), Entry("cauldron", "chartqa")]),
    ("docvqa,cauldron:chartqa", [Entry("docvqa"), Entry("cauldron", "chartqa")]),
    # after a configuration list, a word that is one of the source's configurations joins it
    ("cauldron:chartqa,docvqa", [Entry("cauldron", "chartqa"), Entry("cauldron", "docvqa")]),
    ("cauldron,docvqa", [Entry("cauldron"), Entry("docvqa")]),
    ("docvqa=0.7,cauldron=0.3", [Entry("docvqa", None, 0.7), Entry("cauldron", None, 0.3)]),
    ("cauldron:ai2d=2,chartqa=1", [Entry("cauldron", "ai2d", 2.0), Entry("cauldron", "chartqa", 1.0)]),
    ("owner/name:first,second", [Entry("owner/name", "first"), Entry("owner/name", "second")]),
    ("docmatix", [Entry("docmatix")]),
])
def test_spec_forms(spec, expected):
    assert parse(spec, REGISTRY) == expected


def test_a_local_path_is_taken_whole(tmp_path):
    folder = tmp_path / "my,data"
    folder.mkdir()
    assert parse(str(folder), REGISTRY) == [Entry(str(folder))]
    copy = tmp_path / "the_cauldron"
    copy.mkdir()
    assert parse(f"{copy}:ai2d,chartqa", REGISTRY) == [Entry(str(copy), "ai2d"), Entry(str(copy), "chartqa")]


@pytest.mark.parametrize(("spec", "message"), [
    ("nonsense", "accepted forms"),
    ("docvqa=0.7,cauldron", "weight every part"),
    ("docvqa=abc", "is not a number"),
    ("docvqa=-1", "must be a positive number"),
    ("cauldron:nope", "has no configuration 'nope'"),
    ("docvqa:anything", "has no configuration"),
    ("", "--dataset is empty"),
])
def test_bad_specs_are_usage_errors(spec, message):
    with pytest.raises(UsageError, match=message):
        parse(spec, REGISTRY)

"""Tests for the DocVQA-compatible ANLS and exact-match metrics."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from florence_tune.evaluation.metrics import (
    aggregate,
    anls_score,
    exact_match,
    group_scores,
    normalize_answer,
    score_predictions,
)


def _edit_distance(a: str, b: str) -> int:
    # Independent textbook DP so the property test does not just re-run the same library call.
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _official_anls(prediction: str, references: list[str], threshold: float = 0.5) -> float:
    """The RRC DocVQA per-question rule, restated from its description."""
    values = []
    for answer in references:
        gt = " ".join(answer.strip().lower().split())
        det = " ".join(prediction.strip().lower().split())
        length = max(len(answer.upper()), len(prediction.upper()))
        values.append(0.0 if length == 0 else _edit_distance(gt, det) / length)
    result = 1 - min(values)
    return 0 if result < threshold else result


# --- normalisation -----------------------------------------------------------------------


def test_normalize_answer_lowercases_strips_and_collapses_whitespace():
    assert normalize_answer("  New \t York\n\nCity ") == "new york city"
    assert normalize_answer("") == ""
    assert normalize_answer(" \t\n ") == ""


# --- hand-computed values ------------------------------------------------------------------


def test_classic_kitten_sitting():
    # distance("kitten", "sitting") = 3 (k->s, e->i, +g); max raw length = 7 -> 1 - 3/7 = 0.5714...
    assert anls_score("kitten", ["sitting"]) == pytest.approx(1 - 3 / 7)
    assert anls_score("sitting", ["kitten"]) == pytest.approx(0.5714285714285714)


def test_identical_answer_scores_one():
    assert anls_score("Dear Dr. Lobo", ["Dear Dr. Lobo"]) == 1.0


def test_single_typo():
    # "12/15/89" vs "12/15/88": one substitution over 8 characters -> 1 - 1/8 = 0.875
    assert anls_score("12/15/89", ["12/15/88"]) == 0.875


def test_case_and_whitespace_insensitive():
    # Normalised strings are identical -> distance 0 -> 1.0 whatever the denominator.
    assert anls_score("  DEAR   dr.\tLOBO ", ["Dear Dr. Lobo"]) == 1.0
    assert anls_score("new\nyork", ["New York"]) == 1.0


def test_denominator_uses_raw_length_of_padded_prediction():
    # Normalised: "wxyd" vs "abcd" -> distance 3.  Raw lengths: "  wxyd  " = 8, "abcd" = 4.
    # Official: 1 - 3/8 = 0.625 (kept).  Had the normalised length (4) been used: 1 - 3/4 = 0.25 -> 0.
    assert anls_score("  wxyd  ", ["abcd"]) == 0.625


def test_denominator_uses_raw_length_of_reference_with_inner_spaces():
    # Reference "a    b" normalises to "a b"; prediction "a c" -> distance 1.
    # Raw lengths: 6 and 3 -> 1 - 1/6 = 0.8333...  (normalised length would give 1 - 1/3).
    assert anls_score("a c", ["a    b"]) == pytest.approx(1 - 1 / 6)


def test_whitespace_only_prediction_against_empty_reference():
    # Both normalise to "" (distance 0); raw length 3 is non-zero -> 1 - 0/3 = 1.0.
    assert anls_score("   ", [""]) == 1.0


# --- threshold ---------------------------------------------------------------------------


def test_similarity_exactly_at_threshold_is_kept():
    # "ab" vs "ax": distance 1, length 2 -> 1 - 1/2 = 0.5, which is not below 0.5.
    assert anls_score("ax", ["ab"]) == 0.5


def test_similarity_just_below_threshold_is_zeroed():
    reference = "a" * 101
    # 51 substitutions over 101 characters -> 1 - 51/101 = 0.4950... < 0.5 -> 0
    assert anls_score("b" * 51 + "a" * 50, [reference]) == 0.0
    # 50 substitutions -> 1 - 50/101 = 0.5049... >= 0.5 -> kept
    assert anls_score("b" * 50 + "a" * 51, [reference]) == pytest.approx(1 - 50 / 101)


def test_custom_threshold():
    # "kitten"/"sitting" similarity 0.5714 survives 0.5 but not 0.6; threshold 0 keeps everything.
    assert anls_score("kitten", ["sitting"], threshold=0.6) == 0.0
    assert anls_score("abc", ["xyz"], threshold=0.0) == 0.0  # 1 - 3/3 = 0
    assert anls_score("abcd", ["xyzd"], threshold=0.0) == 0.25  # 1 - 3/4


# --- multiple, empty and missing references ----------------------------------------------


def test_best_reference_wins():
    # vs "Denver Broncos": exact -> 1.0 beats "Denver R. Broncos" (distance 3 over 17).
    assert anls_score("Denver Broncos", ["Denver R. Broncos", "Denver Broncos"]) == 1.0
    # vs "abcdef": distance 2 over 6 -> 0.6667; vs "abcxyz": distance 3 over 6 -> 0.5 -> best 0.6667
    assert anls_score("abcdxy", ["abcxyz", "abcdef"]) == pytest.approx(1 - 2 / 6)


def test_empty_prediction_scores_zero():
    # distance 3 over length 3 -> 1 - 1 = 0
    assert anls_score("", ["abc"]) == 0.0
    assert anls_score(None, ["abc"]) == 0.0


def test_empty_reference_scores_zero_for_non_empty_prediction():
    assert anls_score("abc", [""]) == 0.0


def test_both_empty_scores_one_without_dividing_by_zero():
    assert anls_score("", [""]) == 1.0
    assert anls_score(None, [""]) == 1.0


def test_no_references_scores_zero():
    assert anls_score("anything", []) == 0.0
    assert anls_score("", []) == 0.0
    assert exact_match("anything", []) == 0.0


def test_bare_string_reference_is_one_answer_not_characters():
    # Iterating "abc" would compare against "a", "b", "c" and give 1 - 2/3.
    assert anls_score("abc", "abc") == 1.0


# --- unicode -----------------------------------------------------------------------------


def test_denominator_follows_upper_length_for_sharp_s():
    # "ß".upper() == "SS" (length 2).  Normalised "ß" vs "s": distance 1.
    # Denominator max(len("SS"), len("S")) = 2 -> 1 - 1/2 = 0.5 (kept).
    # With plain len() it would be 1 - 1/1 = 0.
    assert len("ß".upper()) == 2
    assert anls_score("ß", ["s"]) == 0.5
    assert anls_score("s", ["ß"]) == 0.5


def test_denominator_follows_upper_length_for_ligature():
    # "ﬁ".upper() == "FI".  "ﬁx" vs "ﬁy": distance 1; denominator len("FIX") = 3 -> 1 - 1/3.
    assert anls_score("ﬁx", ["ﬁy"]) == pytest.approx(1 - 1 / 3)


def test_lowercasing_that_grows_the_string_cannot_go_negative():
    # "İ".lower() is two code points, so the normalised distance (2) exceeds the raw length (1):
    # 1 - 2/1 = -1, which is below the threshold -> 0, never a negative score.
    assert anls_score("İ", ["x"]) == 0.0
    assert anls_score("İ", ["x"], threshold=-5.0) == -1.0  # the raw value, with no clipping


def test_unicode_identical_answer():
    assert anls_score("Straße 12, Zürich", ["straße 12,   ZÜRICH"]) == 1.0


# --- exact match -------------------------------------------------------------------------


def test_exact_match_uses_normalisation():
    assert exact_match("  NEW  york ", ["Boston", "new york"]) == 1.0
    assert exact_match("new york city", ["new york"]) == 0.0
    assert exact_match(None, [""]) == 1.0


# --- aggregation -------------------------------------------------------------------------


def test_aggregate_mean_and_empty():
    assert aggregate([1.0, 0.5, 0.0]) == 0.5
    assert aggregate([]) == 0.0
    assert aggregate(x for x in (0.25, 0.75)) == 0.5


def test_score_predictions():
    records = [
        {"prediction": "Denver Broncos", "references": ["Denver Broncos", "Denver R. Broncos"]},
        {"prediction": "12/15/89", "references": ["12/15/88"]},  # 0.875, not exact
        {"prediction": "", "references": ["abc"]},  # 0
        {"prediction": "x", "references": []},  # 0
    ]
    result = score_predictions(records)
    assert result == {"anls": (1.0 + 0.875 + 0.0 + 0.0) / 4, "exact_match": 0.25, "n": 4}
    # Full-precision floats, not rounded.
    one_third = score_predictions([{"prediction": "abcdxy", "references": ["abcdef"]}])["anls"]
    assert one_third == 1 - 2 / 6


def test_score_predictions_empty_dataset():
    assert score_predictions([]) == {"anls": 0.0, "exact_match": 0.0, "n": 0}


def test_score_predictions_accepts_a_generator():
    records = ({"prediction": "a", "references": ["a"]} for _ in range(3))
    assert score_predictions(records) == {"anls": 1.0, "exact_match": 1.0, "n": 3}


def test_group_scores():
    records = [
        {"prediction": "a", "references": ["a"], "type": "table"},
        {"prediction": "b", "references": ["c"], "type": "form"},
        {"prediction": "12/15/89", "references": ["12/15/88"], "type": "table"},
    ]
    result = group_scores(records, key=lambda r: r["type"])
    assert list(result) == ["table", "form"]  # first-seen order
    assert result["table"] == {"anls": (1.0 + 0.875) / 2, "exact_match": 0.5, "n": 2}
    assert result["form"] == {"anls": 0.0, "exact_match": 0.0, "n": 1}
    assert group_scores([], key=lambda r: r["type"]) == {}


def test_group_keys_are_strings():
    result = group_scores([{"prediction": "a", "references": ["a"], "page": 3}], key=lambda r: r["page"])
    assert list(result) == ["3"]
    pickle.dumps(result)  # plain data, safe to ship between processes


# --- properties --------------------------------------------------------------------------

_text = st.text(max_size=12)


@settings(max_examples=150, deadline=None)
@given(prediction=_text, references=st.lists(_text, max_size=4))
def test_anls_never_raises_and_stays_in_unit_interval(prediction, references):
    score = anls_score(prediction, references)
    assert 0.0 <= score <= 1.0
    assert exact_match(prediction, references) in (0.0, 1.0)


@settings(max_examples=100, deadline=None)
@given(prediction=_text, references=st.lists(_text, min_size=1, max_size=3), extra=st.data())
def test_prediction_equal_to_a_reference_scores_one(prediction, references, extra):
    position = extra.draw(st.integers(min_value=0, max_value=len(references)))
    references = references[:position] + [prediction] + references[position:]
    assert anls_score(prediction, references) == 1.0
    assert exact_match(prediction, references) == 1.0


@settings(max_examples=150, deadline=None)
@given(prediction=_text, references=st.lists(_text, min_size=1, max_size=3))
def test_matches_official_rule(prediction, references):
    assert anls_score(prediction, references) == _official_anls(prediction, references)

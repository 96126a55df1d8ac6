"""Per-answer VQA metrics against hand-computed values of the official definitions.

Expected numbers are worked out by hand from the official scripts (pix2struct ``relaxed_correctness``,
GT-Vision-Lab/VQA ``vqaEval.py``), with the arithmetic in the comments.
"""

from __future__ import annotations

import pytest

from florence_tune.evaluation.answer_metrics import (
    PER_ANSWER,
    multiple_choice_accuracy,
    normalize_vqa_answer,
    relaxed_accuracy,
    vqa_accuracy,
)

# ---------------------------------------------------------------------------------------------------
# relaxed_accuracy (ChartQA)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("105", "100", 1.0),  # |105 - 100| / 100 = 0.05 <= 0.05: the edge itself is correct
        ("95", "100", 1.0),  # |95 - 100| / 100 = 0.05
        ("105.1", "100", 0.0),  # 5.1 / 100 = 0.051 > 0.05
        ("94.9", "100", 0.0),  # 5.1 / 100 = 0.051
        ("12%", "0.12", 1.0),  # 12 / 100 = 0.12, relative change 0
        ("0.12", "12%", 1.0),  # the target side is read as a percentage too
        ("12", "0.12", 0.0),  # without the "%": |12 - 0.12| / 0.12 = 99
        ("0", "0", 1.0),  # a zero target is compared as strings: "0" == "0"
        ("0.0", "0", 0.0),  # numerically equal, but "0.0" != "0" as strings
        ("0", "0.0", 0.0),
        ("Yes", "yes", 1.0),  # non-numeric: lower-cased string equality
        ("no", "yes", 0.0),
        ("about 100", "100", 0.0),  # a non-number prediction falls back to "about 100" != "100"
        (" 105", "100", 1.0),  # float() itself accepts surrounding spaces
        (" yes", "yes", 0.0),  # but nothing is stripped: " yes" != "yes"
        ("12% ", "0.12", 0.0),  # "12% " does not end with "%", and float("12% ") fails -> strings differ
    ],
)
def test_relaxed_accuracy_follows_pix2struct(prediction: str, target: str, expected: float) -> None:
    assert relaxed_accuracy(prediction, [target]) == expected


def test_relaxed_accuracy_takes_the_best_reference() -> None:
    # 50 vs 10: 40 / 10 = 4; 50 vs 51: 1 / 51 ~= 0.0196 <= 0.05 -> the second reference makes it correct.
    assert relaxed_accuracy("50", ["10", "51"]) == 1.0
    # 50 vs 60: 10 / 60 ~= 0.167 -> neither reference.
    assert relaxed_accuracy("50", ["10", "60"]) == 0.0


def test_relaxed_accuracy_edge_inputs() -> None:
    assert relaxed_accuracy("105", "100") == 1.0  # a bare string is one reference, not three characters
    assert relaxed_accuracy(None, ["yes"]) == 0.0  # None is the empty answer: "" != "yes"
    assert relaxed_accuracy(None, [""]) == 1.0  # "" == "" as strings
    assert relaxed_accuracy("yes", []) == 0.0
    assert relaxed_accuracy("yes", None) == 0.0


# ---------------------------------------------------------------------------------------------------
# vqa_accuracy (VQA v2)
# ---------------------------------------------------------------------------------------------------


def _humans(matching: int, answer: str = "2", other: str = "3") -> list[str]:
    return [answer] * matching + [other] * (10 - matching)


def test_vqa_accuracy_leave_one_out_over_ten_humans() -> None:
    # Each human scores min(1, matches among the 9 others / 3); the question scores their mean.
    # 4 matching: a matching human sees 3 others -> 1; a non-matching one sees 4 -> 1. Mean 1.0.
    assert vqa_accuracy("2", _humans(4)) == pytest.approx(1.0)
    # 10 matching: everyone sees 9 -> 1.
    assert vqa_accuracy("2", _humans(10)) == pytest.approx(1.0)
    # 3 matching: 3 humans see 2 -> 2/3, 7 see 3 -> 1: (3 * 2/3 + 7) / 10 = (2 + 7) / 10 = 0.9.
    assert vqa_accuracy("2", _humans(3)) == pytest.approx(0.9)
    # 2 matching: 2 humans see 1 -> 1/3, 8 see 2 -> 2/3: (2/3 + 16/3) / 10 = 6 / 10 = 0.6.
    assert vqa_accuracy("2", _humans(2)) == pytest.approx(0.6)
    # 1 matching: that human sees 0 -> 0, 9 see 1 -> 1/3: (9/3) / 10 = 0.3.
    assert vqa_accuracy("2", _humans(1)) == pytest.approx(0.3)
    # 0 matching.
    assert vqa_accuracy("2", _humans(0)) == 0.0


def test_vqa_accuracy_two_answers_use_the_official_formula() -> None:
    # ["dog", "cat"], prediction "dog": the "dog" human sees ["cat"] -> 0; the "cat" human sees ["dog"] -> 1/3.
    # Mean (0 + 1/3) / 2 = 1/6.
    assert vqa_accuracy("dog", ["dog", "cat"]) == pytest.approx(1 / 6)


@pytest.mark.parametrize(
    ("prediction", "answer"),
    [
        ("Two", "2"),  # lower-cased, then the number word "two" -> "2"
        ("none", "0"),  # the manual map also sends "none" to "0"
        ("the dog.", "dog"),  # the period (not before a digit) is dropped, then the article "the"
        ("a red car", "red car"),  # article "a"
        ("an apple", "apple"),  # article "an"
        ("isnt", "isn't"),  # contractions table: "isnt" -> "isn't"
        ("dont", "don't"),
        ("couldnt've", "couldn't've"),  # one apostrophe missing of two
        ("isn't", "isn't"),  # the apostrophe is not in the punctuation list, so it survives
        ("1,000", "1000"),  # a comma between digits makes every listed mark deleted rather than spaced
        ("yes!", "yes"),  # "!" touches no space -> replaced by a space, which split() drops
        ("red-car", "red car"),  # "-" between letters -> a space
        ("yes, sir", "yes sir"),  # ", " touches a space -> deleted
        ("3.5", "3.5"),  # a period before a digit is kept
        ("  Yes\n", "yes"),  # newline/tab to space, stripped, lower-cased
    ],
)
def test_vqa_normalisation_of_the_prediction(prediction: str, answer: str) -> None:
    assert vqa_accuracy(prediction, [answer]) == 1.0
    assert normalize_vqa_answer(prediction) == answer


def test_normalize_vqa_answer() -> None:
    assert normalize_vqa_answer("The two dogs.") == "2 dogs"
    assert normalize_vqa_answer("5.") == "5"  # "." not followed by a digit
    assert normalize_vqa_answer("a\tcat") == "cat"
    assert normalize_vqa_answer("somebody'd") == "somebodyd"  # the official table maps this one backwards
    assert normalize_vqa_answer(None) == ""


def test_vqa_human_answers_are_only_punctuation_processed_and_only_when_they_disagree() -> None:
    # Disagreeing humans: "1,000" -> "1000" (processPunctuation), so 4 of 10 match "1000" -> 1.0 (as above).
    assert vqa_accuracy("1000", ["1,000"] * 4 + ["many"] * 6) == pytest.approx(1.0)
    # All humans agree: their answers are left as given, and the normalised prediction "1000" != "1,000".
    assert vqa_accuracy("1000", ["1,000"] * 10) == 0.0
    assert vqa_accuracy("1,000", ["1,000"] * 10) == 0.0  # the prediction is normalised to "1000"
    # Human answers never get processDigitArticle: "Two" stays "Two" and cannot equal the prediction's "2".
    assert vqa_accuracy("two", ["Two"] * 4 + ["3"] * 6) == 0.0


def test_vqa_single_answer_is_scored_as_ten_identical_humans() -> None:
    # Ten humans all saying "dog": a matching prediction sees 9 others -> min(1, 3) = 1 for each -> 1.0.
    assert vqa_accuracy("dog", ["dog"]) == 1.0
    assert vqa_accuracy("The dog.", "dog") == 1.0  # a bare string is one answer
    assert vqa_accuracy("cat", ["dog"]) == 0.0
    # Unlike the official (pre-normalised) ten answers, a single answer such as the Cauldron's is normalised
    # like the prediction: "Two" -> "2", "Yes." -> "yes", "a dog" -> "dog".
    assert vqa_accuracy("2", ["Two"]) == 1.0
    assert vqa_accuracy("yes", ["Yes."]) == 1.0
    assert vqa_accuracy("the dog", ["a dog"]) == 1.0
    assert vqa_accuracy("no", ["Yes."]) == 0.0


def test_vqa_accuracy_edge_inputs() -> None:
    assert vqa_accuracy(None, ["yes"]) == 0.0
    assert vqa_accuracy("yes", []) == 0.0
    assert vqa_accuracy("yes", None) == 0.0


# ---------------------------------------------------------------------------------------------------
# multiple_choice_accuracy (AI2D, ScienceQA)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("B", "Answer: B", 1.0),
        ("(c)", "C", 1.0),
        ("B. the sun", "B", 1.0),
        ("B)", "B.", 1.0),
        ("The answer is (B).", "b", 1.0),
        ("answer is D", "D:", 1.0),
        ("A", "B", 0.0),
        ("B. the sun", "C. the sun", 0.0),  # both name a letter: the letters decide
        ("the sun", "The Sun.", 1.0),  # texts: lower-cased, trailing period dropped
        ("the  sun ", "the sun", 1.0),  # whitespace collapsed and stripped
        ("the sun", "B. the sun", 1.0),  # a side with a letter also offers its option text
        ("the moon", "B. the sun", 0.0),
        ("B", "the sun", 0.0),  # no way to tell which letter "the sun" is
        ("A dog", "A", 0.0),  # a letter followed by a word is text, not option A
        ("B.5", "B", 0.0),  # not a letter: "B.5" is text
    ],
)
def test_multiple_choice_accuracy(prediction: str, reference: str, expected: float) -> None:
    assert multiple_choice_accuracy(prediction, [reference]) == expected


def test_multiple_choice_accuracy_takes_the_best_reference_and_handles_edges() -> None:
    assert multiple_choice_accuracy("B", ["A", "Answer: B"]) == 1.0
    assert multiple_choice_accuracy("B", "Answer: B") == 1.0  # bare string reference
    assert multiple_choice_accuracy(None, ["B"]) == 0.0
    assert multiple_choice_accuracy("B", []) == 0.0
    assert multiple_choice_accuracy("B", None) == 0.0


def test_per_answer_registry() -> None:
    assert PER_ANSWER == {
        "relaxed_accuracy": relaxed_accuracy,
        "vqa_accuracy": vqa_accuracy,
        "multiple_choice_accuracy": multiple_choice_accuracy,
    }

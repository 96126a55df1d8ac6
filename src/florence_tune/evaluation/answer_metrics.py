"""Per-answer metrics of the VQA benchmarks, reproducing their official evaluation scripts.

Every metric scores one prediction against the accepted answers of its question, in [0, 1]:
``metric(prediction, references)``, where a ``None`` prediction is the empty answer, a bare string
is one reference and no references at all score 0.0. The dataset score is the mean over questions
(``metrics.aggregate``).

* ``relaxed_accuracy`` (ChartQA): the relaxed correctness of google-research/pix2struct
  ``pix2struct/metrics.py`` (``relaxed_correctness``; lmms-eval's ChartQA task carries the same
  function). A number within 5 % relative change of a non-zero numeric target is correct (exactly 5 %
  included); a trailing ``%`` divides by 100; anything else, including a target of 0, must equal the
  target after lower-casing. Nothing is stripped. The best reference counts.
* ``vqa_accuracy`` (VQA v2 and the like): GT-Vision-Lab/VQA
  ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (the Python 3 version of its master branch):
  the prediction is normalised (``normalize_vqa_answer``), the human answers only have their
  punctuation processed and only when they disagree, and each human's answer scores
  ``min(1, matching other humans / 3)``, averaged over the humans. (An older Python 2 version in the
  same repository differs: typographic apostrophes in the contractions table and ":" and "'" among
  the punctuation; lmms-eval's ``EvalAIAnswerProcessor`` has the tables reproduced here, but adds a
  tokenising step of its own that drops every comma and "?" first.)
* ``multiple_choice_accuracy`` (AI2D, ScienceQA, ...): scored by the option letter, as lmms-eval
  scores these benchmarks, with a more lenient reader of the letter (see its docstring).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from florence_tune.evaluation.metrics import _as_references, _as_text, anls_score, exact_match, normalize_answer

# ---------------------------------------------------------------------------------------------------
# ChartQA: relaxed correctness
# ---------------------------------------------------------------------------------------------------

MAX_RELATIVE_CHANGE = 0.05


def _chart_number(text: str) -> float | None:
    """The value of a ChartQA answer, or None when it is not a number ("12%" is 0.12)."""
    # No stripping, as in pix2struct: float() itself tolerates surrounding whitespace, but "12% "
    # does not end with "%" and so is not a number there either.
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def _relaxed_correct(prediction: str, target: str) -> bool:
    predicted = _chart_number(prediction)
    expected = _chart_number(target)
    # A target of 0 has no relative change, so it falls through to the string comparison
    # (pix2struct tests the target's truthiness): "0.0" does not match a target "0".
    if predicted is not None and expected:
        return abs(predicted - expected) / abs(expected) <= MAX_RELATIVE_CHANGE
    return prediction.lower() == target.lower()


def relaxed_accuracy(prediction: str | None, references: Sequence[str] | str | None) -> float:
    """ChartQA's relaxed accuracy: 1.0 when the prediction is relaxed-correct for any reference."""
    pred = _as_text(prediction)
    return max((float(_relaxed_correct(pred, ref)) for ref in _as_references(references)), default=0.0)


# ---------------------------------------------------------------------------------------------------
# VQA v2: answer normalisation and accuracy
# ---------------------------------------------------------------------------------------------------

# Replaced by a space, or deleted when it touches a space or the text has a comma between digits.
# The official list keeps the apostrophe and the colon out (they survive in answers such as "isn't").
_VQA_PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')  # one mark per character, in the official order
_COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")
# The official pattern is "(?!<=\d)(\.)(?!\d)": its first group was meant as a look-behind but is a
# look-ahead for the literal "<=", which can never match where a "." is, so only "not followed by a
# digit" is in effect: "2.5" keeps its point, "5." and "3.a" lose theirs.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# The official script passes re.UNICODE (== 32) as the third, positional argument of Pattern.sub,
# which is the count: at most 32 periods are removed.
_PERIOD_STRIP_COUNT = int(re.UNICODE)

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})

# The official contractions table, written as the contracted forms it produces. Each form is reached
# from the word with one of its apostrophes missing ("couldn't've" from "couldnt've" and "couldn'tve";
# "isn't" from "isnt"); a form with a single apostrophe from the word without it. The table's entries
# for "Im", "Ive", "Id've" and "I'dve" are kept although words are lower-cased before the look-up.
_CONTRACTED_FORMS = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't
he'd he'd've he's how'd how'll how's I'd've I'm I've isn't it'd it'd've it'll ma'am mightn't mightn't've
might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't
shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd
something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll they're
they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd where's where've
who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll
y'all'd've you'd you'd've you'll you're you've
""".split()
# Entries outside that pattern: two map a word to itself (no effect, listed for completeness), and one
# maps backwards, so a predicted "somebody'd" becomes "somebodyd" (official behaviour, reproduced).
_IRREGULAR_CONTRACTIONS = {"let's": "let's", "she's": "she's", "somebody'd": "somebodyd"}


def _contraction_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for form in _CONTRACTED_FORMS:
        apostrophes = [i for i, char in enumerate(form) if char == "'"]
        if len(apostrophes) == 1:
            table[form.replace("'", "")] = form
        else:
            for i in apostrophes:
                table[form[:i] + form[i + 1 :]] = form
    table.update(_IRREGULAR_CONTRACTIONS)
    return table


_CONTRACTIONS = _contraction_table()


def _process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: punctuation to spaces or nothing, periods dropped."""
    # Both conditions look at the text as it came in, not as it is being rewritten.
    digits_with_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for mark in _VQA_PUNCTUATION:
        if digits_with_comma or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_PERIOD_STRIP_COUNT)


def _process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words to digits, no articles, contractions."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    # Number words are mapped before articles are dropped, as officially (no number word is an article).
    words = [word for word in words if word not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words)


def normalize_vqa_answer(text: str | None) -> str:
    """The official VQA normalisation of a predicted answer ("The two dogs." -> "2 dogs")."""
    text = _as_text(text).replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


# The official formula is written for ten human answers per question.
_VQA_HUMANS = 10


def vqa_accuracy(prediction: str | None, references: Sequence[str] | str | None) -> float:
    """VQA accuracy of one prediction against the human answers of its question.

    As the official script: the prediction is normalised with ``normalize_vqa_answer``; the human
    answers are compared as given (the official annotations are already normalised), except that
    their punctuation is processed when they are not all the same; each human's answer then scores
    ``min(1, number of the *other* humans who gave the prediction / 3)``, and the question scores
    the mean over humans (so with ten humans, 4 agreeing score 1.0, 3 score 0.9, 2 score 0.6, 1 scores
    0.3).

    Our decision for a single reference (the Cauldron keeps one answer per question, and the formula
    would give 0.0 to every prediction since no *other* human exists): it is scored as a question
    where all ten humans gave that answer, i.e. 1.0 when the normalised prediction equals the answer,
    else 0.0. The official annotations come normalised; the Cauldron's single answers do not ("Yes.",
    "Two"), so that one answer is normalised as the prediction is.
    """
    answers = _as_references(references)
    if not answers:
        return 0.0
    pred = normalize_vqa_answer(prediction)
    if len(answers) == 1:  # ten humans agreeing; the one answer normalised like the prediction (our rule)
        return float(pred == normalize_vqa_answer(answers[0]))
    # Official asymmetry, reproduced: human answers only get processPunctuation (never
    # processDigitArticle), and only when they disagree.
    if len(set(answers)) > 1:
        answers = [_process_punctuation(answer) for answer in answers]
    per_human = []
    for left_out in range(len(answers)):
        matching = sum(1 for i, answer in enumerate(answers) if i != left_out and answer == pred)
        per_human.append(min(1.0, matching / 3))
    # Summed then divided, in the official order, so the float results are the same.
    return sum(per_human) / len(per_human)


# ---------------------------------------------------------------------------------------------------
# Multiple choice: the option letter
# ---------------------------------------------------------------------------------------------------

# "Answer: B", "answer is B", "The answer is: (B)"; "answers" or "answered" are not a prefix.
_ANSWER_PREFIX = re.compile(r"\s*(?:the\s+)?answer(?:\s*:|\s+is\b\s*:?|(?=\s))\s*", re.IGNORECASE)
# "(B)" (or "(B)."), "B.", "B)", "B:", each optionally followed by the option's text, or a lone "B".
_OPTION_LETTER = re.compile(r"\(([a-z])\)\.?(.*)|([a-z])[.):](.*)|([a-z])", re.IGNORECASE | re.DOTALL)


def _read_option(text: str) -> tuple[str | None, str, str]:
    """``(letter or None, text after any "Answer:" prefix, the option's text after the letter)``."""
    match = _ANSWER_PREFIX.match(text)
    body = (text[match.end() :] if match else text).strip()
    option = _OPTION_LETTER.fullmatch(body)
    if option is None:
        return None, body, ""
    letter = option.group(1) or option.group(3) or option.group(5)
    rest = option.group(2) or option.group(4) or ""
    # "B.5" or "(B)x" is not an option letter; the letter must end the text or be followed by a space.
    if rest and not rest[0].isspace():
        return None, body, ""
    return letter.upper(), body, rest.strip()


def _option_text(text: str) -> str:
    """ANLS-style normalisation (lower-case, strip, collapse spaces) without a trailing period."""
    text = normalize_answer(text)
    return text[:-1].rstrip() if text.endswith(".") else text


def _same_option(prediction: str, reference: str) -> bool:
    pred_letter, pred_body, pred_rest = _read_option(prediction)
    ref_letter, ref_body, ref_rest = _read_option(reference)
    if pred_letter and ref_letter:
        return pred_letter == ref_letter
    # One side gives no letter: compare the texts, either as written or, where a side is
    # "B. the sun", by the option's text after its letter (so "the sun" picks option B).
    pred_texts = {_option_text(pred_body)} | ({_option_text(pred_rest)} if pred_rest else set())
    ref_texts = {_option_text(ref_body)} | ({_option_text(ref_rest)} if ref_rest else set())
    return bool(pred_texts & ref_texts)


def multiple_choice_accuracy(prediction: str | None, references: Sequence[str] | str | None) -> float:
    """1.0 when the prediction picks the same option as any reference, else 0.0.

    The option letter is read from both sides: a single letter A-Z (any case), alone or followed by
    ".", ")" or ":", or in parentheses, optionally after "Answer:" / "the answer is"; a letter may be
    followed by the option's text ("B. the sun"). When both sides name a letter the letters decide;
    otherwise the texts are compared after ANLS-style normalisation and without a trailing period
    ("the sun" == "The Sun."), a "B. the sun" side also offering its option text "the sun".

    This follows the published practice of scoring AI2D and ScienceQA by the option letter, as
    lmms-eval does (EvolvingLMMs-Lab/lmms-eval ``lmms_eval/tasks/ai2d``: exact match against the
    target letter, ignoring case and punctuation; ``lmms_eval/tasks/scienceqa/utils.py``: the
    prediction equals the letter or starts with "<capital letter>.", LLaVA's parsing). It is not a
    bit-for-bit reproduction of either: our reader also accepts "Answer: B", "(b)", "B)" and
    "B. the sun" (which lmms-eval's AI2D scores 0.0), and compares option texts when a side has no
    letter, so on the same outputs it scores at least as high.
    """
    pred = _as_text(prediction)
    return max((float(_same_option(pred, ref)) for ref in _as_references(references)), default=0.0)


PER_ANSWER: dict[str, Callable[[str | None, Sequence[str] | str | None], float]] = {
    "relaxed_accuracy": relaxed_accuracy,
    "vqa_accuracy": vqa_accuracy,
    "multiple_choice_accuracy": multiple_choice_accuracy,
}
# Every way a question's answer is judged (tasks.ANSWER_METRICS), by name.
BY_NAME = {"anls": anls_score, "exact_match": exact_match, **PER_ANSWER}

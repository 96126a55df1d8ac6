"""Answer-quality metrics for document VQA: ANLS and exact match.

ANLS (Average Normalized Levenshtein Similarity) is computed exactly as the official DocVQA
evaluation on the Robust Reading Competition site does it, so numbers reported here can be
compared with the leaderboard:

* both strings are lower-cased, stripped and have whitespace runs collapsed before the
  Levenshtein distance is taken;
* that distance is divided by the longer of the two *raw* strings, measured after ``.upper()``
  (the official script's quirk: surrounding or repeated spaces still count in the denominator,
  and characters such as ``"ß"`` count twice because ``"ß".upper() == "SS"``);
* a question scores ``1 - min(normalised distance)`` over its reference answers, or 0 when that
  similarity falls below the threshold (0.5);
* the dataset score is the mean over questions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import Levenshtein

ANLS_THRESHOLD = 0.5


def normalize_answer(text: str) -> str:
    """Lower-case, strip and collapse whitespace runs to one space (the official preprocessing)."""
    return " ".join(text.strip().lower().split())


def _as_text(value: str | None) -> str:
    # Generation can legitimately yield nothing; treat a missing answer as the empty answer
    # rather than crashing an evaluation run that has already spent GPU time.
    return "" if value is None else str(value)


def _as_references(references: Sequence[str] | str | None) -> list[str]:
    # A bare string is a Sequence[str] too; iterating it would score against single characters.
    if references is None:
        return []
    if isinstance(references, str):
        return [references]
    return [_as_text(reference) for reference in references]


def _normalized_distance(prediction: str, reference: str) -> float:
    """Distance between the normalised strings over the longer *raw* upper-cased string."""
    length = max(len(reference.upper()), len(prediction.upper()))
    if length == 0:
        # Both raw strings are empty: a perfect match, and no division to make.
        return 0.0
    distance = Levenshtein.distance(normalize_answer(reference), normalize_answer(prediction))
    return distance / length


def anls_score(prediction: str | None, references: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """ANLS of one prediction against all accepted answers of its question (0.0 without any)."""
    refs = _as_references(references)
    if not refs:
        return 0.0
    pred = _as_text(prediction)
    # Same order of operations as the official script (1 - min, then threshold), so the
    # floating-point results are bit-for-bit identical.
    score = 1 - min(_normalized_distance(pred, ref) for ref in refs)
    # The raw-length denominator can be shorter than the normalised strings (e.g. "İ" lower-cases
    # to two code points), making the distance exceed 1; such scores are far below any threshold.
    if score < threshold:
        return 0.0
    return score


def exact_match(prediction: str | None, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference, else 0.0."""
    pred = normalize_answer(_as_text(prediction))
    return float(any(pred == normalize_answer(ref) for ref in _as_references(references)))


def aggregate(scores: Iterable[float]) -> float:
    """Mean of per-question scores; an empty collection scores 0.0 rather than raising."""
    total = 0.0
    count = 0
    for score in scores:
        total += score
        count += 1
    return total / count if count else 0.0


def score_predictions(records: Iterable[dict[str, Any]]) -> dict[str, float | int]:
    """Dataset-level ``{"anls", "exact_match", "n"}`` for records with ``prediction`` and ``references``."""
    anls_values: list[float] = []
    em_values: list[float] = []
    for record in records:
        prediction = record.get("prediction")
        references = record.get("references")
        anls_values.append(anls_score(prediction, references))
        em_values.append(exact_match(prediction, references))
    return {
        "anls": aggregate(anls_values),
        "exact_match": aggregate(em_values),
        "n": len(anls_values),
    }


def group_scores(
    records: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
) -> dict[str, dict[str, float | int]]:
    """Scores per group, where ``key(record)`` names the group (e.g. the question type).

    Groups appear in the order they are first seen, so reports follow the dataset's order.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(str(key(record)), []).append(record)
    return {name: score_predictions(members) for name, members in groups.items()}

"""Adapter for rows in the DocVQA schema (``HuggingFaceM4/DocumentVQA`` and the synthetic set).

Schema: ``questionId, question, question_types, image, docId, answers`` (a list of strings).
Adapters build ``Sample``s and never tokenize; the collator owns tensors.
"""

from __future__ import annotations

from typing import Any

from florence_tune.data.sample import Sample

HUB_ID = "HuggingFaceM4/DocumentVQA"
COLUMNS = ("question", "answers", "image")


class BadSample(Exception):
    """A row that cannot become a training sample; ``reason`` is the counter key."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


def clean_question(question: str) -> str:
    """Capitalise and end with '?', as the original training scripts did (opt-in)."""
    question = question.strip()
    if not question:
        return question
    question = question[0].upper() + question[1:]
    return question if question.endswith("?") else question + "?"


def valid_answers(answers: Any) -> list[str]:
    if answers is None:
        return []
    if isinstance(answers, str):
        answers = [answers]
    return [a.strip() for a in answers if isinstance(a, str) and a.strip()]


def to_sample(row: dict, image, task_prompt: str, *, require_answer: bool = True,
              clean_questions: bool = False) -> Sample:
    """One DocVQA row → Sample. ``image`` is the already-opened RGB page (or None for text-only use)."""
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BadSample("no_question")
    if clean_questions:
        question = clean_question(question)
    answers = valid_answers(row.get("answers"))
    if require_answer and not answers:
        raise BadSample("no_answer")
    question_types = row.get("question_types") or []
    meta = {
        "question": question,
        "question_type": "/".join(question_types) if question_types else "unknown",
        "doc_id": row.get("docId"),
    }
    return Sample(
        id=str(row.get("questionId", "")),
        image=image,
        prompt=task_prompt + question.strip(),
        target=answers[0] if answers else "",
        references=answers,
        meta=meta,
    )

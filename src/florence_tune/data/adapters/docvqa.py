"""Adapter for rows in the DocVQA schema (``HuggingFaceM4/DocumentVQA`` and the synthetic set).

Schema: ``questionId, question, question_types, image, docId, answers`` (a list of strings; the
hub's test split leaves it empty, which makes that split predict-only). A plain ``answer`` string
is accepted too. Adapters build ``Sample``s and never tokenize; the collator owns tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from florence_tune import tasks
from florence_tune.data.rows import BadSample, Item, as_text, single_image
from florence_tune.data.sample import Sample, Skipped

HUB_ID = "HuggingFaceM4/DocumentVQA"
PREDICT_ONLY_SPLITS = frozenset({"test"})  # the hub's test answers are withheld for the leaderboard

__all__ = ["Adapter", "BadSample", "clean_question", "to_sample", "valid_answers"]


def clean_question(question: str) -> str:
    """What the original training scripts did to DocVQA questions (opt-in): ``str.capitalize`` when the first
    letter is small (which lower-cases the rest: "the ID" becomes "the id"), then a closing '?'."""
    question = question.strip()
    if not question:
        return question
    if question[0].islower():
        question = question.capitalize()
    return question if question.endswith("?") else question + "?"


def valid_answers(answers: Any) -> list[str]:
    if answers is None:
        return []
    if not isinstance(answers, list | tuple):
        answers = [answers]
    texts = (as_text(a) for a in answers)
    return [a.strip() for a in texts if a is not None and a.strip()]


def to_sample(row: dict, image, task_prompt: str, *, require_answer: bool = True,
              clean_questions: bool = False, name: str = "docvqa") -> Sample:
    """One DocVQA row → Sample. ``image`` is the already-opened RGB page (or None for text-only use). Its
    answer is judged by ANLS, or by the row's own ``metric`` (tasks.ANSWER_METRICS); its scores are reported
    under its ``source``, or the dataset's ``name``."""
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BadSample("no_question")
    if clean_questions:
        question = clean_question(question)
    answers = valid_answers(row["answers"] if row.get("answers") is not None else row.get("answer"))
    if require_answer and not answers:
        raise BadSample("no_answer")
    question_types = row.get("question_types") or []
    meta = {
        "question": question,
        "question_type": "/".join(question_types) if question_types else "unknown",
        "doc_id": row.get("docId"),
        **judged(row, name),
    }
    return Sample(
        id=str(row.get("questionId") if row.get("questionId") is not None else row.get("id", "")),
        image=image,
        prompt=task_prompt + question.strip(),
        target=answers[0] if answers else "",
        references=answers,
        meta=meta,
    )


def judged(row: dict, name: str) -> dict[str, str]:
    """How a question's answer is judged: ``metric`` (the row's own, tasks.ANSWER_METRICS, else ANLS) and the
    ``dataset`` its scores are reported under (the row's ``source``, else the dataset's name)."""
    metric = row.get("metric") or "anls"
    if metric not in tasks.ANSWER_METRICS:
        raise BadSample("unknown_metric")
    return {"dataset": row.get("source") or name, "metric": metric}


@dataclass(frozen=True)
class Adapter:
    """DocVQA-shaped rows: one question per row, one page image in ``image``."""

    task_prompt: str
    require_answer: bool = True
    clean_questions: bool = False
    root: str | None = None  # the dataset folder that relative image paths are read against (see rows.rooted)
    name: str = "docvqa"  # the dataset, as the spec names it: scores are reported per source
    image_columns: tuple[str, ...] = ("image",)

    def drafts(self, row: dict[str, Any]) -> list[Item]:
        try:
            return [to_sample(row, None, self.task_prompt, require_answer=self.require_answer,
                              clean_questions=self.clean_questions, name=self.name)]
        except BadSample as exc:
            return [Skipped(exc.reason)]

    def samples_per_row(self, rows) -> None:
        """Every row is one question: one sample."""
        return None

    def image(self, row: dict[str, Any], draft: int | None = None):
        return single_image(row, draft, self.root)


"""Adapter for the ``images``/``texts`` schema of ``HuggingFaceM4/the_cauldron`` and ``HuggingFaceM4/Docmatix``.

Each row holds a list of images and a conversation, ``texts`` = ``[{user, assistant, source}, ...]``.
Every user/assistant turn becomes one sample on that row's image (the user text is the question,
the assistant text the answer). A row with several images is either tiled into one sheet
(``multi_image="tile"``, counted as ``tiled_images``) or skipped (``"skip"``, counted as
``skipped_multi_image``). Both sources publish only a ``train`` split; data/sources.py holds out a
slice of each configuration for validation.

    florence-tune train --dataset cauldron:chartqa,ai2d --max-steps 1000 --streaming
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from florence_tune.data.images import open_image, tile
from florence_tune.data.rows import BadSample, Item, as_text, fingerprint, rooted
from florence_tune.data.sample import Sample, Skipped

CAULDRON_ID = "HuggingFaceM4/the_cauldron"
# Every configuration of the Cauldron (its hub card lists these 50); "cauldron" alone means all of them.
CAULDRON_CONFIGS = (
    "ai2d", "aokvqa", "chart2text", "chartqa", "clevr", "clevr_math", "cocoqa", "datikz",
    "diagram_image_to_text", "docvqa", "dvqa", "figureqa", "finqa", "geomverse", "hateful_memes", "hitab",
    "iam", "iconqa", "infographic_vqa", "intergps", "localized_narratives", "mapqa", "mimic_cgd",
    "multihiertt", "nlvr2", "ocrvqa", "okvqa", "plotqa", "raven", "rendered_text", "robut_sqa",
    "robut_wikisql", "robut_wtq", "scienceqa", "screen2words", "spot_the_diff", "st_vqa", "tabmwp",
    "tallyqa", "tat_qa", "textcaps", "textvqa", "tqa", "vistext", "visual7w", "visualmrc", "vqarad",
    "vqav2", "vsr", "websight",
)
# The metric each configuration's benchmark publishes (tasks.ANSWER_METRICS); the others are scored with ANLS.
METRICS = {
    **dict.fromkeys(("chartqa", "plotqa"), "relaxed_accuracy"),  # ChartQA's and PlotQA's relaxed accuracy
    **dict.fromkeys(("vqav2", "textvqa", "okvqa"), "vqa_accuracy"),  # VQA accuracy (the ten-answer formula)
    **dict.fromkeys(("ai2d", "scienceqa", "tqa", "aokvqa", "visual7w"), "multiple_choice_accuracy"),
    **dict.fromkeys(("docvqa", "infographic_vqa", "st_vqa"), "anls"),  # the Robust Reading Competition's ANLS
    **dict.fromkeys(("cocoqa", "clevr", "clevr_math", "tallyqa", "figureqa", "dvqa", "ocrvqa", "vsr", "nlvr2"),
                    "exact_match"),  # accuracy: one short answer, matched exactly
}
DOCMATIX_ID = "HuggingFaceM4/Docmatix"
DOCMATIX_CONFIGS = ("images",)  # its "pdf" configuration holds raw PDFs, which we do not render
COLUMNS = ("images", "texts")


@dataclass(frozen=True)
class Adapter:
    """Cauldron/Docmatix rows: one sample per conversation turn, all on the row's image."""

    name: str  # the configuration ("chartqa"); it groups the scores like DocVQA's question types
    task_prompt: str
    multi_image: str = "tile"
    root: str | None = None  # the dataset folder that relative image paths are read against (see rows.rooted)
    image_columns: tuple[str, ...] = ("images",)

    def drafts(self, row: dict[str, Any]) -> list[Item]:
        turns = row.get("texts")
        if not isinstance(turns, list) or not turns:
            return [Skipped("no_turns")]
        row_id = fingerprint(row, self.image_columns)
        return [self._draft(turn, f"{self.name}/{row_id}/{number}") for number, turn in enumerate(turns)]

    def _draft(self, turn: Any, sample_id: str) -> Item:
        turn = turn if isinstance(turn, dict) else {}
        question, answer = as_text(turn.get("user")), as_text(turn.get("assistant"))
        if not question or not question.strip():
            return Skipped("no_question")
        if not answer or not answer.strip():
            return Skipped("no_answer")
        meta = {"question": question.strip(), "question_type": self.name, "source": turn.get("source"),
                "dataset": self.name, "metric": METRICS.get(self.name, "anls")}
        return Sample(id=sample_id, image=None, prompt=self.task_prompt + question.strip(),
                      target=answer.strip(), references=[answer.strip()], meta=meta)

    def samples_per_row(self, rows) -> np.ndarray:
        """How many samples each row of an Arrow-formatted table gives: its turns (``samples_per_row``)."""
        return samples_per_row(rows.select_columns(["texts"])[:])  # an Arrow view of the memory-mapped column

    def image(self, row: dict[str, Any], draft: int | None = None):
        """The row's page; several pages are tiled (or the row skipped). ``draft`` is not used: tiling
        wants every page at full size."""
        images = [rooted(image, self.root) for image in row.get("images") or [] if image is not None]
        if not images:
            raise BadSample("no_image")
        if len(images) == 1:
            return open_image(images[0]), ()
        if self.multi_image == "skip":
            raise BadSample("multi_image")
        return tile([open_image(image) for image in images]), ("tiled_images",)


def samples_per_row(table) -> np.ndarray:
    """How many samples each row of an Arrow table gives (its turns; 1 for a row without any, which
    becomes one ``Skipped``), read from the list offsets without touching images or strings."""
    import pyarrow.compute as pc

    lengths = pc.fill_null(pc.list_value_length(table.column("texts")), 0)
    return np.maximum(lengths.to_numpy(zero_copy_only=False), 1)

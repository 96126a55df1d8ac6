"""``DataOptions``: how a dataset spec becomes samples, passed as one value from a command to ``data.load``."""

from __future__ import annotations

from dataclasses import dataclass

from florence_tune.config import DataSettings, TaskSettings


@dataclass(frozen=True)
class DataOptions:
    """Defaults are the settings' own (config.py), written once there.

    ``limit``: at most this many samples (0: all). ``shuffle``/``seed`` order a stream (a map-style
    dataset is shuffled by the Trainer's sampler instead). ``holdout_rows``: rows of a source without a
    validation split that serve as its validation split (and are left out of its train split).
    ``require_answer``: rows without an answer are skipped (off for predict-only splits).
    """

    task_prompt: str = TaskSettings.task_prompt
    require_answer: bool = True
    clean_questions: bool = DataSettings.clean_questions
    multi_image: str = DataSettings.multi_image
    holdout_rows: int = DataSettings.holdout_rows
    streaming: bool = DataSettings.streaming
    limit: int = 0
    shuffle: bool = False
    seed: int = 0

"""Trainer reports: typed events for a front, and the JSONL metrics log.

The trainer calls ``on_event(event)`` on its own thread with one of the event
types below. A GUI should hand the event to its own thread before touching
widgets.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StepEvent:
    """One optimizer step finished (or was skipped because its loss or gradient was not finite)."""

    step: int  # 1-based optimizer step over the whole run
    total_steps: int
    epoch: int  # 0-based pass over the training pairs that this step belongs to
    loss: float  # mean teacher-forced loss of the step's documents, nats per summary token; NaN when skipped
    learning_rate: float  # rate the step was taken with
    tokens: int  # document tokens encoded in this step, special tokens included
    summary_tokens: int  # label tokens the loss was computed over
    seconds: float  # wall time of the step
    skipped: bool = False


@dataclass(frozen=True)
class EvaluationExample:
    """One validation pair with the summary the model generated for it."""

    source: str  # where the pair came from, as Pair.source
    document_excerpt: str  # the first characters of the document
    reference: str
    generated: str
    score: float  # the pair's own value of the best metric


@dataclass(frozen=True)
class EvaluationEvent:
    """An evaluation on the validation pairs finished."""

    step: int
    metrics: dict[str, float]  # "loss" (teacher-forced, nats per token) and the metric function's keys
    is_best: bool  # this evaluation improved the best metric, so best/ now contains this step's model
    best_examples: list[EvaluationExample] = field(default_factory=list)  # highest-scoring pairs first
    worst_examples: list[EvaluationExample] = field(default_factory=list)  # lowest-scoring pairs first


@dataclass(frozen=True)
class CheckpointEvent:
    """A checkpoint was written completely and renamed into place."""

    step: int
    path: Path  # checkpoints/step-NNNNNN, best/ or last/
    kind: str  # "step", "best" or "last"


@dataclass(frozen=True)
class FinishedEvent:
    """The run ended without an error: finished, stopped early or cancelled, as ``result`` records."""

    result: "TrainingResult"


@dataclass(frozen=True)
class TrainingResult:
    """The outcome of a run and the folders of its models."""

    steps: int  # optimizer steps completed over the whole run, resumed ones included
    total_steps: int
    cancelled: bool
    stopped_early: bool  # patience ran out
    skipped_steps: int  # steps dropped for a non-finite loss or gradient
    best_step: int | None  # None when no evaluation ran
    best_value: float | None
    best_dir: Path | None
    last_dir: Path | None
    output_dir: Path


TrainingEvent = StepEvent | EvaluationEvent | CheckpointEvent | FinishedEvent


def _finite_or_none(value):
    # JSON has no NaN or infinity; a skipped step logs its loss as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    return value


class MetricsLog:
    """``metrics.jsonl`` of a run: one JSON object per line, flushed at once so a GUI can tail it.

    Step rows are ``{"step", "epoch", "loss", "learning_rate", "tokens",
    "summary_tokens", "seconds", "grad_norm", "skipped"}``; evaluation rows are
    ``{"step", "eval": {"loss", ...metrics}}``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop every row of a step after ``step``, so a resumed run never repeats a row."""
        if not self.path.exists():
            return
        rows_kept = []
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if row.get("step", 0) <= step:
                    rows_kept.append(line.rstrip("\n") + "\n")
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as stream:
            stream.writelines(rows_kept)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, self.path)

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(_finite_or_none(row)) + "\n")
            stream.flush()

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]

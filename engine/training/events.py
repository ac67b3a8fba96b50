"""Trainer reports: typed events for a front, and the JSONL metrics log.

The trainer calls ``on_event(event)`` on its own thread with one of the event
types below. A GUI should hand the event to its own thread before touching
widgets.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..files import copy_aside, write_bytes_atomic

log = logging.getLogger(__name__)


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


def _metrics_row(line: bytes) -> dict | None:
    """Return the row a metrics line contains, or None when the line is not a row with an integer step."""
    try:
        row = json.loads(line.decode("utf-8"))
    except ValueError:  # invalid UTF-8 or invalid JSON, such as a line cut short by a crash
        return None
    if not isinstance(row, dict):
        return None
    step = row.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool):
        return None
    return row


def _step_at_most(line: bytes, step: int) -> bool:
    # An unreadable line is kept: it is still there only when it could not be copied aside.
    row = _metrics_row(line)
    return row is None or row.get("step", 0) <= step


def _describe_lines(numbers: list[int]) -> str:
    shown = ", ".join(str(number) for number in numbers[:5])
    more = f" and {len(numbers) - 5} more" if len(numbers) > 5 else ""
    return f"line{'s' if len(numbers) > 1 else ''} {shown}{more}"


class MetricsLog:
    """``metrics.jsonl`` of a run: one JSON object per line, flushed at once so a GUI can tail it.

    Step rows are ``{"step", "epoch", "loss", "learning_rate", "tokens",
    "summary_tokens", "seconds", "grad_norm", "skipped"}``; evaluation rows are
    ``{"step", "eval": {"loss", ...metrics}}``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> str | None:
        """Drop every row of a step after ``step``, so a resumed run never repeats a row.

        Unreadable lines are dropped too, as :meth:`remove_unreadable_lines`
        drops them. Returns that method's message for the user, or None.
        """
        notice = self.remove_unreadable_lines()
        if not self.path.exists():
            return notice
        original = self.path.read_bytes()
        kept = [line for line in original.splitlines() if line.strip() and _step_at_most(line, step)]
        # Every kept line ends with a newline, so the next append starts a line of its own.
        content = b"".join(line + b"\n" for line in kept)
        if content != original:
            write_bytes_atomic(self.path, content)
        return notice

    def remove_unreadable_lines(self) -> str | None:
        """Rewrite the file without the lines that are not rows, keeping a copy of it as it was.

        A line is unreadable when it is not UTF-8, not JSON, not a JSON object
        or has a step that is not an integer: a line cut short by a crash, or
        a bad hand edit. The file is copied to ``metrics.jsonl.corrupt-<date>``
        before it is rewritten. If the copy fails, the file is left as it is,
        since readers skip such lines. Returns a message for the user when
        lines were removed or could not be removed, else None. Blank lines
        are dropped without a message.
        """
        if not self.path.exists():
            return None
        lines = self.path.read_bytes().splitlines(keepends=True)
        unreadable = [number for number, line in enumerate(lines, start=1) if line.strip() and _metrics_row(line) is None]
        if not unreadable:
            return None
        where = f"{_describe_lines(unreadable)} of {self.path}"
        try:
            kept = copy_aside(self.path)
        except OSError as error:
            log.error("unreadable %s left in place: the file could not be copied aside: %s", where, error)
            return (
                f"Could not remove the unreadable {where}, because a copy of the file could not be "
                f"written ({error}). Readers skip such lines."
            )
        readable = [line.rstrip(b"\r\n") + b"\n" for line in lines if _metrics_row(line) is not None]
        write_bytes_atomic(self.path, b"".join(readable))
        log.warning("removed unreadable %s; the file as it was is kept as %s", where, kept)
        return f"removed unreadable {where}. The file as it was is kept as {kept}."

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(_finite_or_none(row)) + "\n")
            stream.flush()

    def rows(self) -> list[dict]:
        """Return the readable rows, skipping lines :meth:`remove_unreadable_lines` would remove."""
        if not self.path.exists():
            return []
        rows = (_metrics_row(line) for line in self.path.read_bytes().splitlines() if line.strip())
        return [row for row in rows if row is not None]

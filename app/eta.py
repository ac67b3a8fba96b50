"""Elapsed time and an estimate of the time left, from work units done so far."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

UNIT_VERBS = {"pages": "Reading", "windows": "Encoding", "tokens": "Generating"}


def format_duration(seconds: float) -> str:
    """Return ``m:ss`` or ``h:mm:ss``."""
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes}:{seconds:02d}"


@dataclass
class StageClock:
    """Tracks one job: when it started, and the rate of its current stage.

    The estimate assumes the rest of the stage runs at the rate seen so far. For
    generation the total is the maximum number of tokens, and decoding may end
    earlier, so that estimate is for the longest possible summary.
    """

    started: float = field(default_factory=time.monotonic)
    unit: str | None = None
    stage_started: float = 0.0
    done: int = 0
    total: int = 0

    def update(self, done: int, total: int, unit: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.unit is None:
            # Time spent waiting in the queue is not this document's work.
            self.started = now
        if unit != self.unit:
            self.unit = unit
            self.stage_started = now
        self.done = done
        self.total = total

    def elapsed(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return now - self.started

    def remaining(self, now: float | None = None) -> float | None:
        """Return the estimated seconds left in the current stage, or None before the first unit is done."""
        now = time.monotonic() if now is None else now
        if self.unit is None or self.done <= 0 or self.total <= 0:
            return None
        rate = self.done / max(now - self.stage_started, 1e-6)
        return max(self.total - self.done, 0) / rate

    def describe(self, now: float | None = None) -> str:
        """Return e.g. 'Encoding 12 of 135 windows · 0:04 elapsed · about 0:41 left'."""
        now = time.monotonic() if now is None else now
        parts = []
        if self.unit is not None:
            verb = UNIT_VERBS.get(self.unit, self.unit.capitalize())
            at_most = "at most " if self.unit == "tokens" else ""
            parts.append(f"{verb} {self.done:,} of {at_most}{self.total:,} {self.unit}")
        parts.append(f"{format_duration(self.elapsed(now))} elapsed")
        left = self.remaining(now)
        if left is not None and self.done < self.total:
            prefix = "up to about" if self.unit == "tokens" else "about"
            parts.append(f"{prefix} {format_duration(left)} left")
        return " · ".join(parts)

"""Progress reporting and cooperative cancellation for long engine calls.

Every long call takes ``progress(done, total, unit)`` in work units (windows
encoded, tokens generated, optimizer steps) and a :class:`CancellationToken`
that it checks between units. An ETA derived from the reports is then honest,
and a cancel takes effect within one unit of work.
"""

from __future__ import annotations

import threading
from typing import Callable, Protocol

from .errors import Cancelled


class ProgressCallback(Protocol):
    def __call__(self, done: int, total: int, unit: str) -> None: ...


def ignore_progress(done: int, total: int, unit: str) -> None:
    """Progress callback for callers that do not report progress."""


class CancellationToken:
    """A thread-safe flag a front sets and the engine polls."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


ProgressFn = Callable[[int, int, str], None]

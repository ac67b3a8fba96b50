"""The document type every reader produces."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class PageSpan:
    """Characters ``text[start:end]`` of a document came from page ``page`` (1-based)."""

    page: int
    start: int
    end: int


@dataclass(frozen=True)
class Heading:
    """A section heading at character offset ``start``; ``level`` 1 is the top."""

    level: int
    title: str
    start: int


@dataclass
class Document:
    """The text of one file, with where each part came from.

    ``pages`` covers ``text`` in order without overlap; it is empty for formats
    without pages (plain text). For .docx, pages come from the page breaks Word
    recorded when it last laid the file out, so they are approximate and
    ``pages_approximate`` is true.
    """

    path: Path
    format: str  # "pdf", "docx", "txt" or "md"
    text: str
    pages: list[PageSpan] = field(default_factory=list)
    headings: list[Heading] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    page_count: int | None = None
    pages_approximate: bool = False

    @property
    def characters(self) -> int:
        return len(self.text)

    @property
    def words(self) -> int:
        return len(self.text.split())

    def page_at(self, offset: int) -> int | None:
        """Return the 1-based page holding character ``offset``, or None without pages."""
        if not self.pages:
            return None
        starts = [span.start for span in self.pages]
        index = max(bisect.bisect_right(starts, offset) - 1, 0)
        return self.pages[index].page

    def page_range(self, start: int, end: int) -> tuple[int, int] | None:
        """Return the first and last page of characters ``[start, end)``."""
        if not self.pages:
            return None
        return self.page_at(start), self.page_at(max(start, end - 1))

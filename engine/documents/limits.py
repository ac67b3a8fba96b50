"""Safety limits applied while reading a document."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DocumentTooLargeError

RAISE_HINT = "raise the limit in Settings or on the command line"


@dataclass(frozen=True)
class DocumentLimits:
    """Maximum sizes a document may have before reading stops.

    The defaults admit the longest real documents we expect (books, manuals)
    while stopping files built to exhaust memory, such as zip bombs.
    """

    max_pages: int = 5000
    max_characters: int = 20_000_000
    max_archive_bytes: int = 500_000_000
    """Total uncompressed size of all members of a .docx archive, in bytes."""
    max_archive_members: int = 10_000
    max_compression_ratio: float = 200.0
    """Maximum uncompressed/compressed size ratio of one archive member."""
    ratio_check_min_bytes: int = 1_000_000
    """Members smaller than this (uncompressed) skip the ratio check, because
    small runs of repeated bytes compress far beyond any sane ratio but cannot
    exhaust memory."""


def too_large(path: Path, quantity: str, value: int | float, limit: int | float, name: str) -> DocumentTooLargeError:
    """Build the error for a document that exceeds limit ``name``."""
    return DocumentTooLargeError(
        path,
        f"{quantity} ({value:,}) exceeds the safety limit {name}={limit:,}; "
        f"if you trust this file, {RAISE_HINT}.",
    )


def check_pages(path: Path, pages: int, limits: DocumentLimits) -> None:
    if pages > limits.max_pages:
        raise too_large(path, "the page count", pages, limits.max_pages, "max_pages")


def check_characters(path: Path, characters: int, limits: DocumentLimits) -> None:
    if characters > limits.max_characters:
        raise too_large(
            path, "the text length in characters", characters, limits.max_characters, "max_characters"
        )

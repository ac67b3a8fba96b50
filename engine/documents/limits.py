"""Safety limits applied while reading a document.

Four limits are user settings, each with a command-line flag and a field in
the window's Preferences (see ``USER_LIMITS``): pages, characters, tokens of
the model's input and reading time. The archive limits guard against zip
bombs in .docx files and are fixed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import DocumentTooLargeError


@dataclass(frozen=True)
class DocumentLimits:
    """Maximum sizes a document may have before reading stops.

    The defaults admit the longest real documents we expect (books, manuals)
    while stopping files built to exhaust memory, such as zip bombs.
    """

    max_pages: int = 5000
    max_characters: int = 20_000_000
    max_input_tokens: int = 1_000_000
    """Tokens of the whole document as the model's tokenizer cuts it. The
    decoder's cross-attention over the fused memory takes about 46 KB per input
    token at the BART-base size (measured on CPU in float32), so the default
    already needs about 46 GB."""
    max_read_seconds: float = 600.0
    """Wall-clock time to extract the text of one file, checked between pages
    (PDF) and between paragraphs and tables (.docx)."""
    max_archive_bytes: int = 500_000_000
    """Total uncompressed size of all members of a .docx archive, in bytes."""
    max_archive_members: int = 10_000
    max_compression_ratio: float = 200.0
    """Maximum uncompressed/compressed size ratio of one archive member."""
    ratio_check_min_bytes: int = 1_000_000
    """Members smaller than this (uncompressed) skip the ratio check, because
    small runs of repeated bytes compress far beyond any sane ratio but cannot
    exhaust memory."""


@dataclass(frozen=True)
class LimitSetting:
    """The command-line flag, Preferences field, unit and help text of one user limit."""

    flag: str
    label: str
    unit: str
    description: str


USER_LIMITS = {
    "max_pages": LimitSetting("--max-pages", "Maximum pages", "pages", "pages of one PDF"),
    "max_characters": LimitSetting(
        "--max-chars", "Maximum characters", "characters", "characters of text extracted from one document"
    ),
    "max_input_tokens": LimitSetting(
        "--max-input-tokens",
        "Maximum input tokens",
        "tokens",
        "tokens of one document as the model's tokenizer cuts it, checked before encoding",
    ),
    "max_read_seconds": LimitSetting(
        "--max-read-seconds", "Maximum reading time", "seconds", "seconds spent extracting the text of one file"
    ),
}
PREFERENCES_MENU = "Settings > Preferences"


def raise_hint(name: str) -> str:
    """Return the advice on raising limit ``name`` on the command line and in the window."""
    setting = USER_LIMITS.get(name)
    if setting is None:
        return (
            "This limit protects against zip bombs and cannot be changed. If the file is genuine, "
            "save it as PDF in Word and summarize the PDF."
        )
    return (
        f"If you trust this document, raise the limit: {setting.flag} on the command line, "
        f"or '{setting.label}' in {PREFERENCES_MENU}."
    )


def format_number(value: int | float) -> str:
    """Return ``value`` with thousands separators and at most two decimals: 20,000,000 or 0.05."""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{int(value):,}"


def exceeded_reason(quantity: str, value: int | float, limit: int | float, name: str, complete: bool = True) -> str:
    """Return why a document is over limit ``name``, in the user's terms, without the file name.

    For example: "the page count (14) exceeds the limit of 5 pages. If you
    trust this document, raise the limit: --max-pages on the command line,
    or 'Maximum pages' in Settings > Preferences."

    ``complete`` is False when ``value`` was counted while reading was still
    going on. The whole document then has at least ``value``, and the
    message shows it as a lower bound, because a limit raised just above
    ``value`` may still be too low.
    """
    unit = USER_LIMITS[name].unit if name in USER_LIMITS else ""
    if limit == 1:
        unit = unit.removesuffix("s")  # every unit in USER_LIMITS is a plural in -s
    limit_text = f"{format_number(limit)} {unit}".rstrip()
    found = format_number(value) if complete else f"at least {format_number(value)}, reading stopped there"
    reason = f"{quantity} ({found}) exceeds the limit of {limit_text}."
    if not complete:
        reason += " The whole document has more, so raise the limit well above that number."
    return f"{reason} {raise_hint(name)}"


TOKEN_COUNT = "the document's token count"


def input_tokens_reason(tokens: int, limit: int) -> str:
    """Return why a document of ``tokens`` tokens is over the ``max_input_tokens`` limit ``limit``.

    The training pre-flight check shows this beside each rejected pair, and
    :func:`check_input_tokens` puts the same words after the file name.
    """
    return exceeded_reason(TOKEN_COUNT, tokens, limit, "max_input_tokens")


def too_large(
    path: Path, quantity: str, value: int | float, limit: int | float, name: str, complete: bool = True
) -> DocumentTooLargeError:
    """Build the error for a document whose ``quantity`` (the value found) exceeds limit ``name``.

    ``complete`` is as for :func:`exceeded_reason`. The error carries
    ``limit_name``, ``value``, ``value_complete`` and ``limit`` for callers
    that show the limit in their own words.
    """
    error = DocumentTooLargeError(path, exceeded_reason(quantity, value, limit, name, complete))
    error.limit_name = name
    error.value = value
    error.value_complete = complete
    error.limit = limit
    return error


def check_pages(path: Path, pages: int, limits: DocumentLimits) -> None:
    if pages > limits.max_pages:
        raise too_large(path, "the page count", pages, limits.max_pages, "max_pages")


def check_characters(path: Path, characters: int, limits: DocumentLimits, complete: bool = True) -> None:
    """Raise when ``characters`` exceeds ``limits.max_characters``.

    Pass ``complete=False`` while the text is still being read, so the
    message shows ``characters`` as a lower bound.
    """
    if characters > limits.max_characters:
        raise too_large(
            path, "the character count", characters, limits.max_characters, "max_characters", complete
        )


def check_input_tokens(path: Path, tokens: int, limits: DocumentLimits) -> None:
    """Raise when the document cuts into more tokens than ``limits.max_input_tokens``, before any is encoded."""
    if tokens > limits.max_input_tokens:
        raise too_large(path, TOKEN_COUNT, tokens, limits.max_input_tokens, "max_input_tokens")


class ReadingClock:
    """Wall-clock time since a reader started on ``path``, checked against ``max_read_seconds``.

    Readers call :meth:`check` between pages or blocks, so one slow page or
    block can overrun the limit by its own reading time.

    NOTE: steps that run as one library call are not interrupted: PDFium's
    opening of a PDF and python-docx's parsing of the whole .docx XML. The
    first check after such a step stops the read.
    """

    def __init__(self, path: Path, limits: DocumentLimits) -> None:
        self.path = path
        self.limit = limits.max_read_seconds
        self.started = time.monotonic()

    def check(self) -> None:
        elapsed = time.monotonic() - self.started
        if elapsed > self.limit:
            # Rounded up, so the message never shows a time equal to the limit.
            shown = math.ceil(elapsed * 100) / 100
            raise too_large(self.path, "the reading time", shown, self.limit, "max_read_seconds", complete=False)

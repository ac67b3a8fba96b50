"""Plain text (.txt) and Markdown (.md) reader."""

from __future__ import annotations

import codecs
import logging
import re
from pathlib import Path

from ..errors import ContentMismatchError, EmptyDocumentError
from .cleanup import normalize_characters
from .limits import DocumentLimits, ReadingClock, check_characters, too_large
from .model import Document, Heading
from .sniff import DESCRIPTIONS, Kind, sniff_bytes

logger = logging.getLogger(__name__)

BYTES_PER_CHARACTER = 4
"""UTF-8 needs at most 4 bytes a character, so a file larger than
``max_characters * 4`` bytes exceeds the character limit whatever it holds."""

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def decode_text(data: bytes) -> tuple[str, str | None]:
    """Decode ``data``; return the text and a warning when a fallback encoding was used.

    The order is UTF-8 (with or without a byte order mark), UTF-16 with a byte
    order mark, then Windows-1252, then Latin-1, which decodes any bytes.
    """
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace"), None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace"), None
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    for encoding, label in (("cp1252", "Windows-1252"), ("latin-1", "Latin-1")):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text, f"the file is not valid UTF-8, so it was read as {label}; some characters may be wrong."
    raise AssertionError("Latin-1 decodes every byte sequence")


def markdown_headings(text: str) -> list[Heading]:
    """Return the ATX headings (``# Title``) of Markdown ``text``, skipping fenced code."""
    headings: list[Heading] = []
    offset = 0
    in_fence = False
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            match = _ATX_HEADING.match(line.rstrip("\n"))
            if match:
                headings.append(Heading(level=len(match.group(1)), title=match.group(2).strip(), start=offset))
        offset += len(line)
    return headings


def load_text(path: Path, suffix_format: str, limits: DocumentLimits) -> Document:
    """Read a .txt or .md file; ``suffix_format`` is "txt" or "md"."""
    clock = ReadingClock(path, limits)
    size = path.stat().st_size
    if size > limits.max_characters * BYTES_PER_CHARACTER:
        least = -(-size // BYTES_PER_CHARACTER)
        raise too_large(path, "the least character count a file of this size holds", least, limits.max_characters, "max_characters")
    data = path.read_bytes()
    kind = sniff_bytes(data[:8192])
    if kind is Kind.EMPTY:
        raise EmptyDocumentError(path, "the file is empty (0 bytes); there is nothing to summarize.")
    if kind is not Kind.TEXT:
        hint = {
            Kind.PDF: " Rename it to .pdf.",
            Kind.ZIP: " If it is a Word document, rename it to .docx.",
            Kind.OLE: " If it is a Word 97-2003 document, open it in Word and save it as .docx.",
        }.get(kind, "")
        raise ContentMismatchError(
            path, f"the file has a text extension but its content looks like {DESCRIPTIONS[kind]}.{hint}"
        )

    text, warning = decode_text(data)
    text = normalize_characters(text).strip("\n")
    check_characters(path, len(text), limits)
    clock.check()
    if not text.strip():
        raise EmptyDocumentError(path, "the file contains only white space; there is nothing to summarize.")
    logger.info("%s: read %d characters", path.name, len(text))
    return Document(
        path=path,
        format=suffix_format,
        text=text,
        headings=markdown_headings(text) if suffix_format == "md" else [],
        warnings=[warning] if warning else [],
    )

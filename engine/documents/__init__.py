"""Document readers: PDF, Word .docx, plain text and Markdown.

:func:`load_document` checks that a file's content matches its extension,
then hands it to the reader for its format. Every failure is a
:class:`~synopsis.engine.errors.DocumentError` subclass whose message names
the file, what is wrong and what to do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import (
    ContentMismatchError,
    CorruptedDocumentError,
    DocumentError,
    EmptyDocumentError,
    EncryptedDocxError,
    LegacyDocError,
    UnsupportedFormatError,
)
from ..progress import CancellationToken, ProgressFn
from .limits import DocumentLimits
from .model import Document, Heading, PageSpan
from .sniff import DESCRIPTIONS, Kind, sniff_file

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Document",
    "DocumentLimits",
    "Heading",
    "PageSpan",
    "load_document",
]

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".pdf", ".docx", ".txt", ".md")
_SUPPORTED_LIST = "PDF (.pdf), Word (.docx), plain text (.txt) and Markdown (.md)"
_RENAME_HINTS = {
    Kind.PDF: "It looks like a PDF; rename it to .pdf.",
    Kind.ZIP: "It looks like a zip archive; if it is a Word document, rename it to .docx.",
    Kind.OLE: "It looks like an older Office file; if it is a Word document, save it as .docx in Word.",
    Kind.TEXT: "It looks like plain text; rename it to .txt.",
}


def load_document(
    path: str | os.PathLike[str],
    password: str | None = None,
    limits: DocumentLimits | None = None,
    progress: ProgressFn | None = None,
    cancel: CancellationToken | None = None,
) -> Document:
    """Read the document at ``path`` and return its text with pages and headings.

    ``password`` opens an encrypted PDF. ``progress(done, total, "pages")`` is
    called as pages are read, and ``cancel`` is checked between pages. Raises a
    :class:`DocumentError` subclass when the file cannot be read.
    """
    path = Path(path)
    limits = limits if limits is not None else DocumentLimits()
    suffix = path.suffix.lower()
    kind = _sniff(path)

    if suffix == ".pdf":
        _expect(path, kind, Kind.PDF, "PDF")
        from .pdf import load_pdf

        return load_pdf(path, password, limits, progress, cancel)
    if suffix == ".docx":
        if kind is Kind.OLE:
            raise EncryptedDocxError(
                path,
                "password-protected Word file; remove the password in Word "
                "(File > Info > Protect Document) and save again.",
            )
        _expect(path, kind, Kind.ZIP, "Word .docx")
        from .docx import load_docx

        return load_docx(path, limits, progress, cancel)
    if suffix in (".txt", ".md"):
        from .text import load_text

        return load_text(path, suffix[1:], limits)
    if suffix == ".doc":
        if kind is Kind.ZIP:
            raise ContentMismatchError(path, "the file is named .doc but is a .docx (zip) file; rename it to .docx.")
        raise LegacyDocError(
            path, "Word 97-2003 .doc files are not supported; open it in Word and save it as .docx or PDF."
        )
    hint = _RENAME_HINTS.get(kind, "")
    raise UnsupportedFormatError(
        path,
        f"files of type '{suffix or 'without extension'}' are not supported; Synopsis reads {_SUPPORTED_LIST}. "
        f"{hint}".rstrip(),
    )


def _sniff(path: Path) -> Kind:
    try:
        if path.is_dir():
            raise DocumentError(path, "this is a folder, not a file; choose a document inside it.")
        return sniff_file(path)
    except FileNotFoundError as error:
        raise DocumentError(path, "file not found; check the path.") from error
    except PermissionError as error:
        raise DocumentError(path, "permission denied while opening the file; check its permissions.") from error


def _expect(path: Path, kind: Kind, expected: Kind, label: str) -> None:
    """Raise unless the sniffed ``kind`` is the ``expected`` one for the extension."""
    if kind is expected:
        return
    if kind is Kind.EMPTY:
        raise EmptyDocumentError(path, "the file is empty (0 bytes); there is nothing to summarize.")
    if kind is Kind.BINARY or (kind is Kind.TEXT and expected is Kind.PDF and _looks_binary(path)):
        raise CorruptedDocumentError(
            path, f"the file is not a valid {label} file (its first bytes do not match); get a fresh copy."
        )
    hint = _RENAME_HINTS.get(kind, "")
    raise ContentMismatchError(
        path, f"the file is named as a {label} file but its content looks like {DESCRIPTIONS[kind]}. {hint}".rstrip()
    )


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(1024)
    return any(byte < 9 or 13 < byte < 32 for byte in head)

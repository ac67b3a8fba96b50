"""Checks on a .docx zip archive made before any part of it is inflated or parsed.

python-docx reads every member of the archive into memory and parses the XML
parts. A hostile file could therefore exhaust memory in two ways. One is a
zip bomb, a small member that inflates to gigabytes. The other is an XML
entity bomb ("billion laughs"), entities that expand to each other. The central directory gives
each member's declared sizes without inflating anything, and Python's
zipfile never inflates a member past its declared size, so checking the
declared sizes bounds the memory used. OOXML parts never contain a document
type declaration, so any part that declares one is rejected unread.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

from ..errors import ContentMismatchError, CorruptedDocumentError
from .limits import DocumentLimits, too_large

MAIN_DOCUMENT = "word/document.xml"
DTD_SCAN_BYTES = 65_536
"""Bytes read from the start of each XML part when looking for a DTD; a DTD
must come before the root element, so it sits at the very start."""
_DTD = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)

ARCHIVE_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, UnicodeDecodeError)
"""Errors zipfile raises while reading a damaged archive.

* BadZipFile: a bad header or CRC.
* zlib.error: a corrupt deflate stream.
* EOFError: a member cut short.
* NotImplementedError: an unknown compression method, usually a damaged header.
* UnicodeDecodeError: a member name flagged as UTF-8 that is not valid UTF-8.
"""
_ENCRYPTED_FLAG = 0x1
"""General purpose bit 0 of a zip entry: the member is encrypted."""

# Main parts of other zip-based formats, for a helpful message.
_OTHER_FORMATS = (
    ("xl/workbook.xml", "an Excel workbook (.xlsx)"),
    ("ppt/presentation.xml", "a PowerPoint presentation (.pptx)"),
    ("content.xml", "an OpenDocument file (.odt, .ods or .odp)"),
    ("META-INF/container.xml", "an EPUB e-book"),
)


def check_docx_archive(path: Path, limits: DocumentLimits) -> None:
    """Raise unless ``path`` is a zip archive with a Word main part within ``limits``."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            _check_sizes(path, members, limits)
            _check_not_encrypted(path, members)
            names = {member.filename for member in members}
            if MAIN_DOCUMENT not in names:
                raise _not_word(path, names)
            _check_no_dtd(path, archive, members)
    except ARCHIVE_READ_ERRORS as error:
        raise CorruptedDocumentError(
            path, f"the .docx archive is truncated or damaged ({error}). Open it in Word and save it again."
        ) from error


def _check_sizes(path: Path, members: list[zipfile.ZipInfo], limits: DocumentLimits) -> None:
    if len(members) > limits.max_archive_members:
        raise too_large(
            path, "the number of archive members", len(members), limits.max_archive_members, "max_archive_members"
        )
    total = sum(member.file_size for member in members)
    if total > limits.max_archive_bytes:
        raise too_large(path, "the uncompressed size in bytes", total, limits.max_archive_bytes, "max_archive_bytes")
    for member in members:
        if member.file_size < limits.ratio_check_min_bytes:
            continue
        ratio = member.file_size / max(member.compress_size, 1)
        if ratio > limits.max_compression_ratio:
            raise too_large(
                path,
                f"the compression ratio of member {member.filename}",
                round(ratio),
                limits.max_compression_ratio,
                "max_compression_ratio",
            )


def _check_not_encrypted(path: Path, members: list[zipfile.ZipInfo]) -> None:
    # zipfile raises a bare RuntimeError when asked to read an encrypted member.
    # Word never encrypts zip members (a password-protected .docx is an OLE file).
    for member in members:
        if member.flag_bits & _ENCRYPTED_FLAG:
            raise CorruptedDocumentError(
                path,
                f"member {member.filename} of the .docx archive is marked as encrypted, which Word never writes; "
                "the file is damaged. Open it in Word and save it again.",
            )


def _not_word(path: Path, names: set[str]) -> Exception:
    for marker, description in _OTHER_FORMATS:
        if marker in names:
            return ContentMismatchError(
                path, f"the file is {description}, not a Word document; Synopsis reads .docx, .pdf, .txt and .md."
            )
    return CorruptedDocumentError(
        path, f"the zip archive has no {MAIN_DOCUMENT}, so it is not a Word document or it is damaged."
    )


def _check_no_dtd(path: Path, archive: zipfile.ZipFile, members: list[zipfile.ZipInfo]) -> None:
    for member in members:
        if not member.filename.endswith((".xml", ".rels")):
            continue
        with archive.open(member) as handle:
            head = handle.read(DTD_SCAN_BYTES)
        if _DTD.search(head):
            raise CorruptedDocumentError(
                path,
                f"part {member.filename} declares an XML document type (DTD), which Word never writes; "
                "it may be built to exhaust memory, so the file was not read.",
            )

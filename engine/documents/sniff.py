"""Detection of a file's real type from its first bytes (magic numbers)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

PDF_MAGIC = b"%PDF-"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

# PDF readers accept a header anywhere in the first 1024 bytes, after junk
# such as a mail header, so the sniffer looks that far too.
PDF_HEADER_WINDOW = 1024
SNIFF_BYTES = 8192


class Kind(Enum):
    EMPTY = "empty"
    PDF = "pdf"
    ZIP = "zip"
    OLE = "ole"
    TEXT = "text"
    BINARY = "binary"


DESCRIPTIONS = {
    Kind.EMPTY: "an empty file",
    Kind.PDF: "a PDF file",
    Kind.ZIP: "a zip archive (such as a Word .docx file)",
    Kind.OLE: "an older Microsoft Office file (such as a Word 97-2003 .doc)",
    Kind.TEXT: "a plain text file",
    Kind.BINARY: "a binary file",
}


def sniff_bytes(head: bytes) -> Kind:
    """Classify ``head``, the first bytes of a file."""
    if not head:
        return Kind.EMPTY
    if PDF_MAGIC in head[:PDF_HEADER_WINDOW]:
        return Kind.PDF
    if head.startswith(ZIP_MAGICS):
        return Kind.ZIP
    if head.startswith(OLE_MAGIC):
        return Kind.OLE
    if head.startswith(UTF16_BOMS):
        return Kind.TEXT
    if b"\x00" in head:
        return Kind.BINARY
    return Kind.TEXT


def sniff_file(path: Path) -> Kind:
    """Classify the file at ``path`` by reading its first bytes."""
    with open(path, "rb") as handle:
        return sniff_bytes(handle.read(SNIFF_BYTES))

"""Documents built to exhaust time or memory are rejected or read within bounds.

The zip bomb with a high compression ratio, the total-size and member-count
limits and the XML entity bomb are tested in test_documents_errors.py. These
tests add a PDF with thousands of empty pages and a .docx whose central
directory understates a member's size. Each of those loads in a fresh
subprocess that reports its peak resident memory (VmHWM, Linux only). They
also cover PDFs with pages that PDFium cannot load, and .docx packages with a
broken structure.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import docx
import pypdfium2 as pdfium
import pytest

from synopsis.engine.documents import load_document
from synopsis.engine.errors import CorruptedDocumentError

LOAD_TIMEOUT_S = 60
"""Time bound for one load. Each load here took at most about 1 s, interpreter
start included, on a shared 2-core machine, so the bound is generous."""
PEAK_MEMORY_LIMIT_MIB = 1024

LOADER = """
import json, sys
from synopsis.engine.documents import DocumentLimits, load_document
from synopsis.engine.errors import DocumentError

limits = DocumentLimits(**json.loads(sys.argv[2]))
try:
    document = load_document(sys.argv[1], limits=limits)
    result = {"outcome": "document", "characters": len(document.text), "pages": document.page_count}
except DocumentError as error:
    result = {"outcome": type(error).__name__, "message": str(error)}
try:
    with open("/proc/self/status") as status:
        result["peak_kib"] = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except OSError:
    result["peak_kib"] = None
print(json.dumps(result))
"""


def load_in_subprocess(path: Path, **limits) -> dict:
    """Load ``path`` in a fresh interpreter and return its outcome and peak memory."""
    completed = subprocess.run(
        [sys.executable, "-c", LOADER, str(path), json.dumps(limits)],
        capture_output=True,
        text=True,
        timeout=LOAD_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    if result["peak_kib"] is not None:
        assert result["peak_kib"] < PEAK_MEMORY_LIMIT_MIB * 1024, result
    return result


def empty_pages_pdf(path: Path, pages: int, text_page: int | None = None) -> Path:
    """Write a PDF of ``pages`` blank letter-size pages; page ``text_page`` (0-based) has a line of text."""
    blank = pdfium.PdfDocument.new()
    for _ in range(pages if text_page is None else pages - 1):
        blank.new_page(612, 792)
    if text_page is not None:
        text = pdfium.PdfDocument(str(_one_text_page(path.with_name("text.pdf"))))
        blank.import_pages(text, index=text_page)
        text.close()
    blank.save(str(path))
    blank.close()
    return path


TEXT_CONTENT = b"BT /F1 12 Tf 72 720 Td (Among thousands of blank pages, this one has text.) Tj ET"
TEXT_PAGE_OBJECTS = [
    b"<< /Type /Catalog /Pages 2 0 R >>",
    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
    b"/Resources << /Font << /F1 5 0 R >> >> >>",
    b"<< /Length %d >>\nstream\n%s\nendstream" % (len(TEXT_CONTENT), TEXT_CONTENT),
    b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
]


def _one_text_page(path: Path) -> Path:
    return hand_built_pdf(path, TEXT_PAGE_OBJECTS)


def hand_built_pdf(path: Path, objects: list[bytes]) -> Path:
    """Write a PDF whose objects 1, 2, ... are ``objects``, with a correct cross-reference table."""
    body = b"%PDF-1.4\n"
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n%s\nendobj\n" % (number, obj)
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(body)
    return path


def test_thousands_of_empty_pages_over_limit(tmp_path):
    path = empty_pages_pdf(tmp_path / "blank.pdf", 6000)
    result = load_in_subprocess(path)
    assert result["outcome"] == "DocumentTooLargeError"
    assert "the page count (6,000) exceeds the limit of 5,000 pages" in result["message"]


def test_thousands_of_empty_pages_under_limit(tmp_path):
    path = empty_pages_pdf(tmp_path / "blank.pdf", 4000)
    result = load_in_subprocess(path)
    assert result["outcome"] == "EmptyDocumentError"


def test_one_text_page_among_empty_pages(tmp_path):
    path = empty_pages_pdf(tmp_path / "mostly-blank.pdf", 4000, text_page=2500)
    result = load_in_subprocess(path)
    assert result["outcome"] == "document"
    assert result["pages"] == 4000
    assert result["characters"] > 20


def test_docx_understated_member_size(tmp_path):
    # A 50 MB member whose central directory entry claims 1,000 bytes: the
    # ratio check skips members under ratio_check_min_bytes, so only zipfile's
    # own size and CRC checks stop it from being inflated whole.
    path = tmp_path / "understated.docx"
    document = docx.Document()
    document.add_paragraph("Hello from a test document.")
    document.save(str(path))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document2.xml", b"<w:p/>" * (50_000_000 // 6))
    data = bytearray(path.read_bytes())
    entry = data.rfind(b"PK\x01\x02")  # the member added last has the last entry
    assert data[entry + 46 : entry + 46 + len(b"word/document2.xml")] == b"word/document2.xml"
    data[entry + 24 : entry + 28] = struct.pack("<I", 1000)  # uncompressed size field
    path.write_bytes(bytes(data))

    result = load_in_subprocess(path)
    assert result["outcome"] == "CorruptedDocumentError", result
    assert "Bad CRC-32" in result["message"]


def test_unloadable_page_skipped_with_warning(tmp_path):
    # Page 2 is an object PDFium cannot load as a page (its /Type is not /Page).
    objects = list(TEXT_PAGE_OBJECTS)
    objects[1] = b"<< /Type /Pages /Kids [3 0 R 6 0 R] /Count 2 >>"
    objects.append(b"<< /Type /Pagex /Parent 2 0 R >>")
    path = hand_built_pdf(tmp_path / "bad-page.pdf", objects)

    document = load_document(path)
    assert "this one has text" in document.text
    assert document.page_count == 2
    assert any("Page 2 could not be read" in warning for warning in document.warnings), document.warnings


def test_only_unloadable_pages_is_corrupted(tmp_path):
    objects = list(TEXT_PAGE_OBJECTS)
    objects[1] = b"<< /Type /Pages /Kids [6 0 R] /Count 1 >>"
    objects.append(b"<< /Type /Pagex /Parent 2 0 R >>")
    path = hand_built_pdf(tmp_path / "bad-page.pdf", objects)

    with pytest.raises(CorruptedDocumentError) as raised:
        load_document(path)
    assert "could not load page 1" in str(raised.value)


def _rewrite_member(source: Path, target: Path, member: str, change) -> Path:
    """Copy the .docx ``source`` to ``target`` with ``member``'s text passed through ``change``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = old.read(info.filename)
            if info.filename == member:
                data = change(data.decode("utf-8")).encode("utf-8")
            new.writestr(info.filename, data)
    return target


def _plain_docx(path: Path) -> Path:
    word = docx.Document()
    word.add_paragraph("A paragraph of the test document.")
    word.save(path)
    return path


def test_docx_relationship_without_target(tmp_path):
    # Found by fuzzing: python-docx raised TypeError for a relationship with no Target.
    source = _plain_docx(tmp_path / "plain.docx")
    broken = _rewrite_member(
        source, tmp_path / "broken.docx", "word/_rels/document.xml.rels",
        lambda xml: xml.replace('Target="styles.xml"', "", 1),
    )
    with pytest.raises(CorruptedDocumentError):
        load_document(broken)


def test_docx_unknown_content_type(tmp_path):
    # A main part of unknown content type, one of the package-structure faults fuzzing turned up.
    source = _plain_docx(tmp_path / "plain.docx")
    broken = _rewrite_member(
        source, tmp_path / "broken.docx", "[Content_Types].xml",
        lambda xml: xml.replace("wordprocessingml.document.main+xml", "unknown+xml", 1),
    )
    with pytest.raises(CorruptedDocumentError):
        load_document(broken)


def test_docx_main_part_replaced(tmp_path):
    # Found by fuzzing: another XML part renamed to word/document.xml has no body.
    source = _plain_docx(tmp_path / "plain.docx")
    with zipfile.ZipFile(source) as archive:
        styles = archive.read("word/styles.xml").decode("utf-8")
    broken = _rewrite_member(source, tmp_path / "broken.docx", "word/document.xml", lambda _xml: styles)
    with pytest.raises(CorruptedDocumentError, match="main part"):
        load_document(broken)

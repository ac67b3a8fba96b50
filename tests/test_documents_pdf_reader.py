"""The bulk PDF reader (pdf_words) and the per-page time limit.

The reader fetches a page's characters in one call and the boxes of the first
and last character of each word only. These tests compare it with a plain
reference that reads every character's box one at a time, on every page of
the corpus PDFs, and check the pages that PDFium's bulk text call does not
line up with.
"""

from __future__ import annotations

import ctypes
import math
import time
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest

from synopsis.engine.documents import DocumentLimits, load_document
from synopsis.engine.documents.pdf import PAGE_TIME_LIMIT, load_pdf
from synopsis.engine.documents.pdf_layout import SEGMENT_GAP, PageTimeout, layout_lines
from synopsis.engine.documents.pdf_words import page_characters, read_segments
from synopsis.engine.errors import DocumentError
from tests.test_documents_pathological import hand_built_pdf

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "documents"
IRS_MANUAL = "Unstructured-IO_unstructured__pdf2image-memory-error-test-400p.pdf"
IRS_INSTRUCTIONS = "pdfminer_pdfminer.six__i1040nr.pdf"

pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"document corpus not found at {CORPUS}; check out shared/ beside the repository"
)


def corpus_pdfs() -> list[str]:
    """Return the corpus PDFs that open without a password and have text."""
    if not CORPUS.is_dir():
        return []
    skipped = {"jsvine_pdfplumber__empty.pdf", "jsvine_pdfplumber__password-example.pdf", "ocrmypdf_OCRmyPDF__linn.pdf"}
    return sorted(path.name for path in CORPUS.glob("*.pdf") if path.name not in skipped)


def flat(text: str) -> str:
    return " ".join(text.split())


class TextPages:
    """Open each page of a PDF and its text page, closing both afterwards."""

    def __init__(self, path: Path) -> None:
        self.document = pdfium.PdfDocument(str(path))

    def __iter__(self):
        for index in range(len(self.document)):
            page = pdfium_c.FPDF_LoadPage(self.document.raw, index)
            textpage = pdfium_c.FPDFText_LoadPage(page)
            try:
                yield index, textpage
            finally:
                pdfium_c.FPDFText_ClosePage(textpage)
                pdfium_c.FPDF_ClosePage(page)

    def close(self) -> None:
        self.document.close()


# Reference: one PDFium call per character ----------------------------------------


def reference_rotation(textpage) -> int:
    """Return the clockwise turn that makes most characters upright, from every character's angle."""
    votes = [0, 0, 0, 0]
    for index in range(pdfium_c.FPDFText_CountChars(textpage)):
        code = pdfium_c.FPDFText_GetUnicode(textpage, index)
        angle = pdfium_c.FPDFText_GetCharAngle(textpage, index)
        if code and not chr(code).isspace() and angle >= 0:
            votes[round(math.degrees(angle) / 90) % 4] += 1
    return (4 - votes.index(max(votes))) % 4 * 90


def upright(box, rotation: int) -> tuple[float, float, float, float]:
    """Return x0, y0, x1, y1 of ``box`` turned clockwise by ``rotation`` degrees."""
    left, bottom, right, top = box.left, box.bottom, box.right, box.top
    return {
        0: (left, bottom, right, top),
        90: (bottom, -right, top, -left),
        180: (-right, -top, -left, -bottom),
        270: (-top, left, -bottom, right),
    }[rotation]


def reference_segment_texts(textpage) -> list[str]:
    """Return the segment texts found by reading every character's loose box, one call each.

    A character joins the open segment when it overlaps the segment's box
    vertically by half the smaller height and lies within SEGMENT_GAP
    heights of it horizontally.
    """
    rotation = reference_rotation(textpage)
    box = pdfium_c.FS_RECTF()
    segments: list[list[str]] = []
    current = None  # [x0, y0, x1, y1] of the open segment
    last_height = 0.0
    pending_space = False
    for index in range(pdfium_c.FPDFText_CountChars(textpage)):
        code = pdfium_c.FPDFText_GetUnicode(textpage, index)
        if code == 0 or 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        if char in "\r\n":
            current, pending_space = None, False
            continue
        if char.isspace():
            pending_space = current is not None
            continue
        if not pdfium_c.FPDFText_GetLooseCharBox(textpage, index, box):
            continue
        x0, y0, x1, y1 = upright(box, rotation)
        height = max(y1 - y0, 0.1)
        char = "-" if char in "\ufffe\x02" else char
        if current is not None:
            limit = SEGMENT_GAP * min(height, last_height)
            smaller = min(current[3] - current[1], y1 - y0)
            shared = max(0.0, min(current[3], y1) - max(current[1], y0))
            same_line = shared / smaller >= 0.5 if smaller > 0 else current[1] <= y0 <= current[3]
            if same_line and x0 - current[2] <= limit and current[0] - x1 <= limit:
                segments[-1].append(" " + char if pending_space else char)
                current = [min(current[0], x0), min(current[1], y0), max(current[2], x1), max(current[3], y1)]
                pending_space, last_height = False, height
                continue
        segments.append([char])
        current = [x0, y0, x1, y1]
        pending_space, last_height = False, height
    return ["".join(parts) for parts in segments]


# Bulk characters ------------------------------------------------------------------


@pytest.mark.parametrize("name", corpus_pdfs())
def test_bulk_characters_line_up(name: str) -> None:
    pages = TextPages(CORPUS / name)
    try:
        for index, textpage in pages:
            text = page_characters(textpage)
            count = pdfium_c.FPDFText_CountChars(textpage)
            expected = [pdfium_c.FPDFText_GetUnicode(textpage, i) for i in range(count)]
            assert len(text) == len(expected), f"page {index + 1}"
            # GetText writes a line-end hyphen as U+FFFE, GetUnicode as U+0002.
            mismatched = [
                i for i, code in enumerate(expected) if ord(text[i]) != code and (code, text[i]) != (2, "\ufffe")
            ]
            assert mismatched == [], f"page {index + 1}"
    finally:
        pages.close()


def test_bulk_text_dropping_characters_falls_back() -> None:
    # On these pages FPDFText_GetText leaves out control characters that
    # GetUnicode reports, so the bulk text would not line up.
    pages = TextPages(CORPUS / IRS_INSTRUCTIONS)
    try:
        for index, textpage in pages:
            if index not in (15, 16, 17, 18, 33):
                continue
            count = pdfium_c.FPDFText_CountChars(textpage)
            buffer = (ctypes.c_ushort * (count + 1))()
            assert pdfium_c.FPDFText_GetText(textpage, 0, count, buffer) < count + 1
            assert len(page_characters(textpage)) == count
    finally:
        pages.close()


# Segments against the reference ----------------------------------------------------

# The one corpus page where grouping by neighbouring words differs from
# grouping against the whole open segment: "2.3.59" starts the next line
# under "Manual Transmittal", far left of the word before it.
KNOWN_DIFFERENCES = {(IRS_MANUAL, 3)}


@pytest.mark.parametrize("name", corpus_pdfs())
def test_segments_match_reference(name: str) -> None:
    pages = TextPages(CORPUS / name)
    differing = set()
    try:
        for index, textpage in pages:
            segments = read_segments(textpage, page_characters(textpage))
            if [segment.text for segment in segments] != reference_segment_texts(textpage):
                differing.add((name, index + 1))
    finally:
        pages.close()
    assert differing <= KNOWN_DIFFERENCES


def test_gap_without_space_splits_word() -> None:
    # PDFium writes no space between some cells of this table ("3" and "0"
    # would read "30"); the reader measures such a wide word per character.
    text = load_document(CORPUS / "jsvine_pdfplumber__nics-background-checks-2015-11-rotated.pdf").text
    assert "Guam 0 100 55 12 3 0 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 171" in text
    assert "Hawaii 1,248 0 0 0 0 0 0 0 0 0 0 0 1 3 0 0 0 0 0 0 0 1,252" in text


def test_pages_without_bulk_text_keep_columns() -> None:
    # Page 16 is one of those read one character at a time; its columns must
    # still read in order.
    document = load_document(CORPUS / IRS_INSTRUCTIONS)
    text = flat(document.text)
    assert (
        "If, during 2007, you were an eligible trade adjustment assistance (TAA) recipient, alternative TAA "
        "recipient, or Pension Benefit Guaranty Corporation (PBGC) pension recipient, see the Note above."
    ) in text


# Page time limit -------------------------------------------------------------------

HUGE_PAGE_LINES = 8000
"""Lines of 40 words on the slow page: 1.6 million characters. PDFium took
0.9 s to parse them and the reader 1.4 s to read them on the 2-core
development machine, so a machine several times faster still needs longer
than SLOW_PAGE_LIMIT."""
SLOW_PAGE_LIMIT = 0.25
"""Seconds per page in the test: the small pages take about a millisecond."""


def three_page_pdf(path: Path, huge_page: bool) -> Path:
    """Write a PDF of three pages with a line of text each; with ``huge_page``, page 2 has 1.6 million characters."""
    small = b"BT /F1 12 Tf 72 720 Td (Page %d holds one short line of text.) Tj ET"
    line = b"(" + b"word " * 40 + b") Tj T*\n"
    huge = b"BT /F1 2 Tf 2 TL 10 780 Td\n" + line * HUGE_PAGE_LINES + b"ET"
    contents = [small % 1, huge if huge_page else small % 2, small % 3]
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R 4 0 R 5 0 R] /Count 3 >>",
    ]
    for number in range(3):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 9 0 R >> >> >>" % (6 + number)
        )
    objects += [b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content) for content in contents]
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return hand_built_pdf(path, objects)


def test_page_time_limit_default_is_generous() -> None:
    assert PAGE_TIME_LIMIT >= 5


def test_slow_page_skipped_with_warning(tmp_path: Path) -> None:
    path = three_page_pdf(tmp_path / "slow.pdf", huge_page=True)
    started = time.monotonic()
    document = load_pdf(path, None, DocumentLimits(), None, None, page_time_limit=SLOW_PAGE_LIMIT)
    assert document.page_count == 3
    assert "Page 1 holds one short line of text." in document.text
    assert "Page 3 holds one short line of text." in document.text
    assert "word" not in document.text
    assert len(document.warnings) == 1
    assert "slow.pdf" in document.warnings[0]
    assert "page 2 " in document.warnings[0]
    assert "0.25 s" in document.warnings[0]
    # PDFium's parse of the page cannot be cut short, but the reader stops at the limit.
    assert time.monotonic() - started < 30


def test_huge_page_read_within_wide_limit(tmp_path: Path) -> None:
    path = three_page_pdf(tmp_path / "huge.pdf", huge_page=True)
    document = load_pdf(path, None, DocumentLimits(), None, None, page_time_limit=600)
    assert document.warnings == []
    assert document.text.count("word") == 40 * HUGE_PAGE_LINES


def test_all_pages_slow_raises(tmp_path: Path) -> None:
    path = three_page_pdf(tmp_path / "small.pdf", huge_page=False)
    with pytest.raises(DocumentError) as raised:
        load_pdf(path, None, DocumentLimits(), None, None, page_time_limit=0.0)
    assert "small.pdf" in str(raised.value)
    assert "pages 1, 2, 3" in str(raised.value)
    assert "took longer than" in str(raised.value)


def test_read_segments_stops_at_deadline() -> None:
    pages = TextPages(CORPUS / IRS_MANUAL)
    try:
        for index, textpage in pages:
            if index == 20:
                text = page_characters(textpage)
                assert read_segments(textpage, text)
                with pytest.raises(PageTimeout):
                    read_segments(textpage, text, deadline=time.monotonic() - 1)
    finally:
        pages.close()


def test_layout_stops_at_deadline() -> None:
    pages = TextPages(CORPUS / IRS_MANUAL)
    try:
        for index, textpage in pages:
            if index == 20:
                segments = read_segments(textpage, page_characters(textpage))
                assert layout_lines(segments)
                with pytest.raises(PageTimeout):
                    layout_lines(segments, deadline=time.monotonic() - 1)
    finally:
        pages.close()

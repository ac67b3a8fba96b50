"""Reading every file of the shared document corpus.

Timings on the 2-core development machine: the 400-page IRS manual PDF loads
in about 1.3 s and the 872-page handbook .docx in about 0.3 s, so no test here
is marked slow.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest

from synopsis.engine.documents import Document, load_document
from synopsis.engine.errors import (
    Cancelled,
    CorruptedDocumentError,
    DocumentTooLargeError,
    EmptyDocumentError,
    NoTextLayerError,
    PasswordRequiredError,
    WrongPasswordError,
)
from synopsis.engine.documents import DocumentLimits
from synopsis.engine.progress import CancellationToken

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "documents"

pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"document corpus not found at {CORPUS}; check out shared/ beside the repository"
)


def corpus(name: str) -> Path:
    return CORPUS / name


def flat(text: str) -> str:
    """Return ``text`` with every run of white space as one space."""
    return " ".join(text.split())


def assert_spans_cover(document: Document) -> None:
    spans = document.pages
    assert spans[0].start == 0
    assert spans[-1].end == len(document.text)
    for before, after in zip(spans, spans[1:]):
        assert before.end == after.start
        assert before.start <= before.end
        assert before.page < after.page


_loaded: dict[str, Document] = {}


def load(name: str, **kwargs) -> Document:
    """Load a corpus file once per test session."""
    if kwargs:
        return load_document(corpus(name), **kwargs)
    if name not in _loaded:
        _loaded[name] = load_document(corpus(name))
    return _loaded[name]


# Every corpus file yields text or its specific error ---------------------------

EXPECTED_ERRORS = {
    "apache_tika__testWORD_truncated.docx": CorruptedDocumentError,
    "jsvine_pdfplumber__empty.pdf": EmptyDocumentError,
    "jsvine_pdfplumber__password-example.pdf": PasswordRequiredError,
    "ocrmypdf_OCRmyPDF__linn.pdf": NoTextLayerError,
}


def corpus_files() -> list[str]:
    if not CORPUS.is_dir():
        return []
    return sorted(path.name for path in CORPUS.iterdir() if path.name != "SOURCES.tsv")


@pytest.mark.parametrize("name", corpus_files())
def test_corpus_file_reads_or_raises(name: str) -> None:
    started = time.monotonic()
    if name in EXPECTED_ERRORS:
        with pytest.raises(EXPECTED_ERRORS[name]) as raised:
            load_document(corpus(name))
        assert name in str(raised.value)
    else:
        document = load_document(corpus(name))
        assert len(document.text.strip()) > 20
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("name", ["mozilla_pdf.js__tracemonkey.pdf", "Unstructured-IO_unstructured__handbook-872p.docx"])
def test_reading_leaves_file_unchanged(name: str) -> None:
    path = corpus(name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    modified = path.stat().st_mtime_ns
    load_document(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert path.stat().st_mtime_ns == modified


# PDF ---------------------------------------------------------------------------


def test_tracemonkey_columns_not_interleaved() -> None:
    text = flat(load("mozilla_pdf.js__tracemonkey.pdf").text)
    # Two consecutive sentences of the left column of page 1.
    assert "Dynamic languages such as JavaScript are more difficult to compile than statically typed ones." in text
    assert "Since no concrete type information is available, traditional compilers need to emit generic code" in text
    # The left column of page 2 continues past a code figure in the right column.
    assert "the path and typing will be exactly as they were during recording for subsequent iterations of the loop." in text


def test_tracemonkey_hyphenation_joined() -> None:
    text = load("mozilla_pdf.js__tracemonkey.pdf").text
    assert "compile than statically" in text
    assert "com-\npile" not in text
    assert "alternative compilation technique" in flat(text)


def test_tracemonkey_real_hyphens_kept() -> None:
    text = flat(load("mozilla_pdf.js__tracemonkey.pdf").text)
    assert "dynamically-typed languages" in text
    assert "Just-in-Time" in text


def test_tracemonkey_accent_combined() -> None:
    text = load("mozilla_pdf.js__tracemonkey.pdf").text
    assert "naïve" in text
    assert "¨" not in text


def test_tracemonkey_pages() -> None:
    document = load("mozilla_pdf.js__tracemonkey.pdf")
    assert document.page_count == 14
    assert len(document.pages) == 14
    assert document.pages_approximate is False
    assert_spans_cover(document)
    assert document.page_at(document.text.index("1. Introduction")) == 1


def test_tracemonkey_pages_separated_by_blank_line() -> None:
    document = load("mozilla_pdf.js__tracemonkey.pdf")
    second = document.pages[1]
    assert document.text[second.start - 2 : second.start] == "\n\n"


def test_ligatures_become_letters() -> None:
    text = load("mozilla_pdf.js__copy_paste_ligatures.pdf").text
    assert text == "abcdeffffiflffifflststghijklmno"
    assert not re.search("[\ufb00-\ufb06\u017f]", text)


def test_no_cid_garbage() -> None:
    for name in ("mozilla_pdf.js__tracemonkey.pdf", "pdfminer_pdfminer.six__i1040nr.pdf"):
        assert "(cid:" not in load(name).text


def test_rotated_page_reads_rows() -> None:
    text = load("jsvine_pdfplumber__nics-background-checks-2015-11-rotated.pdf").text
    assert "Alabama 18,870 23,022 22,650" in text
    assert "Alaska 209 3,062 3,209" in text
    assert "NICS Firearm Background Checks" in text


def test_corrupted_pdf_recovered() -> None:
    document = load("pdfminer_pdfminer.six__zen_of_python_corrupted.pdf")
    assert "Beautiful is better than ugly." in document.text
    assert "Namespaces are one honking great idea" in document.text
    # The page is /Rotate 90 with rotated text: lines must read whole.
    assert "Explicit is better than implicit." in document.text


def test_draft_slug_removed() -> None:
    document = load("pdfminer_pdfminer.six__i1040nr.pdf")
    assert "The type and rule above prints on all proofs" not in document.text
    assert "MUST be removed before printing" not in document.text
    assert not re.search(r"Page \d+ of 48 Instructions for Form 1040NR", document.text)


def test_three_columns_not_interleaved() -> None:
    text = flat(load("pdfminer_pdfminer.six__i1040nr.pdf").text)
    assert "Section references are to the Internal Revenue Code unless otherwise noted." in text
    assert "Tax benefits extended. The following tax benefits were extended through 2007." in text


def test_irs_manual_headers_removed() -> None:
    document = load("Unstructured-IO_unstructured__pdf2image-memory-error-test-400p.pdf")
    assert document.page_count == 400
    assert "is for Official Use Only" not in document.text
    assert document.text.count("Command Codes BMFOL and BMFOR 2.3.59 page") == 0
    assert document.text.count("Cat. No. 28171E") < 20


def test_irs_manual_keeps_repeated_table_rows() -> None:
    # These rows open the table of many exhibit pages, near the top but not at
    # a fixed height, so they are body text: pdftotext finds 81 and 78.
    document = load("Unstructured-IO_unstructured__pdf2image-memory-error-test-400p.pdf")
    assert document.text.count("Command Code: BMFOL or BMFOR") >= 78
    assert document.text.count("First Name Line") >= 75


def test_irs_manual_pages_cover_text() -> None:
    document = load("Unstructured-IO_unstructured__pdf2image-memory-error-test-400p.pdf")
    assert len(document.pages) == 400
    assert_spans_cover(document)
    assert 150_000 < len(document.text) < 400_000


def test_irs_manual_progress_per_page() -> None:
    calls: list[tuple[int, int, str]] = []
    load("Unstructured-IO_unstructured__pdf2image-memory-error-test-400p.pdf", progress=lambda *a: calls.append(a))
    assert calls[-1] == (400, 400, "pages")
    assert len([call for call in calls if call[0] > 0]) == 400


def test_cancel_stops_pdf() -> None:
    token = CancellationToken()
    seen: list[int] = []

    def progress(done: int, total: int, unit: str) -> None:
        seen.append(done)
        if done == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        load("Unstructured-IO_unstructured__pdf2image-memory-error-test-400p.pdf", progress=progress, cancel=token)
    assert max(seen) == 3


def test_max_pages_limit() -> None:
    with pytest.raises(DocumentTooLargeError) as raised:
        load("mozilla_pdf.js__tracemonkey.pdf", limits=DocumentLimits(max_pages=5))
    assert "the page count (14) exceeds the limit of 5 pages" in str(raised.value)
    assert "Settings" in str(raised.value)


def test_max_characters_limit() -> None:
    with pytest.raises(DocumentTooLargeError) as raised:
        load("mozilla_pdf.js__tracemonkey.pdf", limits=DocumentLimits(max_characters=10_000))
    assert "exceeds the limit of 10,000 characters" in str(raised.value)


def test_password_required() -> None:
    with pytest.raises(PasswordRequiredError) as raised:
        load_document(corpus("jsvine_pdfplumber__password-example.pdf"))
    assert "password required" in str(raised.value)
    assert "--password" in str(raised.value)


def test_wrong_password() -> None:
    with pytest.raises(WrongPasswordError):
        load("jsvine_pdfplumber__password-example.pdf", password="not-it")


def test_right_password() -> None:
    document = load("jsvine_pdfplumber__password-example.pdf", password="test")
    assert document.page_count == 4
    assert len(document.text) > 1000


def test_scanned_pdf_names_pages() -> None:
    with pytest.raises(NoTextLayerError) as raised:
        load_document(corpus("ocrmypdf_OCRmyPDF__linn.pdf"))
    assert raised.value.pages == [1]
    assert "no text layer; OCR it first" in str(raised.value)


def test_warn_report_rows() -> None:
    text = load("jsvine_pdfplumber__WARN-Report-for-7-1-2015-to-03-25-2016.pdf").text
    assert "Maxim Integrated Product San Jose 150 Closure Permanent" in text


# DOCX --------------------------------------------------------------------------


def test_track_changes_insertion() -> None:
    document = load("jgm_pandoc__track_changes_insertion.docx")
    assert "two exciting" in document.text
    assert document.warnings


def test_textbox_text_once() -> None:
    text = load("docling-project_docling__textbox.docx").text
    assert "Student falls ill" in text
    assert "Infectious Disease Reporting Procedure" in text
    # mc:AlternateContent contains each box twice, but it must appear once.
    assert text.count("Case closed.") == 1
    assert 1500 < len(text) < 2600


def test_tables_merged_cells_once() -> None:
    text = load("docling-project_docling__word_tables.docx").text
    assert "Cell 1.0 | Merged Cell 1.1 1.2\n" in text
    assert text.count("Merged Cell 1.1 2.1") == 2  # two tables, once each
    assert "Header 0.0 | Header 0.1 | Header 0.2 | Header 0.3" in text


def test_footnote_after_body() -> None:
    text = load("apache_tika__testWORD_various.docx").text
    assert text.rstrip().endswith("This is a footnote.")
    assert "Here is a text box" in text
    assert "Row 1 Col 1 | Row 1 Col 2 | Row 1 Col 3" in text
    assert "𐌲𐌿𐍄𐌹𐍃𐌺" in text


def test_handbook_size_and_headings() -> None:
    started = time.monotonic()
    document = load_document(corpus("Unstructured-IO_unstructured__handbook-872p.docx"))
    assert time.monotonic() - started < 15
    assert 750_000 < len(document.text) < 900_000
    assert 250 <= len(document.headings) <= 350
    starts = [heading.start for heading in document.headings]
    assert starts == sorted(starts)


def test_handbook_heading_offsets() -> None:
    document = load("Unstructured-IO_unstructured__handbook-872p.docx")
    for heading in document.headings[:50]:
        # Titles have their white space collapsed ("A.\tPURPOSE" becomes "A. PURPOSE").
        assert flat(document.text[heading.start : heading.start + 2 * len(heading.title)]).startswith(heading.title)


def test_handbook_without_rendered_pages() -> None:
    # The file records no rendered page breaks, only 68 explicit ones, so
    # page numbers from it would be wrong by hundreds of pages.
    document = load("Unstructured-IO_unstructured__handbook-872p.docx")
    assert document.pages == []
    assert document.page_count is None


def test_docx_rendered_breaks_make_pages(tmp_path) -> None:
    from docx import Document as WordDocument
    from docx.oxml.ns import qn
    from lxml import etree

    word = WordDocument()
    for number in range(1, 4):
        paragraph = word.add_paragraph(f"Text of page {number}.")
        if number > 1:
            paragraph.runs[0]._r.insert(0, etree.Element(qn("w:lastRenderedPageBreak")))
    path = tmp_path / "rendered.docx"
    word.save(path)

    document = load_document(path)
    assert document.pages_approximate is True
    assert [span.page for span in document.pages] == [1, 2, 3]
    assert document.page_count == 3
    assert document.text[document.pages[2].start :].startswith("Text of page 3.")
    assert_spans_cover(document)

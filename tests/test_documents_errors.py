"""Document readers on synthetic and hostile files built in tmp_path, and the clean-up rules."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path

import docx
import pypdfium2 as pdfium
import pytest
from lxml import etree

from synopsis.engine.documents import SUPPORTED_SUFFIXES, DocumentLimits, load_document
from synopsis.engine.documents.cleanup import find_running_keys, join_hyphenated_lines, line_key, normalize_characters
from synopsis.engine.errors import (
    ContentMismatchError,
    CorruptedDocumentError,
    DocumentError,
    DocumentTooLargeError,
    EmptyDocumentError,
    EncryptedDocxError,
    LegacyDocError,
    UnsupportedFormatError,
)

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "documents"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"document corpus not found at {CORPUS}")
OLE_HEADER = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504


def make_docx(path: Path, build=None) -> Path:
    document = docx.Document()
    if build is None:
        document.add_paragraph("Hello from a test document.")
    else:
        build(document)
    document.save(str(path))
    return path


def rewrite_member(path: Path, member: str, content: bytes) -> None:
    """Replace one member of the zip at ``path``."""
    with zipfile.ZipFile(path) as source:
        items = [(info, source.read(info.filename)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info, data in items:
            target.writestr(info.filename, content if info.filename == member else data)


# Clean-up rules -----------------------------------------------------------------


def test_hyphen_break_joined() -> None:
    assert join_hyphenated_lines("a dan-\ngerous road") == "a dangerous road"


def test_hyphen_kept_before_capital() -> None:
    assert join_hyphenated_lines("the Anglo-\nSaxon kings") == "the Anglo-Saxon kings"


def test_hyphen_kept_before_digit() -> None:
    assert join_hyphenated_lines("years 2017-\n2023") == "years 2017-\n2023"


def test_hyphen_kept_for_known_compound() -> None:
    text = "a well-known fact, and another well-\nknown one"
    assert join_hyphenated_lines(text) == "a well-known fact, and another well-known one"


def test_hyphen_joined_when_word_known() -> None:
    text = "re-entry is rare; the reentry and re-\nentry rules"
    assert join_hyphenated_lines(text).endswith("reentry and reentry rules")


def test_mid_line_hyphen_untouched() -> None:
    assert join_hyphenated_lines("a well-known\nfact") == "a well-known\nfact"


def test_ligatures_normalized() -> None:
    assert normalize_characters("\ufb01nd \ufb02ow e\ufb03cient \ufb00 \ufb04 \ufb05 \ufb06") == "find flow efficient ff ffl st st"


def test_cid_dropped() -> None:
    assert normalize_characters("a(cid:13)b") == "ab"


def test_superscripts_kept() -> None:
    assert normalize_characters("x² ½") == "x² ½"


def test_line_key_ignores_numbers() -> None:
    assert line_key("Page 3 of 48") == line_key("Page 14 of 48")
    assert line_key("Manual 2.3.59 (12-12-2022)") == line_key("Manual 2.3.59.8 (01-16-2020)")


def test_running_keys_need_repeats() -> None:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    pages = [{line_key(f"Report {2000 + number}"), line_key(f"body {word}")} for number, word in enumerate(words)]
    assert find_running_keys(pages) == {"report #"}


def test_running_keys_odd_even() -> None:
    pages = [{"left header" if number % 2 else "right header"} for number in range(20)]
    assert find_running_keys(pages) == {"left header", "right header"}


def test_running_keys_short_document() -> None:
    assert find_running_keys([{"same"}, {"same"}]) == set()


# Type checks ----------------------------------------------------------------------


def test_supported_suffixes() -> None:
    assert SUPPORTED_SUFFIXES == (".pdf", ".docx", ".txt", ".md")


def test_ole_named_docx(tmp_path: Path) -> None:
    path = tmp_path / "secret.docx"
    path.write_bytes(OLE_HEADER)
    with pytest.raises(EncryptedDocxError) as raised:
        load_document(path)
    assert "password-protected Word file" in str(raised.value)
    assert "File > Info > Protect Document" in str(raised.value)


def test_legacy_doc(tmp_path: Path) -> None:
    path = tmp_path / "old.doc"
    path.write_bytes(OLE_HEADER)
    with pytest.raises(LegacyDocError) as raised:
        load_document(path)
    assert "save it as .docx or PDF" in str(raised.value)


@needs_corpus
def test_pdf_named_docx(tmp_path: Path) -> None:
    path = tmp_path / "paper.docx"
    shutil.copy(CORPUS / "mozilla_pdf.js__copy_paste_ligatures.pdf", path)
    with pytest.raises(ContentMismatchError) as raised:
        load_document(path)
    assert "PDF" in str(raised.value)
    assert "rename it to .pdf" in str(raised.value)


def test_zip_named_pdf(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "report.docx")
    renamed = path.rename(tmp_path / "report.pdf")
    with pytest.raises(ContentMismatchError) as raised:
        load_document(renamed)
    assert "zip archive" in str(raised.value)


def test_pdf_header_after_junk(tmp_path: Path) -> None:
    path = tmp_path / "junk.pdf"
    if not CORPUS.is_dir():
        pytest.skip("document corpus not found")
    path.write_bytes(b"X" * 200 + (CORPUS / "mozilla_pdf.js__copy_paste_ligatures.pdf").read_bytes())
    assert "abcde" in load_document(path).text


def test_pptx_named_docx(tmp_path: Path) -> None:
    path = tmp_path / "slides.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("ppt/presentation.xml", "<presentation/>")
    with pytest.raises(ContentMismatchError) as raised:
        load_document(path)
    assert "PowerPoint" in str(raised.value)


@pytest.mark.parametrize("suffix", [".pptx", ".xlsx", ".rtf", ".odt", ".png", ""])
def test_unsupported_types(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"file{suffix}"
    path.write_bytes(b"some content")
    with pytest.raises(UnsupportedFormatError) as raised:
        load_document(path)
    assert ".docx" in str(raised.value)
    assert ".md" in str(raised.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DocumentError) as raised:
        load_document(tmp_path / "nothing.pdf")
    assert "not found" in str(raised.value)


def test_empty_docx(tmp_path: Path) -> None:
    path = tmp_path / "empty.docx"
    path.write_bytes(b"")
    with pytest.raises(EmptyDocumentError):
        load_document(path)


# PDF ------------------------------------------------------------------------------


def test_truncated_pdf(tmp_path: Path) -> None:
    if not CORPUS.is_dir():
        pytest.skip("document corpus not found")
    path = tmp_path / "cut.pdf"
    path.write_bytes((CORPUS / "mozilla_pdf.js__tracemonkey.pdf").read_bytes()[:300])
    with pytest.raises(CorruptedDocumentError):
        load_document(path)


@needs_corpus
def test_shifted_xref_warns(tmp_path: Path) -> None:
    data = (CORPUS / "mozilla_pdf.js__copy_paste_ligatures.pdf").read_bytes()
    header_end = data.index(b"\n") + 1
    path = tmp_path / "shifted.pdf"
    path.write_bytes(data[:header_end] + b"%" + b"x" * 40 + b"\n" + data[header_end:])
    document = load_document(path)
    assert "abcde" in document.text
    assert any("cross-reference" in warning for warning in document.warnings)


def test_blank_pdf_is_empty(tmp_path: Path) -> None:
    pdf = pdfium.PdfDocument.new()
    pdf.new_page(612, 792)
    path = tmp_path / "blank.pdf"
    pdf.save(str(path))
    pdf.close()
    with pytest.raises(EmptyDocumentError):
        load_document(path)


@needs_corpus
def test_partly_scanned_warns(tmp_path: Path) -> None:
    pdf = pdfium.PdfDocument(str(CORPUS / "mozilla_pdf.js__copy_paste_ligatures.pdf"))
    scanned = pdfium.PdfDocument(str(CORPUS / "ocrmypdf_OCRmyPDF__linn.pdf"))
    pdf.import_pages(scanned)
    path = tmp_path / "mixed.pdf"
    pdf.save(str(path))
    pdf.close()
    scanned.close()
    document = load_document(path)
    assert "abcde" in document.text
    assert document.warnings == [
        "Page 2 has no text layer (scanned images); OCR the file to include them."
    ]


# DOCX -----------------------------------------------------------------------------


def test_docx_headings_and_pages(tmp_path: Path) -> None:
    def build(document: docx.document.Document) -> None:
        document.add_heading("The Title", level=0)
        document.add_heading("Chapter One", level=1)
        document.add_paragraph("First page text.")
        document.add_page_break()
        heading = document.add_heading("Section 1.1", level=2)
        # Word writes a rendered break where its layout started the new page.
        heading.runs[0]._r.insert(0, docx.oxml.OxmlElement("w:lastRenderedPageBreak"))
        document.add_paragraph("Second page text.")

    document = load_document(make_docx(tmp_path / "book.docx", build))
    assert [(h.level, h.title) for h in document.headings] == [(1, "The Title"), (1, "Chapter One"), (2, "Section 1.1")]
    assert document.pages_approximate is True
    assert [span.page for span in document.pages] == [1, 2]
    assert document.text[document.pages[1].start :].startswith("Section 1.1")
    assert "\f" not in document.text


def test_docx_explicit_breaks_alone_make_no_pages(tmp_path: Path) -> None:
    def build(document: docx.document.Document) -> None:
        document.add_paragraph("Before the break.")
        document.add_page_break()
        document.add_paragraph("After the break.")

    document = load_document(make_docx(tmp_path / "breaks.docx", build))
    assert document.pages == []
    assert "After the break." in document.text


def test_docx_without_breaks_has_no_pages(tmp_path: Path) -> None:
    document = load_document(make_docx(tmp_path / "plain.docx"))
    assert document.pages == []
    assert document.text == "Hello from a test document."


def test_docx_member_ratio_bomb(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "bomb.docx")
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/media/zeros.bin", b"\0" * 20_000_000)
    with pytest.raises(DocumentTooLargeError) as raised:
        load_document(path)
    assert raised.value.limit_name == "max_compression_ratio"
    assert "exceeds the limit of 200." in str(raised.value)
    assert "cannot be changed" in str(raised.value)


def test_docx_total_size_limit(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "big.docx")
    with pytest.raises(DocumentTooLargeError) as raised:
        load_document(path, limits=DocumentLimits(max_archive_bytes=10_000))
    assert raised.value.limit_name == "max_archive_bytes"
    assert "the uncompressed size in bytes (" in str(raised.value)
    assert "exceeds the limit of 10,000." in str(raised.value)


def test_docx_member_count_limit(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "many.docx")
    with pytest.raises(DocumentTooLargeError) as raised:
        load_document(path, limits=DocumentLimits(max_archive_members=3))
    assert raised.value.limit_name == "max_archive_members"
    assert "the number of archive members (" in str(raised.value)
    assert "exceeds the limit of 3." in str(raised.value)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">
<w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>"""


def test_docx_billion_laughs(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "laughs.docx")
    rewrite_member(path, "word/document.xml", BILLION_LAUGHS)
    started = time.monotonic()
    with pytest.raises(CorruptedDocumentError) as raised:
        load_document(path)
    assert "DTD" in str(raised.value)
    assert time.monotonic() - started < 5


def test_python_docx_parser_keeps_entities_unexpanded() -> None:
    # Second line of defence: python-docx's own parser does not expand entities.
    from docx.oxml.parser import parse_xml

    started = time.monotonic()
    try:
        element = parse_xml(BILLION_LAUGHS)
    except etree.XMLSyntaxError as error:
        # libxml2 2.11 and later stop at "Maximum entity amplification factor exceeded".
        assert "amplification" in str(error) or "entity" in str(error).lower()
    else:
        assert len("".join(element.itertext())) < 1000
    assert time.monotonic() - started < 5


# Text -----------------------------------------------------------------------------


def test_utf8_bom(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"\xef\xbb\xbfcaf\xc3\xa9\r\nline two\n")
    document = load_document(path)
    assert document.text == "café\nline two"
    assert document.format == "txt"
    assert document.warnings == []


def test_utf16_bom(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes("naïve text".encode("utf-16"))
    assert load_document(path).text == "naïve text"


def test_cp1252_fallback_warns(tmp_path: Path) -> None:
    path = tmp_path / "old.txt"
    path.write_bytes("“quoted” café".encode("cp1252"))
    document = load_document(path)
    assert document.text == "“quoted” café"
    assert "Windows-1252" in document.warnings[0]


def test_binary_named_txt(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"abc\x00\x01\x02def")
    with pytest.raises(ContentMismatchError):
        load_document(path)


def test_zip_named_txt(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "doc.docx").rename(tmp_path / "doc.txt")
    with pytest.raises(ContentMismatchError) as raised:
        load_document(path)
    assert "rename it to .docx" in str(raised.value)


def test_empty_text_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.md"
    path.write_bytes(b"")
    with pytest.raises(EmptyDocumentError):
        load_document(path)


def test_markdown_headings(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text("# Guide\n\nIntro.\n\n```\n# not a heading\n```\n\n## Install\nSteps.\n", encoding="utf-8")
    document = load_document(path)
    assert document.format == "md"
    assert [(h.level, h.title) for h in document.headings] == [(1, "Guide"), (2, "Install")]
    assert document.text[document.headings[1].start :].startswith("## Install")

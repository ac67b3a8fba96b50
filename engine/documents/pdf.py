"""PDF reader built on pypdfium2, the PDFium binding that pdfplumber installs.

Why pypdfium2 and not pdfplumber's own text (``bench/extract.py`` compares
the two on the corpus PDFs; its table is in docs/benchmarks.md):

* Speed and memory: this reader, layout pass included, ran 5 to 8 times
  pdfplumber's pages per second with a sixth or less of its peak memory.
* Quality: pdfplumber's ``extract_text(use_text_flow=True)`` dropped the word
  spaces of that paper ("DynamiclanguagessuchasJavaScript..."), and its
  default mode interleaves the two columns. PDFium inserts word spaces and
  reports a box for every character, which the layout pass needs to keep
  columns apart.
* PDFium repairs broken cross-reference tables as it opens a file, and
  reports a missing or wrong password with an error code distinct from damage.

The file is opened read-only, and PDFium calls are serialized by a lock
because PDFium is not thread-safe.
"""

from __future__ import annotations

import logging
import mmap
import re
import threading
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from ..errors import (
    CorruptedDocumentError,
    DocumentError,
    EmptyDocumentError,
    NoTextLayerError,
    PasswordRequiredError,
    WrongPasswordError,
)
from ..progress import CancellationToken, ProgressFn
from .cleanup import (
    collect_vocabulary,
    edge_indices,
    find_running_keys,
    join_hyphenated_lines,
    line_key,
    normalize_characters,
)
from .limits import DocumentLimits, ReadingClock, check_characters, check_pages
from .model import Document, Heading, PageSpan
from .pdf_layout import Segment, layout_lines, line_text, physical_lines, read_segments, text_rotation

logger = logging.getLogger(__name__)

PAGE_SEPARATOR = "\n\n"
_PDFIUM_LOCK = threading.Lock()
_EXTRA_BLANK_LINES = re.compile(r"\n{3,}")


def describe_pages(pages: list[int]) -> str:
    """Return "page 3" or "pages 3, 7, 9" (at most 20 numbers, then a count)."""
    listed = ", ".join(str(page) for page in pages[:20])
    if len(pages) > 20:
        listed += f" and {len(pages) - 20} more"
    return f"page {listed}" if len(pages) == 1 else f"pages {listed}"


def _open(path: Path, password: str | None) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(str(path), password=password)
    except pdfium.PdfiumError as error:
        code = getattr(error, "err_code", None)
        if code == pdfium_c.FPDF_ERR_PASSWORD:
            if password is None:
                raise PasswordRequiredError(
                    path,
                    "password required: the PDF is encrypted. Open it again with its password "
                    "(in the window, the row's Enter password… menu; on the command line, --password).",
                ) from error
            raise WrongPasswordError(
                path, "wrong password: the given password does not open this PDF. Check it and try again."
            ) from error
        if code == pdfium_c.FPDF_ERR_SECURITY:
            raise DocumentError(
                path, "the PDF uses an encryption scheme that cannot be opened; save an unencrypted copy."
            ) from error
        raise CorruptedDocumentError(
            path,
            "the PDF is damaged or truncated and could not be repaired "
            f"({error}). Get a fresh copy of the file.",
        ) from error


def xref_table_damaged(path: Path) -> bool:
    """Return True when the classic cross-reference table points at wrong offsets.

    PDFium rebuilds such a table silently, so this check is the only way to tell
    the user that the text came from a repaired file. Files with
    cross-reference streams (PDF 1.5 and later) are not checked.
    """
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            tail_at = data.rfind(b"startxref", max(0, len(data) - 4096))
            if tail_at < 0:
                return True
            match = re.match(rb"startxref\s+(\d+)", data[tail_at : tail_at + 40])
            if not match or int(match.group(1)) >= len(data):
                return True
            start = int(match.group(1))
            if not data[start : start + 4] == b"xref":
                return not re.match(rb"\s*\d+\s+\d+\s+obj", data[start : start + 40])
            return _xref_entries_damaged(data, start)
    except (OSError, ValueError):
        return False


_SUBSECTION = re.compile(rb"\s*(\d+)\s+(\d+)\s*")
_ENTRY = re.compile(rb"(\d{10}) (\d{5}) ([nf])")


def _xref_entries_damaged(data: mmap.mmap, start: int, max_entries: int = 2000) -> bool:
    position = start + 4
    checked = 0
    while checked < max_entries:
        header = _SUBSECTION.match(data, position)
        if not header:
            return False
        first, count = int(header.group(1)), int(header.group(2))
        position = header.end()
        for number in range(first, first + count):
            entry = _ENTRY.match(data, position)
            if not entry:
                return True
            position = entry.end()
            while position < len(data) and data[position : position + 1] in b" \r\n":
                position += 1
            if entry.group(3) == b"n":
                offset = int(entry.group(1))
                found = re.match(rb"\s*(\d+)\s+\d+\s+obj", data[offset : offset + 40])
                if not found or int(found.group(1)) != number:
                    return True
            checked += 1
    return False


def _page_has_images(page: pdfium.PdfPage) -> bool:
    return any(True for _ in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=3))


def _read_segments(
    path: Path,
    document: pdfium.PdfDocument,
    limits: DocumentLimits,
    clock: ReadingClock,
    progress: ProgressFn | None,
    cancel: CancellationToken | None,
) -> tuple[list[list[Segment]], list[int], list[int]]:
    """Return the text segments of every page, the 1-based pages that hold only
    images, and the 1-based pages PDFium could not load (given no segments)."""
    total = len(document)
    pages: list[list[Segment]] = []
    image_only: list[int] = []
    unreadable: list[int] = []
    characters = 0
    for index in range(total):
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            segments = _read_page(document, index, image_only)
        except pdfium.PdfiumError as error:
            logger.warning("%s: page %d could not be loaded: %s", path.name, index + 1, error)
            unreadable.append(index + 1)
            segments = []
        pages.append(segments)
        characters += sum(len(segment.parts) + 1 for segment in segments)
        check_characters(path, characters, limits)
        clock.check()
        if progress is not None:
            progress(index + 1, total, "pages")
    return pages, image_only, unreadable


def _read_page(document: pdfium.PdfDocument, index: int, image_only: list[int]) -> list[Segment]:
    """Return the text segments of page ``index``, adding it to ``image_only`` when it has only images.

    Raises PdfiumError when PDFium cannot load the page or its text, which
    happens when the page's objects are damaged.
    """
    page = document[index]
    try:
        textpage = page.get_textpage()
        try:
            segments = read_segments(textpage.raw, text_rotation(textpage.raw))
        finally:
            textpage.close()
        if not segments and _page_has_images(page):
            image_only.append(index + 1)
    finally:
        page.close()
    return segments


def _drop_running_lines(pages: list[list[Segment]]) -> tuple[list[list[Segment]], int]:
    """Remove the segments of header and footer lines that repeat across pages."""
    edges: list[list[tuple[str, list[Segment]]]] = []
    for segments in pages:
        lines = physical_lines(segments)
        keyed = [(line_key(normalize_characters(line_text(lines[i]))), lines[i]) for i in edge_indices(len(lines))]
        edges.append(keyed)
    running = find_running_keys([{key for key, _ in keyed} for keyed in edges if keyed])
    if not running:
        return pages, 0
    kept_pages: list[list[Segment]] = []
    removed = 0
    for segments, keyed in zip(pages, edges):
        dropped = {id(segment) for key, line in keyed if key in running for segment in line}
        removed += sum(1 for key, _ in keyed if key in running)
        kept_pages.append([segment for segment in segments if id(segment) not in dropped])
    return kept_pages, removed


def _outline_headings(document: pdfium.PdfDocument, text: str, spans: list[PageSpan]) -> list[Heading]:
    """Turn the PDF's bookmarks into headings placed at their title on the target page."""
    headings: list[Heading] = []
    for item in document.get_toc(max_depth=6):
        title = normalize_characters(item.get_title() or "").strip()
        page_index = item.get_dest().get_index() if item.get_dest() is not None else None
        if not title or page_index is None or not 0 <= page_index < len(spans):
            continue
        span = spans[page_index]
        found = text.find(title, span.start, span.end)
        headings.append(Heading(level=item.level + 1, title=title, start=found if found >= 0 else span.start))
    return headings


def load_pdf(
    path: Path,
    password: str | None,
    limits: DocumentLimits,
    progress: ProgressFn | None,
    cancel: CancellationToken | None,
) -> Document:
    """Read the text of the PDF at ``path``, page by page, in reading order."""
    warnings: list[str] = []
    with _PDFIUM_LOCK:
        # The clock starts once the lock is held, so time spent waiting for another reader does not count.
        clock = ReadingClock(path, limits)
        document = _open(path, password)
        try:
            page_total = len(document)
            check_pages(path, page_total, limits)
            if progress is not None:
                progress(0, page_total, "pages")
            pages, image_only, unreadable = _read_segments(path, document, limits, clock, progress, cancel)
            pages, removed = _drop_running_lines(pages)
            if removed:
                logger.debug("%s: removed %d running header or footer lines", path.name, removed)

            page_texts = []
            for segments in pages:
                clock.check()
                lines = [normalize_characters(line).rstrip() for line in layout_lines(segments)]
                page_texts.append(_EXTRA_BLANK_LINES.sub("\n\n", "\n".join(lines)).strip())
            words, compounds = collect_vocabulary("\n".join(page_texts))
            page_texts = [join_hyphenated_lines(text, words, compounds) for text in page_texts]

            text, spans = _join_pages(page_texts)
            headings = _outline_headings(document, text, spans)
        finally:
            document.close()

    empty_pages = [number for number, page_text in enumerate(page_texts, start=1) if not page_text]
    if not text.strip():
        if unreadable:
            raise CorruptedDocumentError(
                path,
                f"the PDF is damaged: PDFium could not load {describe_pages(unreadable)}, "
                "and no other page has text. "
                "Get a fresh copy of the file.",
            )
        if image_only:
            raise NoTextLayerError(
                path,
                f"no text layer; OCR it first (for example with ocrmypdf). "
                f"{describe_pages(image_only).capitalize()} {'holds' if len(image_only) == 1 else 'hold'} only images.",
                image_only,
            )
        raise EmptyDocumentError(path, "the PDF contains no text and no images; there is nothing to summarize.")
    if image_only:
        warnings.append(
            f"{describe_pages(image_only).capitalize()} {'has' if len(image_only) == 1 else 'have'} "
            "no text layer (scanned images); "
            "OCR the file to include them."
        )
    if unreadable:
        warnings.append(
            f"{describe_pages(unreadable).capitalize()} could not be read because "
            f"{'it is' if len(unreadable) == 1 else 'they are'} damaged, so "
            f"{'its' if len(unreadable) == 1 else 'their'} text is missing."
        )
    if xref_table_damaged(path):
        warnings.append("recovered a damaged cross-reference table; some text may be missing.")
    logger.info("%s: read %d pages, %d characters, %d empty pages", path.name, page_total, len(text), len(empty_pages))
    return Document(
        path=path,
        format="pdf",
        text=text,
        pages=spans,
        headings=headings,
        warnings=warnings,
        page_count=page_total,
        pages_approximate=False,
    )


def _join_pages(page_texts: list[str]) -> tuple[str, list[PageSpan]]:
    """Join pages with a blank line between them and return the text and page spans.

    Each separator belongs to the span of the page before it, so every
    character lies in exactly one span. A page without text gets a span with
    no separator of its own (empty, or holding the separator that follows).
    """
    parts: list[str] = []
    starts: list[int] = []
    length = 0
    for page_text in page_texts:
        if page_text and length > 0:
            parts.append(PAGE_SEPARATOR)
            length += len(PAGE_SEPARATOR)
        starts.append(length)
        parts.append(page_text)
        length += len(page_text)
    spans = [
        PageSpan(page=index + 1, start=start, end=starts[index + 1] if index + 1 < len(starts) else length)
        for index, start in enumerate(starts)
    ]
    return "".join(parts), spans

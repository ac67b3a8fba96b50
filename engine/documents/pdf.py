"""PDF reader built on pypdfium2, the PDFium binding that pdfplumber installs.

Why pypdfium2 and not pdfplumber's own text (``bench/extract.py`` compares
the two on the corpus PDFs; its table is in docs/benchmarks.md):

* Speed and memory: this reader, layout pass included, ran 14 to 25 times
  pdfplumber's pages per second (17 to 22 times in CPU time) with a quarter
  to a thirteenth of its peak memory, on a shared 2-core machine.
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
from dataclasses import dataclass, field
import time
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
from .pdf_layout import PageTimeout, Segment, layout_lines, line_text, physical_lines
from .pdf_words import page_characters, read_segments

logger = logging.getLogger(__name__)

PAGE_SEPARATOR = "\n\n"
PAGE_TIME_LIMIT = 10.0
"""Seconds one page may take to read and lay out before it is skipped with a warning.

Pages of the corpus take a few milliseconds each, so the limit stops only
pages built to stall the reader. PDFium parses a page's content in one call
that cannot be interrupted, so the limit is checked in the reader's own
loops, before and while the words are read and during the layout pass. A
page whose parsing alone takes longer is given up only after that parsing.
"""
REOPEN_PAGES = 200
"""Pages read from one opening of the document (see _read_segments)."""
_PDFIUM_LOCK = threading.Lock()
_EXTRA_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_WHITESPACE = re.compile(r"[^\S\n]+$", re.MULTILINE)


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


def _page_has_images(document: pdfium.PdfDocument, index: int) -> bool:
    page = document[index]
    try:
        return any(True for _ in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=3))
    finally:
        page.close()


@dataclass
class _PageProblems:
    """1-based numbers of the pages whose text is missing, by cause."""

    image_only: list[int] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)
    slow: list[int] = field(default_factory=list)


def _read_segments(
    path: Path,
    password: str | None,
    document: pdfium.PdfDocument,
    limits: DocumentLimits,
    clock: ReadingClock,
    page_time_limit: float,
    progress: ProgressFn | None,
    cancel: CancellationToken | None,
) -> tuple[list[list[Segment]], list[float], _PageProblems]:
    """Return the text segments of every page and the seconds each page took to read.

    A page that PDFium cannot load, or that runs past ``page_time_limit``,
    gets no segments and is recorded in the returned problems. PDFium keeps
    every object it parsed until its document closes, about 15 KB per page
    of the 400-page corpus PDF, so pages after the first REOPEN_PAGES are
    read from a fresh copy of the document opened every REOPEN_PAGES pages.
    """
    total = len(document)
    pages: list[list[Segment]] = []
    seconds: list[float] = []
    problems = _PageProblems()
    characters = 0
    reader = document
    try:
        for index in range(total):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if index > 0 and index % REOPEN_PAGES == 0:
                if reader is not document:
                    reader.close()
                reader = _open(path, password)
            started = time.monotonic()
            segments = _read_page_or_record(path, reader, index, started + page_time_limit, problems)
            seconds.append(time.monotonic() - started)
            pages.append(segments)
            characters += sum(len(segment.text) + 1 for segment in segments)
            check_characters(path, characters, limits, complete=False)
            clock.check()
            if progress is not None:
                progress(index + 1, total, "pages")
    finally:
        if reader is not document:
            reader.close()
    return pages, seconds, problems


def _read_page_or_record(
    path: Path, document: pdfium.PdfDocument, index: int, deadline: float, problems: _PageProblems
) -> list[Segment]:
    """Return the segments of page ``index``, or none after recording why the page has no text."""
    try:
        segments = _read_page(document, index, deadline)
    except PageTimeout:
        logger.warning("%s: reading page %d ran past its time limit; skipped", path.name, index + 1)
        problems.slow.append(index + 1)
        return []
    except pdfium.PdfiumError as error:
        logger.warning("%s: page %d could not be loaded: %s", path.name, index + 1, error)
        problems.unreadable.append(index + 1)
        return []
    if not segments and _page_has_images(document, index):
        problems.image_only.append(index + 1)
    return segments


def _read_page(document: pdfium.PdfDocument, index: int, deadline: float) -> list[Segment]:
    """Return the text segments of page ``index``.

    Calls PDFium's C functions directly, so no Python object outlives the
    page, and closes the page and its text page before returning. Raises
    PdfiumError when PDFium cannot load the page or its text, which happens
    when the page's objects are damaged, and PageTimeout after ``deadline``
    (a ``time.monotonic()`` value).
    """
    page = pdfium_c.FPDF_LoadPage(document.raw, index)
    if not page:
        raise pdfium.PdfiumError(f"Failed to load page {index + 1}.")
    try:
        textpage = pdfium_c.FPDFText_LoadPage(page)
        if not textpage:
            raise pdfium.PdfiumError(f"Failed to load the text of page {index + 1}.")
        try:
            if time.monotonic() > deadline:
                raise PageTimeout
            return read_segments(textpage, page_characters(textpage), deadline)
        finally:
            pdfium_c.FPDFText_ClosePage(textpage)
    finally:
        pdfium_c.FPDF_ClosePage(page)


def _drop_running_lines(pages: list[list[Segment]]) -> tuple[list[list[Segment]], int]:
    """Remove the segments of header and footer lines that repeat across pages."""
    edges: list[list[tuple[str, list[Segment]]]] = []
    for segments in pages:
        lines = physical_lines(segments)
        edge_lines = [lines[index] for index in edge_indices(len(lines))]
        # One normalize_characters call for the page's edge lines: none of
        # its replacements spans a line break.
        texts = normalize_characters("\n".join(line_text(line) for line in edge_lines)).split("\n")
        edges.append([(line_key(text), line) for text, line in zip(texts, edge_lines)])
    running = _same_place_keys(find_running_keys([{key for key, _ in keyed} for keyed in edges if keyed]), edges)
    if not running:
        return pages, 0
    kept_pages: list[list[Segment]] = []
    removed = 0
    for segments, keyed in zip(pages, edges):
        dropped = {id(segment) for key, line in keyed if key in running for segment in line}
        removed += sum(1 for key, _ in keyed if key in running)
        kept_pages.append([segment for segment in segments if id(segment) not in dropped])
    return kept_pages, removed


RUNNING_POSITION_SHARE = 0.8
"""Share of a running line's pages on which it must sit at one height (within RUNNING_POSITION_POINTS)."""
RUNNING_POSITION_POINTS = 3.0


def _same_place_keys(keys: set[str], edges: list[list[tuple[str, list[Segment]]]]) -> set[str]:
    """Keep the keys whose lines sit at one height on most of their pages.

    A header or footer is printed at the same place on every page. A table row
    that repeats near the top of many pages (the first rows of a long form's
    exhibits) moves with the content above it, so it is body text and stays.
    """
    heights: dict[str, list[float]] = {key: [] for key in keys}
    for keyed in edges:
        for key, line in keyed:
            if key in heights:
                heights[key].append(max(segment.y1 for segment in line))
    kept = set()
    for key, tops in heights.items():
        if _max_count_within(sorted(tops), 2 * RUNNING_POSITION_POINTS) >= RUNNING_POSITION_SHARE * len(tops):
            kept.add(key)
    return kept


def _max_count_within(values: list[float], width: float) -> int:
    """Return the largest number of the sorted ``values`` that fit in one interval ``width`` wide."""
    best = start = 0
    for stop, value in enumerate(values):
        while value - values[start] > width:
            start += 1
        best = max(best, stop - start + 1)
    return best


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


def _lay_out_pages(
    path: Path,
    pages: list[list[Segment]],
    seconds: list[float],
    page_time_limit: float,
    problems: _PageProblems,
    clock: ReadingClock,
) -> list[str]:
    """Return the text of each page in reading order, before hyphenated words are joined.

    Each page's layout gets what is left of its time limit after reading; a
    page that runs out is skipped and recorded in ``problems.slow``.
    """
    page_texts = []
    for number, (segments, spent) in enumerate(zip(pages, seconds), start=1):
        clock.check()
        try:
            lines = layout_lines(segments, time.monotonic() + page_time_limit - spent)
        except PageTimeout:
            logger.warning("%s: the layout of page %d ran past its time limit; skipped", path.name, number)
            problems.slow.append(number)
            lines = []
        # Normalizing the page at once equals normalizing each line: no
        # replacement in normalize_characters spans a line break.
        page_text = _TRAILING_WHITESPACE.sub("", normalize_characters("\n".join(lines)))
        page_texts.append(_EXTRA_BLANK_LINES.sub("\n\n", page_text).strip())
    return page_texts


def load_pdf(
    path: Path,
    password: str | None,
    limits: DocumentLimits,
    progress: ProgressFn | None,
    cancel: CancellationToken | None,
    page_time_limit: float = PAGE_TIME_LIMIT,
) -> Document:
    """Read the text of the PDF at ``path``, page by page, in reading order.

    A page that takes longer than ``page_time_limit`` seconds is skipped, and
    the document's warnings name it.
    """
    with _PDFIUM_LOCK:
        # The clock starts once the lock is held, so time spent waiting for another reader does not count.
        clock = ReadingClock(path, limits)
        document = _open(path, password)
        try:
            page_total = len(document)
            check_pages(path, page_total, limits)
            if progress is not None:
                progress(0, page_total, "pages")
            pages, seconds, problems = _read_segments(
                path, password, document, limits, clock, page_time_limit, progress, cancel
            )
            pages, removed = _drop_running_lines(pages)
            if removed:
                logger.debug("%s: removed %d running header or footer lines", path.name, removed)

            page_texts = _lay_out_pages(path, pages, seconds, page_time_limit, problems, clock)
            words, compounds = collect_vocabulary("\n".join(page_texts))
            page_texts = [join_hyphenated_lines(text, words, compounds) for text in page_texts]

            text, spans = _join_pages(page_texts)
            headings = _outline_headings(document, text, spans)
        finally:
            document.close()

    if not text.strip():
        _raise_without_text(path, problems, page_time_limit)
    warnings = _page_warnings(path, problems, page_time_limit)
    if xref_table_damaged(path):
        warnings.append("recovered a damaged cross-reference table; some text may be missing.")
    empty_pages = sum(1 for page_text in page_texts if not page_text)
    logger.info("%s: read %d pages, %d characters, %d empty pages", path.name, page_total, len(text), empty_pages)
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


def _raise_without_text(path: Path, problems: _PageProblems, page_time_limit: float) -> None:
    """Raise the error that explains why no page of the PDF has text."""
    if problems.unreadable:
        raise CorruptedDocumentError(
            path,
            f"the PDF is damaged: PDFium could not load {describe_pages(problems.unreadable)}, "
            "and no other page has text. "
            "Get a fresh copy of the file.",
        )
    if problems.slow:
        raise DocumentError(
            path,
            f"reading {describe_pages(problems.slow)} took longer than the limit of {page_time_limit:g} s per page, "
            "and no other page has text. Save a copy with another PDF program (for example, print it to a new PDF) "
            "and open that copy.",
        )
    if problems.image_only:
        image_only = problems.image_only
        raise NoTextLayerError(
            path,
            f"no text layer; OCR it first (for example with ocrmypdf). "
            f"{describe_pages(image_only).capitalize()} {'holds' if len(image_only) == 1 else 'hold'} only images.",
            image_only,
        )
    raise EmptyDocumentError(path, "the PDF contains no text and no images; there is nothing to summarize.")


def _page_warnings(path: Path, problems: _PageProblems, page_time_limit: float) -> list[str]:
    """Return one warning for each cause of missing page text."""
    warnings = []
    if problems.image_only:
        image_only = problems.image_only
        warnings.append(
            f"{describe_pages(image_only).capitalize()} {'has' if len(image_only) == 1 else 'have'} "
            "no text layer (scanned images); "
            "OCR the file to include them."
        )
    if problems.unreadable:
        unreadable = problems.unreadable
        warnings.append(
            f"{describe_pages(unreadable).capitalize()} could not be read because "
            f"{'it is' if len(unreadable) == 1 else 'they are'} damaged, so "
            f"{'its' if len(unreadable) == 1 else 'their'} text is missing."
        )
    if problems.slow:
        slow = sorted(problems.slow)
        single = len(slow) == 1
        warnings.append(
            f"{path.name}: {describe_pages(slow)} took longer than {page_time_limit:g} s to read, so "
            f"{'its' if single else 'their'} text is missing. Such a page usually holds a huge number of "
            "characters or drawing operations."
        )
    return warnings


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

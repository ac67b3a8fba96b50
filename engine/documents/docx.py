"""Word .docx reader: python-docx opens the package, this module walks its XML.

python-docx's ``Paragraph.text`` leaves out text that this reader includes:
runs inside tracked insertions (``w:ins``), text boxes (``w:txbxContent``),
content controls, and footnotes and endnotes. Walking the XML also keeps
merged table cells from repeating, which ``_Row.cells`` does.

Page breaks are marked with a form feed while the text is built and turned
into page spans at the end. They come from ``w:lastRenderedPageBreak`` (where
Word's last layout put a page break) and explicit breaks, so the pages are
approximate. A file without rendered breaks gets no page spans at all: its
explicit breaks alone would number pages far below the real ones (the
872-page handbook in the test corpus has 68).
"""

from __future__ import annotations

import bisect
import logging
import re
import zipfile
from pathlib import Path

import docx
from docx.opc.exceptions import PackageNotFoundError
from lxml import etree

from ..errors import CorruptedDocumentError
from ..progress import CancellationToken, ProgressFn
from .archive import ARCHIVE_READ_ERRORS, check_docx_archive
from .cleanup import normalize_characters
from .limits import DocumentLimits, ReadingClock, check_characters
from .model import Document, Heading, PageSpan

logger = logging.getLogger(__name__)

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"


def _w(tag: str) -> str:
    return f"{{{W}}}{tag}"


P, R, T, TBL, TR, TC = _w("p"), _w("r"), _w("t"), _w("tbl"), _w("tr"), _w("tc")
TAB, BR, CR, NO_BREAK_HYPHEN = _w("tab"), _w("br"), _w("cr"), _w("noBreakHyphen")
RENDERED_BREAK, TXBX_CONTENT = _w("lastRenderedPageBreak"), _w("txbxContent")
SDT, SDT_CONTENT = _w("sdt"), _w("sdtContent")
INS, DEL, MOVE_FROM, MOVE_TO = _w("ins"), _w("del"), _w("moveFrom"), _w("moveTo")
PPR, TCPR, VAL, TYPE = _w("pPr"), _w("tcPr"), _w("val"), _w("type")
ALTERNATE_CONTENT, CHOICE, FALLBACK = f"{{{MC}}}AlternateContent", f"{{{MC}}}Choice", f"{{{MC}}}Fallback"

# Elements whose text is not part of the document's reading text: properties,
# tracked deletions, field instructions, and the text of deleted runs.
SKIPPED = {
    PPR, _w("rPr"), _w("sectPr"), TCPR, _w("tblPr"), _w("trPr"), _w("tblGrid"), _w("sdtPr"), _w("sdtEndPr"),
    DEL, MOVE_FROM, _w("delText"), _w("instrText"), _w("delInstrText"),
}
TRACKED = {INS, DEL, MOVE_FROM, MOVE_TO}

PAGE_MARK = "\f"
_BLANKS = " \t\n\r"
"""White space stripped around a paragraph; a form feed (page mark) is kept."""
PARAGRAPH_SEPARATOR = "\n\n"
CELL_SEPARATOR = " | "
MAX_HEADING_CHARACTERS = 200
NOTE_TYPES_SKIPPED = {"separator", "continuationSeparator", "continuationNotice"}
_SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
_HEADING_NAME = re.compile(r"heading\s*(\d)", re.IGNORECASE)


class _StyleLevels:
    """Heading level of each paragraph style ID, from its name or outline level."""

    def __init__(self, styles_element: etree._Element | None) -> None:
        self._names: dict[str, str] = {}
        self._outline: dict[str, int] = {}
        self._based_on: dict[str, str] = {}
        if styles_element is None:
            return
        for style in styles_element.iterchildren(_w("style")):
            style_id = style.get(_w("styleId"))
            if not style_id:
                continue
            name = style.find(_w("name"))
            self._names[style_id] = (name.get(VAL) or "") if name is not None else ""
            outline = style.find(f"{PPR}/{_w('outlineLvl')}")
            if outline is not None and (outline.get(VAL) or "").isdigit():
                self._outline[style_id] = int(outline.get(VAL))
            based_on = style.find(_w("basedOn"))
            if based_on is not None and based_on.get(VAL):
                self._based_on[style_id] = based_on.get(VAL)
        self._cache: dict[str, int | None] = {}

    def level(self, style_id: str) -> int | None:
        if style_id in self._cache:
            return self._cache[style_id]
        name = self._names.get(style_id, style_id).strip().lower()
        level: int | None = None
        match = _HEADING_NAME.fullmatch(name)
        if name == "title":
            level = 1
        elif match:
            level = int(match.group(1))
        else:
            seen: set[str] = set()
            current: str | None = style_id
            while current and current not in seen:
                seen.add(current)
                if current in self._outline:
                    outline = self._outline[current]
                    level = outline + 1 if outline < 9 else None
                    break
                current = self._based_on.get(current)
        self._cache[style_id] = level
        return level


class _TextBuilder:
    """Accumulates text with page marks, headings and tracked-change notes."""

    def __init__(self, styles: _StyleLevels, clock: ReadingClock) -> None:
        self.styles = styles
        self.clock = clock
        self.parts: list[str] = []
        self.length = 0
        self.headings: list[Heading] = []
        self.saw_tracked_changes = False

    def add_block(self, text: str, level: int | None = None) -> None:
        text = text.strip(_BLANKS)
        if not text.replace(PAGE_MARK, "").strip():
            if PAGE_MARK in text:
                self._append(PAGE_MARK)
            return
        if self.parts:
            self._append(PARAGRAPH_SEPARATOR)
        if level is not None:
            title = " ".join(text.replace(PAGE_MARK, " ").split())[:MAX_HEADING_CHARACTERS]
            self.headings.append(Heading(level=level, title=title, start=self.length))
        self._append(text)

    def _append(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    # Blocks ----------------------------------------------------------------

    def blocks(self, container: etree._Element) -> None:
        for child in container:
            self.clock.check()
            tag = child.tag
            if tag == P:
                self.paragraph(child)
            elif tag == TBL:
                self.add_block("\n".join(self.table_lines(child)))
            elif tag == SDT:
                content = child.find(SDT_CONTENT)
                if content is not None:
                    self.blocks(content)
            elif tag == ALTERNATE_CONTENT:
                self.blocks(_pick_alternative(child))
            elif tag in SKIPPED or not isinstance(tag, str):
                continue
            else:
                # w:customXml, w:ins around whole paragraphs, and other wrappers.
                if tag in TRACKED:
                    self.saw_tracked_changes = True
                self.blocks(child)

    def paragraph(self, element: etree._Element) -> None:
        pieces: list[str] = []
        boxes: list[etree._Element] = []
        properties = element.find(PPR)
        if properties is not None and properties.find(_w("pageBreakBefore")) is not None:
            pieces.append(PAGE_MARK)
        self.inline(element, pieces, boxes)
        self.add_block(normalize_characters_keep_marks("".join(pieces)), self.heading_level(properties))
        for box in boxes:
            self.blocks(box)

    def heading_level(self, properties: etree._Element | None) -> int | None:
        if properties is None:
            return None
        outline = properties.find(_w("outlineLvl"))
        if outline is not None and (outline.get(VAL) or "").isdigit():
            value = int(outline.get(VAL))
            return value + 1 if value < 9 else None
        style = properties.find(_w("pStyle"))
        if style is None or not style.get(VAL):
            return None
        return self.styles.level(style.get(VAL))

    def inline(self, element: etree._Element, pieces: list[str], boxes: list[etree._Element]) -> None:
        """Collect the text of a paragraph's runs; text boxes go to ``boxes`` to follow it."""
        for child in element:
            tag = child.tag
            if tag == T:
                pieces.append(child.text or "")
            elif tag == TAB:
                pieces.append("\t")
            elif tag == BR:
                pieces.append(PAGE_MARK if child.get(TYPE) == "page" else "\n")
            elif tag == CR:
                pieces.append("\n")
            elif tag == NO_BREAK_HYPHEN:
                pieces.append("-")
            elif tag == RENDERED_BREAK:
                pieces.append(PAGE_MARK)
            elif tag == TXBX_CONTENT:
                boxes.append(child)
            elif tag == ALTERNATE_CONTENT:
                self.inline(_pick_alternative(child), pieces, boxes)
            elif tag in SKIPPED or not isinstance(tag, str):
                if tag in TRACKED:
                    self.saw_tracked_changes = True
                continue
            else:
                if tag in TRACKED:
                    self.saw_tracked_changes = True
                self.inline(child, pieces, boxes)

    # Tables ----------------------------------------------------------------

    def table_lines(self, table: etree._Element) -> list[str]:
        """Return one line per row, with cells joined by " | " and merged cells once."""
        lines: list[str] = []
        for row in table.iter(TR):
            if row.getparent() is not table and _owning_table(row) is not table:
                continue
            cells: list[str] = []
            for cell in row.iterchildren(TC):
                if _continues_merge(cell):
                    continue
                text = self.cell_text(cell)
                if text:
                    cells.append(text)
            if cells:
                lines.append(CELL_SEPARATOR.join(cells))
        return lines

    def cell_text(self, cell: etree._Element) -> str:
        inner = _TextBuilder(self.styles, self.clock)
        inner.blocks(cell)
        self.saw_tracked_changes |= inner.saw_tracked_changes
        return " ".join(part.strip() for part in "".join(inner.parts).split(PARAGRAPH_SEPARATOR) if part.strip())


def normalize_characters_keep_marks(text: str) -> str:
    """Normalize like :func:`normalize_characters` but keep the page marks (form feeds)."""
    return PAGE_MARK.join(normalize_characters(piece) for piece in text.split(PAGE_MARK))


def _pick_alternative(element: etree._Element) -> etree._Element:
    """Pick one branch of mc:AlternateContent, which contains the same content twice.

    The first mc:Choice is taken when it has any text, else the mc:Fallback.
    """
    choice = element.find(CHOICE)
    if choice is not None and next(choice.iter(T), None) is not None:
        return choice
    fallback = element.find(FALLBACK)
    if fallback is not None:
        return fallback
    return choice if choice is not None else etree.Element("empty")


def _owning_table(row: etree._Element) -> etree._Element | None:
    parent = row.getparent()
    while parent is not None and parent.tag != TBL:
        parent = parent.getparent()
    return parent


def _continues_merge(cell: etree._Element) -> bool:
    """Return True for a cell that continues a vertical or legacy horizontal merge."""
    properties = cell.find(TCPR)
    if properties is None:
        return False
    for tag in (_w("vMerge"), _w("hMerge")):
        merge = properties.find(tag)
        if merge is not None and merge.get(VAL, "continue") != "restart":
            return True
    return False


# Loading ----------------------------------------------------------------------


def _note_parts(word_document: docx.document.Document) -> list[tuple[str, bytes]]:
    """Return (kind, XML) of the footnotes and endnotes parts, footnotes first."""
    found: dict[str, bytes] = {}
    for relationship in word_document.part.rels.values():
        if relationship.is_external:
            continue
        for kind in ("footnotes", "endnotes"):
            if relationship.reltype.endswith("/" + kind):
                found[kind] = relationship.target_part.blob
    return [(kind, found[kind]) for kind in ("footnotes", "endnotes") if kind in found]


def _add_notes(builder: _TextBuilder, kind: str, xml: bytes) -> None:
    root = etree.fromstring(xml, _SAFE_PARSER)
    tag = _w(kind[:-1])  # w:footnote or w:endnote
    for note in root.iterchildren(tag):
        if note.get(TYPE) in NOTE_TYPES_SKIPPED:
            continue
        builder.blocks(note)


def _split_pages(marked: str) -> tuple[str, list[int]]:
    """Remove the page marks from ``marked``; return the text and where each page starts.

    A page starts at the first non-blank character after its mark. A mark
    with no text since the previous page start is dropped, because Word often
    records an explicit break and a rendered break for the same page.
    """
    pieces = marked.split(PAGE_MARK)
    text = "".join(pieces).rstrip()
    starts = [0]
    position = len(pieces[0])
    for piece in pieces[1:]:
        start = position + len(piece) - len(piece.lstrip())
        if start < len(text) and text[starts[-1] : position].strip():
            starts.append(start)
        position += len(piece)
    return text, starts


def _pages_from_app_properties(path: Path) -> int | None:
    """Return the page count Word stored in docProps/app.xml, if any."""
    try:
        with zipfile.ZipFile(path) as archive:
            xml = archive.read("docProps/app.xml")
    except (KeyError, zipfile.BadZipFile, OSError):
        return None
    match = re.search(rb"<(?:\w+:)?Pages>(\d+)</", xml)
    return int(match.group(1)) if match else None


def load_docx(
    path: Path,
    limits: DocumentLimits,
    progress: ProgressFn | None,
    cancel: CancellationToken | None,
) -> Document:
    """Read the body, text boxes, tables, footnotes and endnotes of a .docx file."""
    clock = ReadingClock(path, limits)
    check_docx_archive(path, limits)
    if progress is not None:
        progress(0, 1, "pages")
    try:
        word_document = docx.Document(str(path))
        styles = _StyleLevels(word_document.styles.element)
        notes = _note_parts(word_document)
    except (PackageNotFoundError, KeyError, ValueError, etree.XMLSyntaxError, *ARCHIVE_READ_ERRORS) as error:
        raise CorruptedDocumentError(
            path, f"the Word file could not be opened ({error}). Open it in Word and save it again."
        ) from error
    except (AttributeError, TypeError) as error:
        # python-docx 1.2 does not validate the package structure. It raises
        # AttributeError when a part has an unknown content type in
        # [Content_Types].xml (it is loaded as a plain Part), and TypeError
        # when a relationship has no Target attribute.
        raise CorruptedDocumentError(
            path,
            "the Word file could not be opened because its package structure is invalid "
            f"({type(error).__name__}: {error}). Open it in Word and save it again.",
        ) from error

    builder = _TextBuilder(styles, clock)
    body = getattr(word_document.element, "body", None)
    if body is None:
        # The main part parsed as XML but is not a w:document (another part renamed over it).
        raise CorruptedDocumentError(
            path, "the Word file's main part is not a document body. Open it in Word and save it again."
        )
    builder.blocks(body)
    if cancel is not None:
        cancel.raise_if_cancelled()
    for kind, xml in notes:
        try:
            _add_notes(builder, kind, xml)
        except etree.XMLSyntaxError as error:
            logger.warning("%s: skipped unreadable %s part: %s", path.name, kind, error)

    marked = "".join(builder.parts)
    check_characters(path, len(marked), limits)
    text, starts = _split_pages(marked)
    headings = _shift_headings(builder.headings, marked)

    spans: list[PageSpan] = []
    rendered = word_document.element.body.find(".//" + RENDERED_BREAK) is not None
    if rendered and len(starts) > 1:
        ends = starts[1:] + [len(text)]
        spans = [PageSpan(page=number, start=start, end=end) for number, (start, end) in enumerate(zip(starts, ends), 1)]

    warnings: list[str] = []
    if builder.saw_tracked_changes:
        warnings.append("the document has tracked changes; the text includes insertions and leaves out deletions.")
    if progress is not None:
        progress(1, 1, "pages")
    logger.info("%s: read %d characters, %d headings, %d pages", path.name, len(text), len(headings), len(spans))
    return Document(
        path=path,
        format="docx",
        text=text,
        pages=spans,
        headings=headings,
        warnings=warnings,
        page_count=len(spans) if spans else _pages_from_app_properties(path),
        pages_approximate=True,
    )


def _shift_headings(headings: list[Heading], marked: str) -> list[Heading]:
    """Move heading offsets from the marked text to the text without page marks."""
    marks = [index for index, char in enumerate(marked) if char == PAGE_MARK]
    return [
        Heading(level=heading.level, title=heading.title, start=heading.start - bisect.bisect_left(marks, heading.start))
        for heading in headings
    ]

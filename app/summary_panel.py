"""The summary pane: the summary, the windows with their pages, sentence sources, and the source text."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QColor, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QSplitter,
    QTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from synopsis.engine.documents import Document
from synopsis.engine.summarize import Summary

log = logging.getLogger(__name__)

SENTENCES_LABEL = "Where each sentence came from: an indication from the model's attention, not a citation"
ROLE_RANGE = Qt.ItemDataRole.UserRole  # (pages or None, (char_start, char_end) or None)


def describe_pages(pages: tuple[int, int] | None) -> str:
    if not pages:
        return "no page numbers"
    first, last = pages
    return f"page {first}" if first == last else f"pages {first}–{last}"


def source_span(
    document: Document, pages: tuple[int, int] | None, chars: tuple[int, int] | None
) -> tuple[int, int] | None:
    """Return the characters of ``document.text`` that cover ``pages``, else ``chars``."""
    if pages and document.pages:
        spans = [span for span in document.pages if pages[0] <= span.page <= pages[1]]
        if spans:
            return spans[0].start, spans[-1].end
    return chars


class SummaryPanel(QWidget):
    """Shows one summary; clicking a window or a sentence shows the text of its pages."""

    sig_document_needed = Signal(object)
    """Path of the document whose text the source view needs; reply with set_document()."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary: Summary | None = None
        self.document: Document | None = None
        self._pending: tuple | None = None  # a range clicked before the document text arrived
        self._source_warning = ""  # shown with every range, e.g. when the file changed since summarizing

        self.header = QLabel("Drop documents on the window, or use File > Open.")
        self.header.setWordWrap(True)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setPlaceholderText("The summary appears here.")
        font = self.text.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.text.setFont(font)
        self.sentences = QListWidget()
        self.sentences.setWordWrap(True)
        self.sentences.setToolTip(SENTENCES_LABEL)
        self.windows = QListWidget()
        self.source_label = QLabel("Click a window or a sentence to see its pages.")
        self.source_label.setWordWrap(True)
        self.source = QPlainTextEdit()
        self.source.setReadOnly(True)
        self.copy_button = QToolButton()
        self.export_button = QToolButton()

        self.windows.itemClicked.connect(self._on_range_clicked)
        self.windows.currentItemChanged.connect(lambda item, _previous: self._on_range_clicked(item))
        self.sentences.itemClicked.connect(self._on_range_clicked)
        self.sentences.currentItemChanged.connect(lambda item, _previous: self._on_range_clicked(item))
        self._build_layout()

    def _build_layout(self) -> None:
        buttons = QHBoxLayout()
        buttons.addWidget(self.header, 1)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.export_button)

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.text)
        left.addWidget(_titled(QLabel(SENTENCES_LABEL), self.sentences))
        left.setSizes([300, 160])

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(_titled(QLabel("Windows and the pages each covered"), self.windows))
        right.addWidget(_titled(self.source_label, self.source))
        right.setSizes([160, 300])

        columns = QSplitter(Qt.Orientation.Horizontal)
        columns.addWidget(left)
        columns.addWidget(right)
        columns.setSizes([620, 420])

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(columns, 1)

    def set_actions(self, copy: QAction, export: QAction) -> None:
        self.copy_button.setDefaultAction(copy)
        self.export_button.setDefaultAction(export)
        for button in (self.copy_button, self.export_button):
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)

    def clear(self, message: str = "") -> None:
        self.summary = None
        self.document = None
        self._pending = None
        self._source_warning = ""
        self.header.setText(message)
        self.text.clear()
        self.sentences.clear()
        self.windows.clear()
        self.source.clear()
        self.source_label.setText("Click a window or a sentence to see its pages.")

    def show_summary(self, summary: Summary, header: str, document: Document | None = None) -> None:
        """Show ``summary``; ``document`` is its text if already in memory."""
        self.clear(header)
        self.summary = summary
        self.document = document
        self.text.setPlainText(summary.text)
        self._fill_windows(summary)
        self._fill_sentences(summary)

    def _fill_windows(self, summary: Summary) -> None:
        for window in summary.windows:
            label = f"Window {window.index + 1}: {describe_pages(window.pages)}, {window.tokens:,} tokens"
            item = QListWidgetItem(label)
            item.setData(ROLE_RANGE, (window.pages, (window.char_start, window.char_end), f"Window {window.index + 1}"))
            self.windows.addItem(item)

    def _fill_sentences(self, summary: Summary) -> None:
        if not summary.sentences:
            placeholder = QListWidgetItem("No sentence sources for this summary.")
            placeholder.setFlags(Qt.ItemFlag.NoItemFlags)
            self.sentences.addItem(placeholder)
            return
        by_index = {window.index: window for window in summary.windows}
        for number, sentence in enumerate(summary.sentences, start=1):
            windows = ", ".join(str(index + 1) for index in sentence.windows)
            item = QListWidgetItem(f"{describe_pages(sentence.pages)} (windows {windows}): {sentence.text}")
            chosen = [by_index[index] for index in sentence.windows if index in by_index]
            chars = (min(w.char_start for w in chosen), max(w.char_end for w in chosen)) if chosen else None
            item.setData(ROLE_RANGE, (sentence.pages, chars, f"Sentence {number}"))
            self.sentences.addItem(item)

    def set_document(self, document: Document, warning: str = "") -> None:
        """Supply the document text for the source view, and show a range clicked while it was read."""
        self.document = document
        self._source_warning = warning
        if warning:
            self.source_label.setText(warning)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._show_range(*pending)

    def document_failed(self, message: str) -> None:
        self._pending = None
        self.source_label.setText(f"The document text cannot be shown: {message}")

    def _on_range_clicked(self, item: QListWidgetItem | None) -> None:
        if item is None or item.data(ROLE_RANGE) is None:
            return
        pages, chars, name = item.data(ROLE_RANGE)
        if self.document is None:
            if self.summary is None:
                return
            self._pending = (pages, chars, name)
            self.source_label.setText(f"{name}, {describe_pages(pages)}: reading the document…")
            self.source.clear()
            self.sig_document_needed.emit(Path(self.summary.file))
            return
        self._show_range(pages, chars, name)

    def _show_range(self, pages, chars, name: str) -> None:
        span = source_span(self.document, pages, chars)
        if span is None:
            self.source_label.setText(f"{name}: no text range is known.")
            return
        start, end = span
        where = f"the text of {describe_pages(pages)}" if pages else "its text"
        self.source_label.setText(f"{name}: {where}. {self._source_warning}".strip())
        self.source.setPlainText(self.document.text[start:end])
        if chars is not None:
            # NOTE: Python offsets count code points and QTextCursor counts UTF-16
            # units, so the shading drifts after characters outside the BMP (emoji).
            self._highlight(chars[0] - start, chars[1] - start)

    def _highlight(self, start: int, end: int) -> None:
        """Shade the part of the shown pages that the clicked window or sentence's windows cover."""
        length = len(self.source.toPlainText())
        start, end = max(start, 0), min(end, length)
        if start >= end:
            return
        cursor = QTextCursor(self.source.document())
        cursor.setPosition(start)
        cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        selection = QTextEdit.ExtraSelection()
        selection.cursor = cursor
        shade = QTextCharFormat()
        shade.setBackground(QColor(255, 236, 160))
        selection.format = shade
        self.source.setExtraSelections([selection])
        scroll = QTextCursor(self.source.document())
        scroll.setPosition(start)
        self.source.setTextCursor(scroll)
        self.source.centerCursor()


def _titled(title: QLabel, body: QWidget) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 4, 0, 0)
    title.setStyleSheet("font-weight: 600")
    layout.addWidget(title)
    layout.addWidget(body, 1)
    return box

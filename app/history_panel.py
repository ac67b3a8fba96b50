"""The History tab: finished summaries, reopened without the model."""

from __future__ import annotations

import logging

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from synopsis.engine.history import HistoryEntry, HistoryStore

log = logging.getLogger(__name__)

COLUMNS = ("Date", "File", "Model", "Tokens", "Summary length")
ROLE_ID = Qt.ItemDataRole.UserRole


def _length(entry: HistoryEntry) -> str:
    low, high = entry.settings.get("min_tokens"), entry.settings.get("max_tokens")
    if low is None and high is None:
        return "model default"
    return f"{low if low is not None else 0}-{high if high is not None else '…'} tokens"


class HistoryPanel(QWidget):
    """A table of history entries, newest first."""

    sig_open = Signal(object)
    """The HistoryEntry the user chose to reopen."""

    sig_again = Signal(object)
    """The HistoryEntry the user chose to summarize again with the current settings."""

    def __init__(self, store: HistoryStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.entries: list[HistoryEntry] = []
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for column, width in enumerate((140, 260, 220, 80)):
            self.table.setColumnWidth(column, width)
        self.table.itemDoubleClicked.connect(lambda _item: self._emit(self.sig_open))

        open_button = QPushButton("Open")
        open_button.clicked.connect(lambda: self._emit(self.sig_open))
        again_button = QPushButton("Summarize again")
        again_button.clicked.connect(lambda: self._emit(self.sig_again))
        delete_button = QPushButton("Delete")
        delete_button.clicked.connect(self.delete_selected)
        buttons = QHBoxLayout()
        buttons.addWidget(open_button)
        buttons.addWidget(again_button)
        buttons.addStretch(1)
        buttons.addWidget(delete_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)

    def refresh(self) -> None:
        """Read the entries from disk again."""
        self.entries = self.store.entries()
        self.table.setRowCount(len(self.entries))
        for row, entry in enumerate(self.entries):
            cells = (
                entry.created_local.strftime("%Y-%m-%d %H:%M"),
                entry.file_name,
                entry.model,
                f"{entry.total_tokens:,}",
                _length(entry),
            )
            for column, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                cell.setData(ROLE_ID, entry.id)
                if column == 1:
                    cell.setToolTip(entry.source)
                self.table.setItem(row, column, cell)

    def selected(self) -> HistoryEntry | None:
        row = self.table.currentRow()
        return self.entries[row] if 0 <= row < len(self.entries) else None

    def _emit(self, signal) -> None:
        entry = self.selected()
        if entry is not None:
            signal.emit(entry)

    def delete_selected(self) -> None:
        entry = self.selected()
        if entry is None:
            return
        self.store.delete(entry.id)
        self.refresh()

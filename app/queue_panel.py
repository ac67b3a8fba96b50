"""The document queue: one row per document, with its status and what reading it found."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QMenu, QTableView, QVBoxLayout, QWidget

from synopsis.engine.errors import PasswordRequiredError, WrongPasswordError
from synopsis.engine.summarize import Summary

from .eta import StageClock, format_duration

log = logging.getLogger(__name__)


class Status(enum.Enum):
    WAITING = "waiting"
    CHECKING = "checking history"
    READING = "reading"
    LOADING_MODEL = "loading model"
    ENCODING = "encoding"
    GENERATING = "generating"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (Status.DONE, Status.FAILED, Status.CANCELLED)


@dataclass
class QueueItem:
    """One document in the queue and everything shown in its row."""

    job_id: int
    path: Path
    status: Status = Status.WAITING
    pages: int | None = None
    words: int | None = None
    tokens: int | None = None
    windows: int | None = None
    nothing_truncated: bool | None = None
    message: str = ""  # the error or cancel message
    details: str = ""  # the error's traceback, for unexpected errors only
    warnings: tuple[str, ...] = ()  # what reading the document skipped or could not read, e.g. image-only pages
    error: BaseException | None = None
    summary: Summary | None = None
    entry_id: str | None = None
    content_hash: str | None = None
    from_history: bool = False
    clock: StageClock = field(default_factory=StageClock)
    password: str | None = None  # the encrypted PDF's password, kept for Summarize again
    seen_statuses: list[Status] = field(default_factory=list)


COLUMNS = ("File", "Status", "Pages", "Words", "Tokens", "Windows", "Details")
NUMBER_COLUMNS = {2: "pages", 3: "words", 4: "tokens", 5: "windows"}


def _number(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _warning_parts(warnings: tuple[str, ...]) -> list[str]:
    if not warnings:
        return []
    if len(warnings) == 1:
        return [f"warning: {warnings[0]}"]
    return [f"{len(warnings)} warnings (hover to read them all): {warnings[0]}"]


def details_text(item: QueueItem) -> str:
    """Return the text of the Details column for ``item``."""
    if item.status is Status.DONE:
        parts = []
        if item.nothing_truncated:
            parts.append("nothing truncated")
        if item.from_history:
            parts.append("from history, not recomputed")
        elif item.summary is not None:
            parts.append(f"{format_duration(item.summary.seconds)} to summarize")
        parts += _warning_parts(item.warnings)
        return " · ".join(parts)
    if item.status in (Status.FAILED, Status.CANCELLED):
        return item.message
    if item.status is Status.WAITING:
        return ""
    return item.clock.describe()


class QueueModel(QAbstractTableModel):
    """Rows of QueueItem, addressed by job id."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.items: list[QueueItem] = []

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.items)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        item = self.items[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(item, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 0:
                return str(item.path)
            if column == len(COLUMNS) - 1 and item.warnings:
                return "\n".join([self._display(item, column), "", *item.warnings])
            return self._display(item, column) or None
        if role == Qt.ItemDataRole.TextAlignmentRole and column in NUMBER_COLUMNS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and item.status is Status.FAILED and column in (1, 6):
            return Qt.GlobalColor.darkRed
        return None

    @staticmethod
    def _display(item: QueueItem, column: int) -> str:
        if column == 0:
            return item.path.name
        if column == 1:
            return item.status.value
        if column in NUMBER_COLUMNS:
            return _number(getattr(item, NUMBER_COLUMNS[column]))
        return details_text(item)

    def add(self, item: QueueItem) -> int:
        row = len(self.items)
        self.beginInsertRows(QModelIndex(), row, row)
        self.items.append(item)
        self.endInsertRows()
        return row

    def remove(self, job_id: int) -> None:
        row = self.row_of(job_id)
        if row is None:
            return
        self.beginRemoveRows(QModelIndex(), row, row)
        del self.items[row]
        self.endRemoveRows()

    def row_of(self, job_id: int) -> int | None:
        for row, item in enumerate(self.items):
            if item.job_id == job_id:
                return row
        return None

    def item(self, job_id: int) -> QueueItem | None:
        row = self.row_of(job_id)
        return None if row is None else self.items[row]

    def set_status(self, job_id: int, status: Status) -> None:
        item = self.item(job_id)
        if item is None:
            return
        item.status = status
        item.seen_statuses.append(status)
        self.changed(job_id)

    def changed(self, job_id: int) -> None:
        row = self.row_of(job_id)
        if row is not None:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def refresh_running(self) -> None:
        """Repaint the status and details of running rows, so elapsed time moves without new reports."""
        for row, item in enumerate(self.items):
            if not item.status.finished and item.status is not Status.WAITING:
                self.dataChanged.emit(self.index(row, 1), self.index(row, len(COLUMNS) - 1))


class QueuePanel(QWidget):
    """The queue table, with a context menu for the selected document."""

    sig_selected = Signal(int)
    """Job id of the row the user selected."""

    sig_request = Signal(str, int)
    """Action name ("show error", "summarize again", "cancel", "remove", "password") and job id."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = QueueModel(self)
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.verticalHeader().setVisible(False)
        self.view.setWordWrap(False)
        self.view.setAlternatingRowColors(True)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self._size_columns()
        self.view.selectionModel().currentRowChanged.connect(self._on_current_changed)
        self.view.doubleClicked.connect(self._on_double_clicked)
        self.view.customContextMenuRequested.connect(self._show_menu)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)

    def _size_columns(self) -> None:
        header = self.view.horizontalHeader()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for column, width in enumerate((260, 110, 60, 80, 80, 70)):
            self.view.setColumnWidth(column, width)

    def select(self, job_id: int) -> None:
        row = self.model.row_of(job_id)
        if row is not None:
            self.view.selectRow(row)

    def current_job(self) -> int | None:
        index = self.view.currentIndex()
        if not index.isValid():
            return None
        return self.model.items[index.row()].job_id

    def _on_current_changed(self, current: QModelIndex, previous: QModelIndex) -> None:
        if current.isValid():
            self.sig_selected.emit(self.model.items[current.row()].job_id)

    def _on_double_clicked(self, index: QModelIndex) -> None:
        item = self.model.items[index.row()]
        if item.status is Status.FAILED:
            self.sig_request.emit("show error", item.job_id)

    def _show_menu(self, position) -> None:
        index = self.view.indexAt(position)
        if not index.isValid():
            return
        item = self.model.items[index.row()]
        menu = QMenu(self)
        for name, label, enabled in self._menu_entries(item):
            action = QAction(label, menu)
            action.setEnabled(enabled)
            action.triggered.connect(lambda checked=False, n=name, j=item.job_id: self.sig_request.emit(n, j))
            menu.addAction(action)
        menu.exec(self.view.viewport().mapToGlobal(position))

    @staticmethod
    def _menu_entries(item: QueueItem) -> list[tuple[str, str, bool]]:
        entries = [("show error", "Show error…", item.status is Status.FAILED)]
        if isinstance(item.error, (PasswordRequiredError, WrongPasswordError)):
            entries.append(("password", "Enter password…", True))
        entries += [
            ("summarize again", "Summarize again", item.status.finished),
            ("cancel", "Cancel", not item.status.finished),
            ("remove", "Remove from queue", item.status.finished),
        ]
        return entries

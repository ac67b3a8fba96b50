"""The fine-tune dialog's side panels: pairs preview with estimates, the runs list, and the compare view."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from synopsis.engine.pairs import RejectedPair
from synopsis.engine.preflight import PreflightReport
from synopsis.engine.registry import ModelEntry
from synopsis.engine.runs import RunPairs, RunRecord

from .eta import format_duration
from .finetune_monitor import format_memory

MAX_PREVIEW_ROWS = 50  # pairs listed in the preview; the totals count all of them
MAX_REJECTED_ROWS = 1000
PAIR_HEADERS = ["Split", "Source", "Document tokens", "Windows", "Summary tokens"]
WARNING_STYLE = "color: #b00020;"
DOCUMENT_FILTER = "Documents (*.pdf *.docx *.txt *.md);;All files (*)"


def _table(headers: list[str], stretch: int) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.verticalHeader().setVisible(False)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    return table


def _fill_row(table: QTableWidget, row: int, cells: list[str], numeric_from: int = 99) -> None:
    for column, text in enumerate(cells):
        item = QTableWidgetItem(text)
        item.setToolTip(text)
        if column >= numeric_from:
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        table.setItem(row, column, item)


class PreviewPanel(QWidget):
    """The first pairs with their token lengths and windows, the rejected pairs with reasons, and the estimates."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.status_label = QLabel("Choose pairs to see a preview.")
        self.status_label.setWordWrap(True)
        self.device_label = QLabel()
        self.device_label.setToolTip("The device training would run on, with the memory free on it now")
        self.estimate_label = QLabel()
        self.estimate_label.setWordWrap(True)
        self.warning_label = QLabel()
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet(WARNING_STYLE)
        self.warning_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.pairs_table = _table(PAIR_HEADERS, 1)
        self.rejected_label = QLabel()
        self.rejected_table = _table(["Source", "Reason"], 1)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.pairs_table)
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addWidget(self.rejected_label)
        lower_layout.addWidget(self.rejected_table)
        splitter.addWidget(lower)
        splitter.setSizes([320, 160])

        layout = QVBoxLayout(self)
        for label in (self.device_label, self.estimate_label, self.warning_label, self.status_label):
            layout.addWidget(label)
        layout.addWidget(splitter, 1)
        self.rejected_label.setText("Pairs that cannot be used are listed here once pairs are chosen.")

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def set_device(self, text: str, problem: bool = False) -> None:
        self.device_label.setText(f"Device: {text}")
        self.device_label.setStyleSheet(WARNING_STYLE if problem else "")

    def show_pairs(self, pairs: RunPairs) -> None:
        """List the loaded pairs before their tokens are counted, and the pairs that could not be read."""
        rows = [("train", pair) for pair in pairs.train] + [("validation", pair) for pair in pairs.validation]
        self.pairs_table.setRowCount(min(len(rows), MAX_PREVIEW_ROWS))
        for row, (split, pair) in enumerate(rows[:MAX_PREVIEW_ROWS]):
            _fill_row(self.pairs_table, row, [split, pair.source, "…", "…", "…"], numeric_from=2)
        self.set_status(
            f"{len(pairs.train)} training pairs, {len(pairs.validation)} validation pairs"
            f"{self._more(len(rows))}. Counting tokens…"
        )
        self.show_rejected(pairs.rejected)
        self.estimate_label.clear()
        self.warning_label.clear()

    def show_report(self, report: PreflightReport) -> None:
        """Fill in each pair's token lengths and windows, the rejected pairs, and the memory and time estimates."""
        lengths = report.lengths
        self.pairs_table.setRowCount(min(len(lengths), MAX_PREVIEW_ROWS))
        for row, pair in enumerate(lengths[:MAX_PREVIEW_ROWS]):
            cells = [pair.split, pair.source, f"{pair.document_tokens:,}", f"{pair.windows:,}", f"{pair.summary_tokens:,}"]
            _fill_row(self.pairs_table, row, cells, numeric_from=2)
        train, validation = report.train, report.validation
        tokens = sum(pair.document_tokens for pair in lengths)
        self.set_status(
            f"{len(train)} training pairs, {len(validation)} validation pairs{self._more(len(lengths))}: "
            f"{tokens:,} document tokens in windows of {report.window_tokens:,} tokens; "
            f"{report.total_steps:,} optimizer steps ({report.steps_per_epoch:,} per epoch)."
        )
        self.show_rejected(report.rejected)
        self.estimate_label.setText(estimate_text(report))
        self.warning_label.setText("\n".join(warning_lines(report)))

    def show_rejected(self, rejected: list[RejectedPair]) -> None:
        shown = rejected[:MAX_REJECTED_ROWS]
        self.rejected_table.setRowCount(len(shown))
        for row, item in enumerate(shown):
            _fill_row(self.rejected_table, row, [item.source, item.reason])
        if rejected:
            self.rejected_label.setText(f"{len(rejected)} pairs cannot be used:")
            self.rejected_label.setStyleSheet(WARNING_STYLE)
        else:
            self.rejected_label.setText("Every pair can be used.")
            self.rejected_label.setStyleSheet("")

    def rejected_rows(self) -> list[tuple[str, str]]:
        """Return the rejected pairs as listed, for tests and for copying."""
        table = self.rejected_table
        return [(table.item(row, 0).text(), table.item(row, 1).text()) for row in range(table.rowCount())]

    @staticmethod
    def _more(count: int) -> str:
        return f" (the first {MAX_PREVIEW_ROWS} shown)" if count > MAX_PREVIEW_ROWS else ""


def estimate_text(report: PreflightReport) -> str:
    """Return the peak memory and time estimates of a pre-flight report as two lines."""
    lines = []
    if report.peak_memory is not None:
        available = f" of {format_memory(report.available_memory)} available" if report.available_memory else ""
        lines.append(f"Peak memory: about {format_memory(report.peak_memory)}{available} (estimate)")
    else:
        lines.append("Peak memory: not estimated for this model")
    if report.seconds_total is not None:
        speed = "measured" if report.speed_measured else "assumed"
        lines.append(
            f"Time: about {format_duration(report.seconds_total)} for {report.total_steps:,} steps "
            f"(estimate from {speed} speed; evaluation not included)"
        )
    return "\n".join(lines)


def warning_lines(report: PreflightReport) -> list[str]:
    """Return the report's warnings, with the memory warning worded for the dialog's settings."""
    lines = []
    peak, available = report.peak_memory, report.available_memory
    if peak is not None and available is not None and peak > available:
        lines.append(
            f"The estimated peak memory ({format_memory(peak)}, largest pair {report.memory_pair}) is more than "
            f"the {format_memory(available)} the device has. Lower Windows per re-encode chunk to 1, choose "
            "bf16 precision, fewer evaluation beams, or leave out the longest documents."
        )
    # The engine's own memory warning names command-line flags; the line above replaces it.
    lines += [warning for warning in report.warnings if not warning.startswith("The estimated peak memory")]
    return lines


class RunsPanel(QWidget):
    """The runs in the runs folder, with their state, so stopped or interrupted ones can be resumed."""

    sig_resume = Signal(object)
    """The RunRecord the user chose to resume."""

    sig_load = Signal(object)
    """The RunRecord whose settings the user chose to load into the form."""

    HEADERS = ["Name", "State", "Step", "Base model", "Updated (UTC)"]

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.records: list[RunRecord] = []
        self._busy = False  # a task is running, so no run may be resumed
        self.table = _table(self.HEADERS, 3)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the selected run from its newest checkpoint")
        self.load_button = QPushButton("Load its settings")
        self.open_button = QPushButton("Open folder")
        self.resume_button.clicked.connect(lambda: self._emit(self.sig_resume))
        self.load_button.clicked.connect(lambda: self._emit(self.sig_load))
        self.open_button.clicked.connect(self._open_folder)
        buttons = QHBoxLayout()
        for button in (self.resume_button, self.load_button, self.open_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.message_label)
        layout.addLayout(buttons)
        self._update_buttons()

    def show_runs(self, records: list[RunRecord]) -> None:
        selected = self.selected()
        self.records = records
        self.table.setRowCount(len(records))
        for row, record in enumerate(records):
            step = f"{record.step:,} of {record.total_steps:,}" if record.total_steps else "–"
            cells = [record.name, record.state, step, record.base_model, record.updated.replace("T", " ")[:16]]
            _fill_row(self.table, row, cells)
            tip = record.message or record.request_problem or ""
            for column in range(len(cells)):
                self.table.item(row, column).setToolTip(f"{record.folder}\n{tip}".strip())
            if selected is not None and record.name == selected.name:
                self.table.selectRow(row)
        self.message_label.setText("" if records else "No training runs yet.")
        self._update_buttons()

    def selected(self) -> RunRecord | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self.records):
            return None
        return self.records[rows[0].row()]

    def select(self, name: str) -> bool:
        for row, record in enumerate(self.records):
            if record.name == name:
                self.table.selectRow(row)
                return True
        return False

    def set_busy(self, busy: bool) -> None:
        self._busy = busy
        self._update_buttons()

    def _update_buttons(self) -> None:
        record = self.selected()
        self.resume_button.setEnabled(record is not None and record.resumable and not self._busy)
        self.load_button.setEnabled(record is not None and record.request is not None)
        self.open_button.setEnabled(record is not None)

    def _emit(self, signal) -> None:
        record = self.selected()
        if record is not None:
            signal.emit(record)

    def _open_folder(self) -> None:
        record = self.selected()
        if record is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(record.folder)))


class ComparePanel(QWidget):
    """One document summarized by the base model and by a fine-tuned one, side by side."""

    sig_compare = Signal(object, object)
    """The document's Path and the chosen fine-tuned ModelEntry."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.entries: list[ModelEntry] = []
        self.document_edit = QLineEdit()
        self.document_edit.setPlaceholderText("a PDF, DOCX, TXT or MD document")
        browse = QPushButton("Document…")
        browse.clicked.connect(self._choose_document)
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("A fine-tuned model from the model manager; its base model summarizes beside it")
        self.compare_button = QPushButton("Summarize with both")
        self.compare_button.clicked.connect(self._request)
        self.status_label = QLabel("Choose a document and a fine-tuned model.")
        self.status_label.setWordWrap(True)
        self.base_label = QLabel("<b>Base model</b>")
        self.tuned_label = QLabel("<b>Fine-tuned model</b>")
        self.base_text = QTextBrowser()
        self.tuned_text = QTextBrowser()

        top = QHBoxLayout()
        top.addWidget(self.document_edit, 2)
        top.addWidget(browse)
        top.addWidget(self.model_combo, 1)
        top.addWidget(self.compare_button)
        columns = QHBoxLayout()
        for label, text in ((self.base_label, self.base_text), (self.tuned_label, self.tuned_text)):
            column = QVBoxLayout()
            column.addWidget(label)
            column.addWidget(text, 1)
            columns.addLayout(column, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.status_label)
        layout.addLayout(columns, 1)

    def set_models(self, entries: list[ModelEntry], selected_path: Path | None = None) -> None:
        """List the fine-tuned ``entries`` and select the one in ``selected_path``, if given."""
        self.entries = entries
        self.model_combo.clear()
        for entry in entries:
            base = f" (from {entry.base_model})" if entry.base_model else ""
            self.model_combo.addItem(f"{entry.name}{base}")
            if selected_path is not None and entry.path is not None and entry.path.resolve() == selected_path.resolve():
                self.model_combo.setCurrentIndex(self.model_combo.count() - 1)
        self.compare_button.setEnabled(bool(entries))

    def set_busy(self, busy: bool) -> None:
        self.compare_button.setEnabled(not busy and bool(self.entries))

    def show_comparison(self, base_name: str, base_text: str, tuned_name: str, tuned_text: str) -> None:
        self.base_label.setText(f"<b>Base model</b>: {html.escape(base_name)}")
        self.tuned_label.setText(f"<b>Fine-tuned model</b>: {html.escape(tuned_name)}")
        self.base_text.setPlainText(base_text)
        self.tuned_text.setPlainText(tuned_text)

    def _choose_document(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(self, "Choose a document", self.document_edit.text(), DOCUMENT_FILTER)
        if path:
            self.document_edit.setText(path)

    def _request(self) -> None:
        path = self.document_edit.text().strip()
        index = self.model_combo.currentIndex()
        if not path or index < 0:
            self.status_label.setText("Choose a document and a fine-tuned model first.")
            return
        self.sig_compare.emit(Path(path).expanduser(), self.entries[index])

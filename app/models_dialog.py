"""The model manager dialog: list, download, add, remove and choose summarization models."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from synopsis.engine.errors import Cancelled, SynopsisError
from synopsis.engine.models import DEFAULT_MODEL
from synopsis.engine.progress import CancellationToken, ProgressFn
from synopsis.engine.registry import ModelEntry, ModelKind, ModelRegistry, ModelStatus

log = logging.getLogger(__name__)

COLUMNS = ("Name", "Kind", "Size", "Status")
# QProgressBar stores a 32-bit int and weights can pass 2 GiB, so the bar
# counts thousandths of the download and its text shows the bytes.
PROGRESS_STEPS = 1000
# Byte progress arrives once per 64 KiB chunk, but the GUI needs it ten times a second at most.
PROGRESS_INTERVAL_S = 0.1

Work = Callable[[ProgressFn, CancellationToken], Any]


def format_bytes(count: int) -> str:
    """Return a byte count in decimal units, as file managers show sizes (1.63 GB)."""
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} TB"  # not reached: the loop returns at GB


class _Task(QObject):
    """Runs one engine call on a worker thread and reports every outcome through signals."""

    sig_progress = Signal(object, object)
    """Progress of the call: (done, total) as ints in the call's unit, at most every PROGRESS_INTERVAL_S."""

    sig_finished = Signal(object)
    """The call's return value."""

    sig_failed = Signal(object)
    """The exception the call raised. It is Cancelled when the user cancelled the call."""

    def __init__(self, work: Work) -> None:
        super().__init__()
        self.cancel = CancellationToken()
        self._work = work
        self._last_report = 0.0

    @Slot()
    def run(self) -> None:
        try:
            result = self._work(self._report, self.cancel)
        except Exception as error:  # noqa: BLE001 - every failure must reach the GUI thread
            self.sig_failed.emit(error)
        else:
            self.sig_finished.emit(result)

    def _report(self, done: int, total: int, unit: str) -> None:
        now = time.monotonic()
        if done < total and now - self._last_report < PROGRESS_INTERVAL_S:
            return
        self._last_report = now
        self.sig_progress.emit(done, total)


class ModelManagerDialog(QDialog):
    """Lists the models of a :class:`ModelRegistry` and lets the user download, add, remove and choose one."""

    sig_model_chosen = Signal(str)
    """The chosen model's source: a hub id or a folder path, as ``load_model`` takes it."""

    def __init__(self, parent: QWidget | None, registry: ModelRegistry | None = None) -> None:
        """Open on ``registry``, or on the registry in the user's data folder when it is None."""
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(760, 440)
        self._registry = registry if registry is not None else ModelRegistry()
        self._entries: list[ModelEntry] = []
        self._chosen: str | None = None
        self._task: _Task | None = None
        self._thread: QThread | None = None
        self._on_result: Callable[[Any], None] | None = None
        self._downloading: str | None = None  # repo id of the download in progress
        self._download_percent: int | None = None
        self._description = ""
        self.last_error: str | None = None  # text of the last error shown, for the log and for tests

        self._build_widgets()
        self.refresh()

    # Layout -----------------------------------------------------------------

    def _build_widgets(self) -> None:
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        # Fixed widths that fit the longest text of each column, so the
        # columns do not jump while a download's status counts up.
        metrics = self.table.fontMetrics()
        for column, widest in ((1, "fine-tuned"), (2, "999 MB"), (3, "downloading 100%")):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Fixed)
            header.resizeSection(column, metrics.horizontalAdvance(widest) + 3 * metrics.averageCharWidth())
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.cellDoubleClicked.connect(self._use_selected)

        self.progress_label = QLabel(self)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, PROGRESS_STEPS)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(self.cancel_task)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress_label)
        progress_row.addWidget(self.progress_bar, 1)
        progress_row.addWidget(self.cancel_button)
        self._progress_widgets = (self.progress_label, self.progress_bar, self.cancel_button)

        self.message_label = QLabel(self)
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.download_button = QPushButton("Download…", self)
        self.resume_button = QPushButton("Resume", self)
        self.add_button = QPushButton("Add folder…", self)
        self.remove_button = QPushButton("Remove", self)
        self.use_button = QPushButton("Use this model", self)
        self.close_button = QPushButton("Close", self)
        self.download_button.setToolTip("Download a summarization model from the Hugging Face hub")
        self.resume_button.setToolTip("Continue the selected partial download where it stopped")
        self.add_button.setToolTip("Add a model folder in save_pretrained layout (config.json, safetensors)")
        self.use_button.setDefault(True)
        self.download_button.clicked.connect(self._ask_download)
        self.resume_button.clicked.connect(self.resume_selected)
        self.add_button.clicked.connect(self._ask_folder)
        self.remove_button.clicked.connect(self._ask_remove)
        self.use_button.clicked.connect(self._use_selected)
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        for button in (self.download_button, self.resume_button, self.add_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.use_button)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addLayout(progress_row)
        layout.addWidget(self.message_label)
        layout.addLayout(buttons)
        self._show_progress(False)

    # Table ------------------------------------------------------------------

    def refresh(self) -> None:
        """Reread the registry and redraw the table, keeping the selected model selected."""
        selected = self.selected_entry()
        try:
            self._entries = self._registry.entries()
        except SynopsisError as error:
            self._entries = []
            self._show_error("The model list could not be read", str(error))
        if self._registry.load_warning:
            self.message_label.setText(self._registry.load_warning)
        elif not self._entries and not self.message_label.text():
            self.message_label.setText(
                "No models yet. Download… fetches one from the Hugging Face hub; Add folder… adds one saved on disk."
            )

        self.table.setRowCount(len(self._entries))
        for row, entry in enumerate(self._entries):
            cells = (entry.name, entry.kind.value, format_bytes(entry.size_bytes), self._status_text(entry))
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(self._tooltip(entry))
                if column == 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
            if selected is not None and entry.key == selected.key:
                self.table.selectRow(row)
        self._update_buttons()

    def _is_downloading(self, entry: ModelEntry) -> bool:
        return self._downloading is not None and entry.kind is ModelKind.HUB and entry.repo_id == self._downloading

    def _status_text(self, entry: ModelEntry) -> str:
        if self._is_downloading(entry):
            percent = f" {self._download_percent}%" if self._download_percent is not None else ""
            return f"downloading{percent}"
        return entry.status.value

    def _tooltip(self, entry: ModelEntry) -> str:
        lines = [entry.source if entry.path is None else str(entry.path)]
        if entry.base_model:
            lines.append(f"Fine-tuned from {entry.base_model}")
        for name, value in sorted(entry.metrics.items()):
            lines.append(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
        if entry.status is ModelStatus.PARTIAL:
            lines.append("Download incomplete: press Resume to continue it.")
        if entry.status is ModelStatus.MISSING:
            lines.append("The folder is gone or no longer holds a model.")
        return "\n".join(lines)

    def selected_entry(self) -> ModelEntry | None:
        """Return the model of the selected row, if any."""
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self._entries):
            return None
        return self._entries[rows[0].row()]

    def selected_model(self) -> str | None:
        """Return the source of the model chosen with "Use this model", else of the selected ready model."""
        if self._chosen is not None:
            return self._chosen
        entry = self.selected_entry()
        return entry.source if entry is not None and entry.status is ModelStatus.READY else None

    def select_model(self, key: str) -> bool:
        """Select the row of the model with this :attr:`ModelEntry.key` and return whether it is listed."""
        for row, entry in enumerate(self._entries):
            if entry.key == key:
                self.table.selectRow(row)
                return True
        return False

    def _update_buttons(self) -> None:
        busy = self._thread is not None
        entry = self.selected_entry()
        self.download_button.setEnabled(not busy)
        self.add_button.setEnabled(not busy)
        self.resume_button.setEnabled(not busy and entry is not None and entry.status is ModelStatus.PARTIAL)
        self.remove_button.setEnabled(not busy and entry is not None)
        self.use_button.setEnabled(entry is not None and entry.status is ModelStatus.READY and not self._is_downloading(entry))

    # Actions ----------------------------------------------------------------

    def _ask_download(self) -> None:
        repo_id, accepted = QInputDialog.getText(
            self, "Download a model", "Hugging Face model id (owner/name):", text=DEFAULT_MODEL
        )
        if accepted and repo_id.strip():
            self.start_download(repo_id.strip())

    def start_download(self, repo_id: str, revision: str = "main") -> None:
        """Download (or resume) a hub model off the GUI thread, showing its progress in bytes."""
        registry = self._registry
        self._downloading = repo_id
        self._download_percent = None

        def work(progress: ProgressFn, cancel: CancellationToken) -> ModelEntry:
            return registry.download(repo_id, revision, progress=progress, cancel=cancel)

        self._start(f"Downloading {repo_id}", work, self._download_finished)

    def resume_selected(self) -> None:
        entry = self.selected_entry()
        if entry is not None and entry.status is ModelStatus.PARTIAL and entry.repo_id:
            self.start_download(entry.repo_id, entry.revision)

    def _download_finished(self, entry: ModelEntry) -> None:
        self.message_label.setText(f"Downloaded {entry.name} ({format_bytes(entry.size_bytes)}).")
        self.refresh()
        self.select_model(entry.key)

    def _ask_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a model folder")
        if folder:
            self.add_folder(Path(folder))

    def add_folder(self, folder: Path) -> None:
        """Check a model folder by loading it, off the GUI thread, then list it."""
        registry = self._registry

        def work(progress: ProgressFn, cancel: CancellationToken) -> ModelEntry:
            return registry.add_folder(folder, cancel=cancel)

        self._start(f"Checking {folder.name}", work, self._folder_added)

    def _folder_added(self, entry: ModelEntry) -> None:
        self.message_label.setText(f"Added {entry.name}.")
        self.refresh()
        self.select_model(entry.key)

    def _ask_remove(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        answer = QMessageBox.question(
            self,
            "Remove model",
            self._removal_question(entry),
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.remove_entry(entry)

    def _removal_question(self, entry: ModelEntry) -> str:
        if entry.kind is ModelKind.HUB:
            return (
                f"Delete {entry.name} ({format_bytes(entry.size_bytes)}) from the Hugging Face cache?\n\n"
                "Other programs that use this cache will have to download it again."
            )
        if self._registry.remove_deletes_files(entry):
            return f"Delete the fine-tuned model {entry.name} and its folder ({format_bytes(entry.size_bytes)})?"
        return f"Remove {entry.name} from the list?\n\nThe folder {entry.path} and its files stay on disk."

    def remove_entry(self, entry: ModelEntry) -> None:
        """Remove a model without confirmation, because the caller already confirmed it with the user."""
        try:
            self._registry.remove(entry)
        except (SynopsisError, OSError) as error:
            log.error("removing %s failed: %s", entry.key, error)
            self._show_error("The model could not be removed", str(error))
        else:
            self.message_label.setText(f"Removed {entry.name}.")
        self.refresh()

    def _use_selected(self, *_cell: int) -> None:
        entry = self.selected_entry()
        if entry is None or entry.status is not ModelStatus.READY or self._is_downloading(entry):
            return
        self._chosen = entry.source
        log.info("model chosen: %s", entry.source)
        self.sig_model_chosen.emit(entry.source)
        self.accept()

    # Worker -----------------------------------------------------------------

    def _start(self, description: str, work: Work, on_result: Callable[[Any], None]) -> None:
        """Run ``work`` on a worker thread. Its result goes to ``on_result`` on the GUI thread."""
        if self._thread is not None:
            raise RuntimeError("a task is already running")  # the buttons prevent this
        self._description = description
        self._on_result = on_result
        self.last_error = None
        self.message_label.clear()
        self.progress_label.setText(f"{description}…")
        # A busy indicator until the first report: a download first lists the
        # repository and checks its config, and a resumed one then starts past zero.
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setFormat("")
        self.cancel_button.setEnabled(True)
        self._show_progress(True)

        task = _Task(work)
        thread = QThread(self)
        task.moveToThread(thread)
        thread.started.connect(task.run)
        task.sig_progress.connect(self._on_progress)
        task.sig_finished.connect(self._on_finished)
        task.sig_failed.connect(self._on_failed)
        task.sig_finished.connect(thread.quit)
        task.sig_failed.connect(thread.quit)
        thread.finished.connect(task.deleteLater)
        self._task, self._thread = task, thread
        self._update_buttons()
        thread.start()

    def cancel_task(self) -> None:
        """Ask the running task to stop. A download keeps what it fetched, for Resume."""
        if self._task is not None:
            self._task.cancel.cancel()
            self.cancel_button.setEnabled(False)
            self.progress_label.setText(f"{self._description}: cancelling…")

    @Slot(object, object)
    def _on_progress(self, done: int, total: int) -> None:
        if total <= 0 or not self._from_current_task():
            return
        first_report = self._download_percent is None
        if self.progress_bar.maximum() != PROGRESS_STEPS:
            self.progress_bar.setRange(0, PROGRESS_STEPS)
        self.progress_bar.setValue(done * PROGRESS_STEPS // total)
        self.progress_bar.setFormat(f"{format_bytes(done)} of {format_bytes(total)}")
        if self._downloading is not None:
            self._download_percent = done * 100 // total
            if first_report:
                self.refresh()  # the download is listed from its first report on
            self._update_download_row(done)

    def _update_download_row(self, done: int) -> None:
        for row, entry in enumerate(self._entries):
            if self._is_downloading(entry):
                self.table.item(row, 2).setText(format_bytes(done))
                self.table.item(row, 3).setText(self._status_text(entry))

    def _from_current_task(self) -> bool:
        # A task abandoned by done() may still deliver its queued result, which is dropped.
        return self._task is not None and self.sender() is self._task

    @Slot(object)
    def _on_finished(self, result: Any) -> None:
        if not self._from_current_task():
            return
        on_result = self._on_result
        self._finish_task()
        if on_result is not None:
            on_result(result)

    @Slot(object)
    def _on_failed(self, error: BaseException) -> None:
        if not self._from_current_task():
            return
        description = self._description
        self._finish_task()
        if isinstance(error, Cancelled):
            hint = " Select it and press Resume to continue." if "Downloading" in description else ""
            self.message_label.setText(f"{description}: cancelled.{hint}")
        elif isinstance(error, SynopsisError):
            self._show_error(f"{description} failed", str(error))
        else:
            log.error("%s failed unexpectedly", description, exc_info=error)
            self._show_error(
                f"{description} failed",
                f"An unexpected error occurred: {type(error).__name__}: {error}. The log file has the details.",
            )
        self.refresh()

    def _finish_task(self) -> None:
        """Wait for the worker thread to end and return the dialog to idle."""
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait()
            self._thread.deleteLater()
        self._task = None
        self._thread = None
        self._on_result = None
        self._downloading = None
        self._download_percent = None
        self._show_progress(False)
        self._update_buttons()

    def _show_progress(self, visible: bool) -> None:
        for widget in self._progress_widgets:
            widget.setVisible(visible)

    def _show_error(self, title: str, text: str) -> None:
        """Show an error in a window-modal box that does not block the caller."""
        self.last_error = text
        self.message_label.setText(text)
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def is_busy(self) -> bool:
        """Return whether a download or folder check is running."""
        return self._thread is not None

    # Closing ----------------------------------------------------------------

    def done(self, result: int) -> None:
        """Close the dialog after cancelling a running task and waiting for it to end.

        A download stops within one read chunk, or within the read timeout of
        a stalled connection (huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT, 10 s
        by default). A folder check cannot stop inside load_model, so closing
        waits for the load to end.
        """
        if self._task is not None:
            log.info("closing the model manager: cancelling %s", self._description)
            self._task.cancel.cancel()
            self._finish_task()
        super().done(result)

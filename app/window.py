"""The main window: the queue, the history, the summary pane, menus and drag-and-drop."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDragMoveEvent, QDropEvent, QGuiApplication, QShowEvent
from PySide6.QtWidgets import QLabel, QMainWindow, QProgressBar, QSplitter, QTabWidget, QWidget

from synopsis.engine.counts import count
from synopsis.engine.history import HistoryEntry, HistoryStore

from . import actions
from .errors import ErrorDialog, user_message
from .history_panel import HistoryPanel
from .preferences import describe_length, generation_settings
from .qt_workarounds import keep_singletons_alive
from .queue_panel import QueueItem, QueuePanel, Status
from .settings import AppSettings, document_limits, load_settings, save_settings
from .summary_panel import SummaryPanel
from .worker import READ, DocumentStats, EngineRunner, JobResult, WindowStats

log = logging.getLogger(__name__)

STAGES = {
    "checking history": Status.CHECKING,
    "reading": Status.READING,
    "loading model": Status.LOADING_MODEL,
    "encoding": Status.ENCODING,
    "generating": Status.GENERATING,
}
STATUS_MESSAGE_MS = 10_000
PROBLEMS_TITLE = "Some saved files could not be used"
PROBLEMS_MESSAGE = (
    "Synopsis goes on without the files listed below. Each entry names the file, what is wrong with it "
    "and, when the file was moved aside, where the original is kept."
)


def problems_pointer(problems: int) -> str:
    """Return the status-bar line that points to the dialog listing ``problems`` problems with saved files."""
    return f"{count(problems, 'saved file')} could not be used. The dialog lists them, and so does the log."


def local_paths_from_urls(urls) -> list[Path]:
    """Turn dropped URLs into paths with Qt's own QUrl.toLocalFile; URLs that are not local files are left out."""
    return [Path(url.toLocalFile()) for url in urls if url.isLocalFile() and url.toLocalFile()]


class MainWindow(QMainWindow):
    """The Synopsis window; ``settings_path`` and ``history`` default to the platform's folders."""

    def __init__(self, settings_path: Path | None = None, history: HistoryStore | None = None) -> None:
        super().__init__()
        keep_singletons_alive()
        # Keep the imported modules' objects out of full garbage collections, which
        # hold the GIL while they walk every object. The worker freezes again after
        # loading a model.
        gc.freeze()
        self.settings_path = settings_path
        loaded = load_settings(settings_path)
        self.settings: AppSettings = loaded.settings
        self.history = history if history is not None else HistoryStore()
        self.runner = EngineRunner(self.history, self)
        self._documents: dict[int, object] = {}  # job id -> Document read by that job, for the source view
        self._read_jobs: dict[int, Path] = {}  # source-view reads in flight, not shown in the queue
        self._shown_job: int | None = None
        self._shown_hash: str | None = None  # SHA-256 of the document whose summary is shown
        self._closing = False
        self.finetune_dialog = None  # FinetuneDialog, created by actions.open_finetune on first use

        self.setWindowTitle("Synopsis")
        self.setAcceptDrops(True)
        self.setMinimumSize(820, 560)
        self.resize(1280, 820)
        self._build_panels()
        self.menu_actions = actions.build(self)
        self._build_status_bar()
        self._connect_runner()
        self._disable_drops_in_children()
        self._restore_geometry()
        self.history_panel.refresh()
        self.update_settings_label()

        self._ticker = QTimer(self)
        self._ticker.setInterval(1000)
        self._ticker.timeout.connect(self._tick)
        self._ticker.start()
        if loaded.problem:
            log.warning("settings: %s", loaded.problem)
        self.settings_problem = loaded.problem
        # Saved files that could not be used at start (settings, history
        # entries), listed in a dialog once the window is first shown.
        self.startup_problems = [loaded.problem] if loaded.problem else []
        self.startup_problems += self.history.take_problems()
        self.problems_dialog: ErrorDialog | None = None
        self._startup_report_pending = bool(self.startup_problems)
        if self.startup_problems:
            self.show_status(problems_pointer(len(self.startup_problems)), 60_000)

    # Layout -----------------------------------------------------------------

    def _build_panels(self) -> None:
        self.queue_panel = QueuePanel()
        self.history_panel = HistoryPanel(self.history)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.queue_panel, "Queue")
        self.tabs.addTab(self.history_panel, "History")
        self.summary_panel = SummaryPanel()

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.tabs)
        self.splitter.addWidget(self.summary_panel)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 5)
        self.splitter.setSizes([230, 560])
        self.splitter.setContentsMargins(8, 8, 8, 0)
        self.setCentralWidget(self.splitter)

        self.queue_panel.sig_selected.connect(self.show_job)
        self.queue_panel.sig_request.connect(self._on_queue_request)
        self.history_panel.sig_open.connect(self.open_history_entry)
        self.history_panel.sig_again.connect(self.summarize_entry_again)
        self.summary_panel.sig_document_needed.connect(self._read_for_source_view)

    def _build_status_bar(self) -> None:
        self.progress_label = QLabel()
        self.progress_bar = QProgressBar()
        self.progress_bar.setMaximumWidth(220)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.hide()
        self.settings_label = QLabel()
        bar = self.statusBar()
        # Permanent widgets sit on the right, so a temporary message (shown on
        # the left) never draws over the progress of the running document.
        bar.addPermanentWidget(self.progress_label)
        bar.addPermanentWidget(self.progress_bar)
        bar.addPermanentWidget(self.settings_label)

    def _disable_drops_in_children(self) -> None:
        # A child that accepts drops (text edits do) would take the files for
        # itself; with drops refused there, Qt hands them to this window.
        for child in self.findChildren(QWidget):
            child.setAcceptDrops(False)

    def _restore_geometry(self) -> None:
        if self.settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(self.settings.window_geometry.encode("ascii")))
        if self.settings.window_state:
            self.restoreState(QByteArray.fromBase64(self.settings.window_state.encode("ascii")))

    def _report_history_problems(self) -> None:
        problems = self.history.take_problems()
        if problems:
            self.show_status(problems_pointer(len(problems)), 60_000)
            self.open_problems_dialog(problems)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._startup_report_pending:
            self._startup_report_pending = False
            # Posted, so the dialog opens once the window is on screen, and start-up is never held up.
            QTimer.singleShot(0, self, self._open_startup_problems)

    def _open_startup_problems(self) -> None:
        self.open_problems_dialog(self.startup_problems)

    def open_problems_dialog(self, problems: list[str]) -> None:
        """Open a non-modal dialog listing ``problems`` in full, with a button that copies them."""
        if self._closing:
            return
        dialog = ErrorDialog(PROBLEMS_TITLE, PROBLEMS_MESSAGE, "\n\n".join(problems), self)
        dialog.setModal(False)
        dialog.show()
        self.problems_dialog = dialog

    def show_status(self, message: str, timeout_ms: int = STATUS_MESSAGE_MS) -> None:
        self.statusBar().showMessage(message, timeout_ms)

    def update_settings_label(self) -> None:
        model = self.settings.model
        name = Path(model).name if ("/" in model and Path(model).expanduser().exists()) else model
        self.settings_label.setText(f"Model: {name} · {describe_length(self.settings)} · {self.settings.beams} beams")
        self.settings_label.setToolTip(f"Model: {model}\nDevice: {self.settings.device}")

    def save_settings(self) -> None:
        self.settings.window_geometry = bytes(self.saveGeometry().toBase64()).decode("ascii")
        self.settings.window_state = bytes(self.saveState().toBase64()).decode("ascii")
        save_settings(self.settings, self.settings_path)

    # Adding and running documents -------------------------------------------

    def add_files(self, paths: list[Path], force: bool = False) -> list[int]:
        """Queue each path for summarizing with the current settings; return the job ids."""
        job_ids = [self._submit(QueueItem(0, Path(path)), force) for path in paths]
        if job_ids:
            self.tabs.setCurrentWidget(self.queue_panel)
            if self._shown_job is None:
                self.queue_panel.select(job_ids[0])
            self.settings.last_open_folder = str(Path(paths[-1]).parent)
        return job_ids

    def _submit(self, item: QueueItem, force: bool, password: str | None = None) -> int:
        if password is not None:
            item.password = password
        password = item.password
        job = self.runner.new_job(
            item.path,
            model=self.settings.model,
            device=self.settings.device,
            settings=generation_settings(self.settings),
            password=password,
            limits=document_limits(self.settings),
            force=force,
        )
        if item.job_id and self.queue_panel.model.item(item.job_id) is item:
            self._reset_item(item, job.id)
        else:
            item.job_id = job.id
            self.queue_panel.model.add(item)
        self.runner.submit(job)
        return job.id

    def _reset_item(self, item: QueueItem, job_id: int) -> None:
        fresh = QueueItem(job_id, item.path)
        old_id = item.job_id
        for name in (
            "status", "message", "details", "error", "summary", "entry_id", "content_hash", "from_history", "clock",
            "pages", "words", "tokens", "windows", "nothing_truncated",
        ):
            setattr(item, name, getattr(fresh, name))
        item.job_id = job_id
        item.seen_statuses = []
        self._documents.pop(old_id, None)
        self.queue_panel.model.changed(job_id)
        if self._shown_job == old_id:
            self._shown_job = job_id
            self.summary_panel.clear(f"{item.path.name}: waiting")

    def cancel_all(self) -> None:
        if self.runner.is_busy():
            self.runner.cancel_all()
            self.show_status("Cancelling…")

    def summarize_again(self, job_id: int | None = None) -> None:
        job_id = job_id if job_id is not None else self.queue_panel.current_job()
        item = self.queue_panel.model.item(job_id) if job_id is not None else None
        if item is not None and item.status.finished:
            self._submit(item, force=True)

    def summarize_entry_again(self, entry: HistoryEntry) -> None:
        self.add_files([Path(entry.source)], force=True)

    def retry_with_password(self, job_id: int, password: str) -> None:
        item = self.queue_panel.model.item(job_id)
        if item is not None:
            self._submit(item, force=False, password=password)

    # Worker reports (delivered on the GUI thread) -----------------------------

    def _connect_runner(self) -> None:
        self.runner.sig_stage.connect(self._on_stage)
        self.runner.sig_progress.connect(self._on_progress)
        self.runner.sig_read.connect(self._on_read)
        self.runner.sig_counted.connect(self._on_counted)
        self.runner.sig_finished.connect(self._on_finished)
        self.runner.sig_failed.connect(self._on_failed)
        self.runner.sig_cancelled.connect(self._on_cancelled)
        self.runner.sig_idle.connect(self._on_idle)

    def _on_stage(self, job_id: int, stage: str) -> None:
        status = STAGES.get(stage)
        if status is not None:
            self.queue_panel.model.set_status(job_id, status)
            self._update_progress(job_id)
            item = self.queue_panel.model.item(job_id)
            # Keep the header above an unfinished summary in step with its row.
            if self._shown_job == job_id and item is not None and item.summary is None:
                self.show_job(job_id)

    def _on_progress(self, job_id: int, done: int, total: int, unit: str) -> None:
        item = self.queue_panel.model.item(job_id)
        if item is None:
            return
        item.clock.update(done, total, unit)
        self.queue_panel.model.changed(job_id)
        self._update_progress(job_id)

    def _on_read(self, job_id: int, stats: DocumentStats) -> None:
        item = self.queue_panel.model.item(job_id)
        if item is not None:
            item.pages, item.words = stats.pages, stats.words
            item.warnings = stats.warnings
            self.queue_panel.model.changed(job_id)
        for warning in stats.warnings:
            log.info("job %d: %s", job_id, warning)

    def _on_counted(self, job_id: int, stats: WindowStats) -> None:
        item = self.queue_panel.model.item(job_id)
        if item is not None:
            item.tokens, item.windows, item.nothing_truncated = stats.tokens, stats.windows, stats.nothing_truncated
            self.queue_panel.model.changed(job_id)

    def _on_finished(self, job_id: int, result: JobResult) -> None:
        if job_id in self._read_jobs:
            self._on_source_read(job_id, result)
            return
        item = self.queue_panel.model.item(job_id)
        if item is None:
            return
        summary = result.summary
        item.summary, item.from_history = summary, result.from_history
        item.entry_id = result.entry.id if result.entry else None
        item.content_hash = result.entry.content_hash if result.entry else None
        item.pages, item.tokens, item.windows = summary.pages, summary.total_tokens, len(summary.windows)
        item.nothing_truncated = sum(window.tokens for window in summary.windows) == summary.total_tokens
        if result.entry is not None and result.entry.words is not None:
            item.words = result.entry.words
        if result.document is not None:
            self._documents[job_id] = result.document
        self.queue_panel.model.set_status(job_id, Status.DONE)
        if result.history_problem:
            self.show_status(result.history_problem, 30_000)
        if not result.from_history:
            self.history_panel.refresh()
            self._report_history_problems()
        if self._shown_job in (None, job_id):
            self.queue_panel.select(job_id)
            self.show_job(job_id)

    def _on_failed(self, job_id: int, error: BaseException, details: str) -> None:
        if job_id in self._read_jobs:
            self._read_jobs.pop(job_id)
            self.summary_panel.document_failed(str(error))
            return
        item = self.queue_panel.model.item(job_id)
        if item is None:
            return
        item.error, item.message, item.details = error, user_message(error), details
        self.queue_panel.model.set_status(job_id, Status.FAILED)
        self.show_status(f"{item.path.name}: failed. Double-click its row to see the message.")
        if self._shown_job == job_id:
            self.show_job(job_id)

    def _on_cancelled(self, job_id: int) -> None:
        if self._read_jobs.pop(job_id, None) is not None:
            return
        item = self.queue_panel.model.item(job_id)
        if item is not None:
            item.message = "Cancelled by the user."
            self.queue_panel.model.set_status(job_id, Status.CANCELLED)

    def _on_idle(self) -> None:
        self.progress_bar.hide()
        self.progress_label.clear()
        if self._closing:
            self.close()

    def _update_progress(self, job_id: int) -> None:
        item = self.queue_panel.model.item(job_id)
        if item is None or item.status.finished:
            return
        clock = item.clock
        self.progress_bar.show()
        if clock.unit is None or item.status in (Status.CHECKING, Status.LOADING_MODEL):
            self.progress_bar.setRange(0, 0)  # busy indicator until work units are known
        else:
            self.progress_bar.setRange(0, max(clock.total, 1))
            self.progress_bar.setValue(clock.done)
        self.progress_label.setText(f"{item.path.name}: {item.status.value} · {clock.describe()}")

    def _tick(self) -> None:
        self.queue_panel.model.refresh_running()
        running = [item for item in self.queue_panel.model.items if not item.status.finished and item.status is not Status.WAITING]
        if running:
            self._update_progress(running[0].job_id)

    # Showing summaries ------------------------------------------------------

    def show_job(self, job_id: int) -> None:
        item = self.queue_panel.model.item(job_id)
        if item is None:
            return
        self._shown_job = job_id
        if item.summary is None:
            text = f"{item.path.name}: {item.status.value}"
            self.summary_panel.clear(f"{text}. {item.message}" if item.message else text)
            return
        origin = "from history, not recomputed" if item.from_history else f"summarized in {item.summary.seconds:.1f} s"
        self._shown_hash = item.content_hash
        self.summary_panel.show_summary(item.summary, self._header(item.summary, origin), self._documents.get(job_id))

    def open_history_entry(self, entry: HistoryEntry) -> None:
        """Show a stored summary; nothing is recomputed."""
        self._shown_job = None
        self.queue_panel.view.clearSelection()
        origin = f"from history, {entry.created_local:%Y-%m-%d %H:%M}"
        self._shown_hash = entry.content_hash
        self.summary_panel.show_summary(entry.to_summary(), self._header(entry.to_summary(), origin))

    @staticmethod
    def _header(summary, origin: str) -> str:
        pages = f"{count(summary.pages, 'page')} · " if summary.pages else ""
        return (
            f"<b>{summary.file.name}</b> · {pages}{count(summary.total_tokens, 'token')} in "
            f"{count(len(summary.windows), 'window')}, "
            f"nothing truncated · model {summary.model} · {origin}"
        )

    def _read_for_source_view(self, path: Path) -> None:
        job = self.runner.new_job(path, kind=READ, limits=document_limits(self.settings))
        self._read_jobs[job.id] = path
        self.runner.submit(job)

    def _on_source_read(self, job_id: int, result: JobResult) -> None:
        path = self._read_jobs.pop(job_id)
        summary = self.summary_panel.summary
        if summary is not None and Path(summary.file) == path and result.document is not None:
            changed = self._shown_hash is not None and result.content_hash != self._shown_hash
            warning = "The file has changed since it was summarized, so the text shown may not match." if changed else ""
            self.summary_panel.set_document(result.document, warning)
            if self._shown_job is not None:
                self._documents[self._shown_job] = result.document

    def current_summary(self):
        return self.summary_panel.summary

    # Requests from the queue's context menu ---------------------------------

    def _on_queue_request(self, name: str, job_id: int) -> None:
        if name == "show error":
            self.show_error(job_id)
        elif name == "summarize again":
            self.summarize_again(job_id)
        elif name == "cancel":
            self.runner.cancel(job_id)
        elif name == "remove":
            self.queue_panel.model.remove(job_id)
            self._documents.pop(job_id, None)
        elif name == "password":
            actions.ask_password(self, job_id)

    def error_dialog(self, job_id: int) -> ErrorDialog | None:
        item = self.queue_panel.model.item(job_id)
        if item is None or item.status is not Status.FAILED:
            return None
        return ErrorDialog(f"{item.path.name} failed", item.message, item.details, self)

    def show_error(self, job_id: int) -> None:
        dialog = self.error_dialog(job_id)
        if dialog is not None:
            dialog.exec()

    # Drag and drop ----------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_paths_from_urls(event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if local_paths_from_urls(event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = local_paths_from_urls(event.mimeData().urls())
        if not paths:
            self.show_status("Only files on this computer can be dropped here.")
            event.ignore()
            return
        event.acceptProposedAction()
        log.info("dropped %d files", len(paths))
        self.add_files(paths)

    # Closing ----------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        """Cancel running work and close once the worker has stopped, so no thread is destroyed while running."""
        if not self._closing:
            self.save_settings()
        if self.finetune_dialog is not None and self.finetune_dialog.stop_for_close(self.close):
            self.show_status("Stopping training and saving a checkpoint before closing…", 0)
            event.ignore()
            return
        if self.runner.is_busy():
            self._closing = True
            self.runner.cancel_all()
            self.show_status("Stopping the running document before closing…", 0)
            event.ignore()
            return
        self._ticker.stop()
        self.runner.shutdown()
        event.accept()

    def copy_summary(self) -> None:
        summary = self.current_summary()
        if summary is not None:
            QGuiApplication.clipboard().setText(summary.text)
            self.show_status("Summary copied to the clipboard.")

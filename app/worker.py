"""Engine work off the GUI thread: the one helper every window action goes through.

:class:`EngineRunner` lives in the GUI thread and owns a QThread with a
:class:`_Worker` in it. Jobs run one at a time, in the order submitted. The
worker's signals reach the runner through queued connections, and the runner
re-emits them, so every result, error and progress report is delivered on the
GUI thread. The worker never touches a widget.

The worker loads the model once and keeps it for later jobs, and loads it
again only when a job requests another model or device.
"""

from __future__ import annotations

import gc
import logging
import time
import traceback
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path

import shiboken6
from PySide6.QtCore import QObject, QThread, Signal, Slot

from synopsis.engine.documents import Document, DocumentLimits, load_document
from synopsis.engine.documents.limits import check_input_tokens
from synopsis.engine.errors import Cancelled, SynopsisError
from synopsis.engine.generation import GenerationSettings
from synopsis.engine.history import HistoryEntry, HistoryStore, entry_from_summary, file_sha256
from synopsis.engine.models import LoadedModel, load_model
from synopsis.engine.progress import CancellationToken
from synopsis.engine.summarize import Summary, document_windows, summarize_document

log = logging.getLogger(__name__)

# Progress reports closer together than this are dropped, except the last of
# a stage, so a fast model cannot flood the GUI's event queue.
PROGRESS_INTERVAL_S = 0.05

SUMMARIZE = "summarize"
READ = "read"  # read the document only, to show its text; no model involved


@dataclass
class Job:
    """One request to the worker; ``cancel`` may be set from any thread."""

    id: int
    path: Path
    kind: str = SUMMARIZE
    model: str = ""
    device: str = "auto"
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    password: str | None = None
    limits: DocumentLimits = field(default_factory=DocumentLimits)
    force: bool = False  # summarize again even when the history has this document
    cancel: CancellationToken = field(default_factory=CancellationToken)


@dataclass(frozen=True)
class DocumentStats:
    """Statistics of a document that has been read."""

    pages: int | None
    words: int
    characters: int
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class WindowStats:
    """Counts of the document's encoder windows."""

    tokens: int
    windows: int
    nothing_truncated: bool  # the windows' content tokens add up to every token of the document


@dataclass
class JobResult:
    """A finished job: a summary (computed or from the history), or a document read for display."""

    summary: Summary | None = None
    document: Document | None = None
    entry: HistoryEntry | None = None
    from_history: bool = False
    history_problem: str | None = None  # why the summary could not be saved to the history
    content_hash: str | None = None  # SHA-256 of the file as read, for a READ job


class _Worker(QObject):
    """Runs jobs in the worker thread; reports only through its signals."""

    sig_stage = Signal(int, str)
    """Job id and stage: "checking history", "reading", "loading model", "encoding" or "generating"."""

    sig_progress = Signal(int, int, int, str)
    """Job id, work units done, units in total, unit name ("pages", "windows" or "tokens")."""

    sig_read = Signal(int, object)
    """Job id and the DocumentStats of the document just read."""

    sig_counted = Signal(int, object)
    """Job id and the WindowStats of the document's windows, before encoding starts."""

    sig_finished = Signal(int, object)
    """Job id and its JobResult."""

    sig_failed = Signal(int, object, str)
    """Job id, the exception, and its traceback text (empty for the engine's own errors)."""

    sig_cancelled = Signal(int)
    """Job id of a job stopped by its cancellation token."""

    def __init__(self, history: HistoryStore) -> None:
        super().__init__()
        self.history = history
        self.loaded: LoadedModel | None = None
        self.loaded_key: tuple[str, str] | None = None
        self.computed = 0  # summaries computed by the model, for tests and logs

    @Slot(object)
    def run_job(self, job: Job) -> None:
        try:
            job.cancel.raise_if_cancelled()
            if job.kind == READ:
                content_hash = file_sha256(job.path, job.cancel)
                document = load_document(job.path, password=job.password, limits=job.limits, cancel=job.cancel)
                self.sig_finished.emit(job.id, JobResult(document=document, content_hash=content_hash))
            else:
                self.sig_finished.emit(job.id, self._summarize(job))
        except Cancelled:
            log.info("job %d cancelled: %s", job.id, job.path)
            self.sig_cancelled.emit(job.id)
        except SynopsisError as error:
            log.warning("job %d failed for %s: %s", job.id, job.path, error)
            self.sig_failed.emit(job.id, error, "")
        except Exception as error:  # noqa: BLE001 - reported to the user with its traceback
            log.exception("job %d failed unexpectedly for %s", job.id, job.path)
            self.sig_failed.emit(job.id, error, traceback.format_exc())

    def _summarize(self, job: Job) -> JobResult:
        self.sig_stage.emit(job.id, "checking history")
        content_hash = file_sha256(job.path, job.cancel)
        if not job.force:
            entry = self.history.find(content_hash, job.model, job.settings)
            if entry is not None:
                log.info("job %d: %s found in history as %s", job.id, job.path, entry.id)
                return JobResult(summary=entry.to_summary(), entry=entry, from_history=True)

        self.sig_stage.emit(job.id, "reading")
        report = self._progress_reporter(job.id)
        document = load_document(
            job.path, password=job.password, limits=job.limits, progress=report, cancel=job.cancel
        )
        stats = DocumentStats(document.page_count, document.words, document.characters, tuple(document.warnings))
        self.sig_read.emit(job.id, stats)

        loaded = self._model_for(job)
        job.cancel.raise_if_cancelled()
        windows = document_windows(document, loaded, job.settings.window_tokens)
        check_input_tokens(job.path, windows.total_tokens, job.limits)
        covered = sum(window.tokens for window in windows.windows)
        self.sig_counted.emit(job.id, WindowStats(windows.total_tokens, len(windows), covered == windows.total_tokens))

        summary = summarize_document(document, loaded, job.settings, report, job.cancel, windows=windows)
        # Name the model as the user chose it, so the history matches the next request.
        summary.model = job.model
        self.computed += 1
        entry = entry_from_summary(summary, content_hash, job.model, job.settings, words=document.words)
        problem = None
        try:
            self.history.save(entry)
        except OSError as error:
            log.error("could not save history entry for %s: %s", job.path, error)
            problem = f"The summary could not be saved to the history: {error}"
        return JobResult(summary=summary, document=document, entry=entry, history_problem=problem)

    def _model_for(self, job: Job) -> LoadedModel:
        key = (job.model, job.device)
        if self.loaded is not None and self.loaded_key == key:
            return self.loaded
        self.sig_stage.emit(job.id, "loading model")
        self._release_model()
        device = None if job.device in ("", "auto") else job.device
        self.loaded = load_model(job.model, device=device)
        self.loaded_key = key
        # A full garbage collection walks every object (about 370,000 with torch,
        # transformers and a model loaded: 0.4 s on a loaded 2-core machine) while
        # holding the GIL, which freezes the GUI thread. Frozen objects are skipped.
        gc.freeze()
        return self.loaded

    def _release_model(self) -> None:
        if self.loaded is None:
            return
        on_cuda = self.loaded.device.type == "cuda"
        self.loaded = None
        self.loaded_key = None
        gc.unfreeze()  # so that the collection below can free the old model's reference cycles
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def _progress_reporter(self, job_id: int):
        last = {"unit": None, "time": 0.0}

        def report(done: int, total: int, unit: str) -> None:
            now = time.monotonic()
            if unit != last["unit"]:
                last["unit"] = unit
                stage = {"windows": "encoding", "tokens": "generating"}.get(unit)
                if stage:
                    self.sig_stage.emit(job_id, stage)
            elif done < total and now - last["time"] < PROGRESS_INTERVAL_S:
                return
            last["time"] = now
            self.sig_progress.emit(job_id, done, total, unit)

        return report


def _stop_thread(thread: QThread, jobs: dict[int, Job], *_destroyed_args) -> None:
    """Cancel ``jobs``, end the thread's event loop and wait until the current job has returned."""
    # The QThread may already be deleted when the window goes away at exit.
    if not shiboken6.isValid(thread) or not thread.isRunning():
        return
    for job in jobs.values():
        job.cancel.cancel()
    thread.quit()
    thread.wait()
    log.info("worker thread stopped")


class EngineRunner(QObject):
    """Submits jobs to the worker thread and re-emits its reports on the GUI thread.

    The signals carry the same payloads as the worker's; see :class:`_Worker`.
    """

    sig_stage = Signal(int, str)
    """Job id and stage name."""
    sig_progress = Signal(int, int, int, str)
    """Job id, units done, units in total, unit name."""
    sig_read = Signal(int, object)
    """Job id and DocumentStats."""
    sig_counted = Signal(int, object)
    """Job id and WindowStats."""
    sig_finished = Signal(int, object)
    """Job id and JobResult."""
    sig_failed = Signal(int, object, str)
    """Job id, exception and traceback text."""
    sig_cancelled = Signal(int)
    """Job id."""
    sig_idle = Signal()
    """No job is running or waiting any more."""

    _sig_submit = Signal(object)

    def __init__(self, history: HistoryStore, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._jobs: dict[int, Job] = {}
        self._next_id = 1
        self._thread = QThread()
        self._thread.setObjectName("synopsis-worker")
        self.worker = _Worker(history)
        self.worker.moveToThread(self._thread)
        self._sig_submit.connect(self.worker.run_job)
        self.worker.sig_stage.connect(self._on_stage)
        self.worker.sig_progress.connect(self._on_progress)
        self.worker.sig_read.connect(self._on_read)
        self.worker.sig_counted.connect(self._on_counted)
        self.worker.sig_finished.connect(self._on_finished)
        self.worker.sig_failed.connect(self._on_failed)
        self.worker.sig_cancelled.connect(self._on_cancelled)
        # If the runner is deleted with its parent while a job runs (a window
        # deleted without a close it accepted), stop the thread first, so Qt never
        # destroys a running QThread. The callback must not reference self.
        self.destroyed.connect(partial(_stop_thread, self._thread, self._jobs))
        self._thread.start()

    def new_job(self, path: Path, **options) -> Job:
        job = Job(id=self._next_id, path=Path(path), **options)
        self._next_id += 1
        return job

    def submit(self, job: Job) -> None:
        self._jobs[job.id] = job
        log.info("job %d submitted: %s %s", job.id, job.kind, job.path)
        self._sig_submit.emit(job)

    def cancel(self, job_id: int) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            job.cancel.cancel()

    def cancel_all(self) -> None:
        for job in self._jobs.values():
            job.cancel.cancel()

    def is_busy(self) -> bool:
        return bool(self._jobs)

    def pending(self, job_id: int) -> bool:
        return job_id in self._jobs

    def shutdown(self) -> None:
        """Cancel every job, stop the thread and wait for it; safe to call twice."""
        _stop_thread(self._thread, self._jobs)

    def thread_running(self) -> bool:
        return self._thread.isRunning()

    # Relays: these run on the GUI thread because self lives there.

    @Slot(int, str)
    def _on_stage(self, job_id: int, stage: str) -> None:
        self.sig_stage.emit(job_id, stage)

    @Slot(int, int, int, str)
    def _on_progress(self, job_id: int, done: int, total: int, unit: str) -> None:
        self.sig_progress.emit(job_id, done, total, unit)

    @Slot(int, object)
    def _on_read(self, job_id: int, stats: DocumentStats) -> None:
        self.sig_read.emit(job_id, stats)

    @Slot(int, object)
    def _on_counted(self, job_id: int, stats: WindowStats) -> None:
        self.sig_counted.emit(job_id, stats)

    @Slot(int, object)
    def _on_finished(self, job_id: int, result: JobResult) -> None:
        self._jobs.pop(job_id, None)
        self.sig_finished.emit(job_id, result)
        self._emit_idle_if_done()

    @Slot(int, object, str)
    def _on_failed(self, job_id: int, error: BaseException, details: str) -> None:
        self._jobs.pop(job_id, None)
        self.sig_failed.emit(job_id, error, details)
        self._emit_idle_if_done()

    @Slot(int)
    def _on_cancelled(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)
        self.sig_cancelled.emit(job_id)
        self._emit_idle_if_done()

    def _emit_idle_if_done(self) -> None:
        if not self._jobs:
            self.sig_idle.emit()

"""The Fine-tune dialog: choose pairs and settings, train off the GUI thread, watch it, resume, compare.

The dialog drives the same engine calls as ``synopsis train``: pairs load
with ``load_pairs``, a pre-flight check estimates memory and time, and the
gradient-cached ``Trainer`` writes its run folder under
``user_data_dir("Synopsis")/runs/<name>/``. A finished run's best model
(its last one without validation pairs) is registered in the model manager.

Closing the dialog only hides it (QDialog's default): training goes on, and the menu shows the
same dialog again. Closing the main window stops training with a
checkpoint first (see :meth:`FinetuneDialog.stop_for_close`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from synopsis.engine.documents import DocumentLimits
from synopsis.engine.errors import SettingsError, SynopsisError
from synopsis.engine.models import DEFAULT_MODEL
from synopsis.engine.registry import ModelEntry, ModelKind, ModelRegistry, ModelStatus
from synopsis.engine.runs import (
    STOPPED,
    RunRecord,
    RunRequest,
    default_runs_dir,
    list_runs,
    load_request,
    metrics_rows,
    read_run,
    save_request,
    train_command,
)
from synopsis.engine.training import EvaluationEvent, StepEvent, checkpoint

from .errors import ErrorDialog, user_message
from .finetune_form import TrainingForm
from .finetune_monitor import TrainingMonitor
from .finetune_panels import ComparePanel, PreviewPanel, RunsPanel
from .training_worker import (
    CHECK,
    COMPARE,
    TRAIN,
    CheckResult,
    Comparison,
    DeviceInfo,
    RunOutcome,
    Task,
    TrainingController,
    describe_device,
)

log = logging.getLogger(__name__)

SETTINGS_FILTER = "Synopsis run settings (*.json);;All files (*)"
TICK_MS = 1000
CLOSING_MESSAGE = "Stopped when Synopsis closed."


class FinetuneDialog(QDialog):
    """Fine-tunes a model on the user's pairs; ``registry`` and ``runs_dir`` default to the user's data folder."""

    def __init__(
        self,
        parent: QWidget | None = None,
        registry: ModelRegistry | None = None,
        runs_dir: Path | None = None,
        model: str | None = None,
        limits: DocumentLimits | None = None,
    ) -> None:
        super().__init__(parent)
        self.limits = limits or DocumentLimits()  # from Preferences; the main window updates it on each open
        self.setWindowTitle("Fine-tune")
        self.setModal(False)
        self.resize(1360, 860)
        self.registry = registry if registry is not None else ModelRegistry()
        self.runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self.controller = TrainingController(self)
        self.active_run: str | None = None  # name of the run being trained
        self.last_outcome: RunOutcome | None = None
        self.last_error: str | None = None  # text of the last error shown, for the log and tests
        self._device_type = "cpu"
        self._after_stop: Callable[[], None] | None = None  # called once training stopped for closing
        self._compare_names = ("base", "fine-tuned")  # model names of the comparison being computed

        self._build_widgets()
        self._connect_controller()
        self._refresh_models(model or DEFAULT_MODEL, prefer_ready=True)
        self.refresh_runs()
        self._update_device()
        self._update_command()
        self._update_buttons()
        self._ticker = QTimer(self)
        self._ticker.setInterval(TICK_MS)
        self._ticker.timeout.connect(self.monitor.refresh_eta)
        self._ticker.start()

    # Layout -----------------------------------------------------------------

    def _build_widgets(self) -> None:
        self.form = TrainingForm()
        self.form.sig_changed.connect(self._update_command)
        self.form.sig_pairs_changed.connect(self.check)
        self.form.device_combo.currentTextChanged.connect(self._update_device)
        scroll = QScrollArea()
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(470)

        self.command_text = QPlainTextEdit()
        self.command_text.setReadOnly(True)
        self.command_text.setMaximumHeight(78)
        self.command_text.setToolTip("The synopsis train command that runs the same training from a terminal")
        copy_button = QPushButton("Copy")
        copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.command_text.toPlainText()))
        command_row = QHBoxLayout()
        command_row.addWidget(self.command_text, 1)
        command_row.addWidget(copy_button, 0, Qt.AlignmentFlag.AlignTop)

        self.load_button = QPushButton("Load settings…")
        self.save_button = QPushButton("Save settings…")
        self.check_button = QPushButton("Check")
        self.check_button.setToolTip("Read the pairs, count tokens and windows, and estimate memory and time")
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current document and save a checkpoint, to resume later")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the stopped run (or the one selected under Runs) from its checkpoint")
        self.load_button.clicked.connect(self._ask_load_settings)
        self.save_button.clicked.connect(self._ask_save_settings)
        self.check_button.clicked.connect(self.check)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.resume_button.clicked.connect(self.resume)
        buttons = QHBoxLayout()
        for button in (self.load_button, self.save_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        for button in (self.check_button, self.start_button, self.stop_button, self.resume_button):
            buttons.addWidget(button)

        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(scroll, 1)
        left_layout.addWidget(QLabel("Equivalent command:"))
        left_layout.addLayout(command_row)
        left_layout.addWidget(self.message_label)
        left_layout.addLayout(buttons)

        self.preview = PreviewPanel()
        self.monitor = TrainingMonitor()
        self.runs_panel = RunsPanel()
        self.runs_panel.sig_resume.connect(self.resume_run)
        self.runs_panel.sig_load.connect(lambda record: self.form.set_request(record.request))
        self.compare_panel = ComparePanel()
        self.compare_panel.sig_compare.connect(self.compare)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.preview, "Preview")
        self.tabs.addTab(self.monitor, "Training")
        self.tabs.addTab(self.runs_panel, "Runs")
        self.tabs.addTab(self.compare_panel, "Compare")

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([500, 860])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

    def _connect_controller(self) -> None:
        controller = self.controller
        controller.sig_stage.connect(self._on_stage)
        controller.sig_progress.connect(self._on_progress)
        controller.sig_pairs.connect(self.preview.show_pairs)
        controller.sig_checked.connect(self._on_checked)
        controller.sig_device.connect(self._on_device)
        controller.sig_step.connect(self._on_step)
        controller.sig_memory.connect(lambda size: self.monitor.set_memory(size, self._device_type))
        controller.sig_evaluation.connect(self._on_evaluation)
        controller.sig_checkpoint.connect(self._on_checkpoint)
        controller.sig_finished.connect(self._on_finished)
        controller.sig_compared.connect(self._on_compared)
        controller.sig_failed.connect(self._on_failed)
        controller.sig_cancelled.connect(self._on_cancelled)
        controller.sig_task_done.connect(self._on_task_done)

    # Models, runs and device ------------------------------------------------

    def _registry_entries(self) -> list[ModelEntry]:
        try:
            return [entry for entry in self.registry.entries() if entry.status is ModelStatus.READY]
        except SynopsisError as error:
            log.warning("the model list could not be read: %s", error)
            self._show_message(f"The model list could not be read: {error}")
            return []

    def _refresh_models(self, current: str, tuned_path: Path | None = None, prefer_ready: bool = False) -> None:
        """Fill the base-model list from the model manager's ready models, selecting ``current``.

        With ``prefer_ready``, a ``current`` hub id that is not downloaded gives
        way to the first ready model, so the dialog does not open on a model
        that training would first have to download.
        """
        entries = self._registry_entries()
        models = [(f"{entry.name} ({entry.kind.value})", entry.source) for entry in entries]
        if not any(source == current for _label, source in models):
            if prefer_ready and models and not Path(current).is_dir():
                current = models[0][1]
            elif Path(current).is_dir():
                models.insert(0, (current, current))
            else:
                models.insert(0, (f"{current} (not downloaded)", current))
        self.form.set_models(models, current)
        tuned = [entry for entry in entries if entry.kind is ModelKind.FINE_TUNED]
        self.compare_panel.set_models(tuned, tuned_path)

    def refresh_runs(self) -> None:
        records = list_runs(self.runs_dir, self.active_run)
        self.runs_panel.show_runs(records)
        # Unreadable run files are moved aside while listing, so each problem is reported once.
        problems = [f"Run {record.name}: {problem}" for record in records for problem in record.problems]
        if problems:
            self._show_message(" ".join(problems), error=True)

    def _update_device(self, *_args) -> None:
        requested = self.form.device_combo.currentText().strip() or "auto"
        try:
            info = describe_device(requested)
        except SynopsisError as error:
            self.preview.set_device(str(error), problem=True)
            return
        self._on_device(info)

    def _on_device(self, info: DeviceInfo) -> None:
        self._device_type = info.device.split(":")[0]
        self.preview.set_device(info.description)

    # The form's request -----------------------------------------------------

    def _update_command(self) -> None:
        try:
            request = self.form.request()
        except SettingsError as error:
            self.command_text.setPlainText(f"# {error}")
            return
        command = train_command(request, self.runs_dir / request.name)
        text = command.text()
        if command.not_expressible:
            text += f"\n# Not settable from the command line: {', '.join(command.not_expressible)}."
        self.command_text.setPlainText(text)

    def _ask_save_settings(self) -> None:
        try:
            request = self.form.request()
        except SettingsError as error:
            self._show_message(str(error), error=True)
            return
        path, _filter = QFileDialog.getSaveFileName(self, "Save run settings", f"{request.name}.json", SETTINGS_FILTER)
        if path:
            self.save_settings(Path(path))

    def save_settings(self, path: Path) -> bool:
        """Write the form's request to ``path``; show the problem and return False when it fails."""
        try:
            save_request(self.form.request(), path)
        except (SettingsError, OSError) as error:
            log.error("saving run settings to %s failed: %s", path, error)
            self._show_message(f"The settings could not be saved to {path}: {error}", error=True)
            return False
        self._show_message(f"Settings saved to {path}.")
        return True

    def _ask_load_settings(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(self, "Load run settings", str(self.runs_dir), SETTINGS_FILTER)
        if path:
            self.load_settings(Path(path))

    def load_settings(self, path: Path) -> bool:
        """Show the request saved in ``path`` in the form; show the problem and return False when it fails."""
        try:
            request = load_request(path)
        except SettingsError as error:
            self._show_message(str(error), error=True)
            return False
        self.form.set_request(request)
        self._show_message(f"Settings loaded from {path}.")
        return True

    # Actions ----------------------------------------------------------------

    def check(self) -> None:
        """Run the pre-flight check on the form's pairs off the GUI thread; a check already running is cancelled."""
        if self.controller.is_training() or not self.form.pairs_edit.text().strip():
            return
        try:
            request = self.form.request()
        except SettingsError as error:
            self.preview.set_status(str(error))
            return
        self.controller.cancel(CHECK)
        self.controller.submit(Task(CHECK, request, limits=self.limits))
        self.preview.set_status("Reading pairs…")
        self._update_buttons()

    def start(self) -> bool:
        """Start a new run with the form's settings; return whether it was submitted."""
        if self.controller.is_training():
            return False
        try:
            request = self.form.request()
        except SettingsError as error:
            self._show_message(str(error), error=True)
            return False
        folder = self.runs_dir / request.name
        if read_run(folder) is not None or (folder.exists() and any(folder.iterdir())):
            self._show_message(
                f"A run named {request.name} already exists in {folder}: resume it from the Runs tab, "
                "or choose another output name.",
                error=True,
            )
            return False
        self.monitor.reset()
        self._submit_training(request, folder, resume=False)
        return True

    def stop(self) -> None:
        if self.controller.stop_training():
            self.monitor.set_status("Stopping after the current document; a checkpoint will be saved…")
            self.stop_button.setEnabled(False)

    def resume(self) -> bool:
        """Resume the run stopped in this session, else the one selected under Runs."""
        record = self.runs_panel.selected()
        if self.last_outcome is not None and self.last_outcome.state == STOPPED:
            record = read_run(self.last_outcome.folder)
        if record is None or not record.resumable:
            self._show_message("Choose a stopped or interrupted run under Runs to resume.", error=True)
            self.tabs.setCurrentWidget(self.runs_panel)
            return False
        return self.resume_run(record)

    def resume_run(self, record: RunRecord) -> bool:
        """Continue ``record`` from its newest checkpoint with the settings it was started with."""
        if self.controller.is_training() or record.request is None:
            return False
        self.form.set_request(record.request)
        self.monitor.reset()
        self.monitor.load_history(metrics_rows(record.folder), best_step=_best_step(record.folder))
        self._submit_training(record.request, record.folder, resume=True)
        return True

    def _submit_training(self, request: RunRequest, folder: Path, resume: bool) -> None:
        self.controller.cancel(CHECK)
        self.active_run = request.name
        self.last_outcome = None
        self.controller.submit(
            Task(TRAIN, request, folder=folder, resume=resume, registry=self.registry, limits=self.limits)
        )
        verb = "Resuming" if resume else "Starting"
        self.monitor.set_status(f"{verb} {request.name}…")
        self._show_message("")
        self.tabs.setCurrentWidget(self.monitor)
        command = train_command(request, folder, resume)
        log.info("training %s (same as: %s)", request.name, command.text())
        self._update_buttons()
        self.refresh_runs()

    def compare(self, document: Path, entry: ModelEntry) -> None:
        """Summarize ``document`` with ``entry``'s base model and with ``entry`` itself, off the GUI thread."""
        if self.controller.is_training():
            self.compare_panel.status_label.setText("Wait until training ends: both would compete for memory.")
            return
        base = entry.base_model or self.form.model_source()
        device = self.form.device_combo.currentText().strip() or "auto"
        self.controller.cancel(CHECK)
        self.controller.submit(
            Task(
                COMPARE, document=document, base_model=base, tuned_model=entry.source, device=device, limits=self.limits
            )
        )
        self._compare_names = (base, entry.name)
        self.compare_panel.status_label.setText(f"Summarizing {document.name}…")
        self._update_buttons()

    # Reports (on the GUI thread) --------------------------------------------

    def _on_stage(self, stage: str) -> None:
        text = f"{stage.capitalize()}…"
        task = self.controller.current_task()
        if task is None:
            return
        if task.kind == TRAIN:
            self.monitor.set_status(f"{task.request.name}: {text}")
        elif task.kind == COMPARE:
            self.compare_panel.status_label.setText(text)
        else:
            self.preview.set_status(text)

    def _on_progress(self, done: int, total: int, unit: str) -> None:
        task = self.controller.current_task()
        if task is not None and task.kind == CHECK and unit == "pairs":
            self.preview.set_status(f"Reading and counting pairs: {done:,} of {total:,}…")

    def _on_checked(self, check: CheckResult) -> None:
        self.preview.show_report(check.report)

    def _on_step(self, event: StepEvent) -> None:
        if event.step == 1 or self.monitor.clock.started is None:
            self.monitor.set_status(f"{self.active_run}: training")
        self.monitor.add_step(event)

    def _on_evaluation(self, event: EvaluationEvent) -> None:
        self.monitor.add_evaluation(event)

    def _on_checkpoint(self, step: int, path: str, kind: str) -> None:
        if kind == "step":
            self.monitor.set_status(f"{self.active_run}: checkpoint saved at step {step}")

    def _on_finished(self, outcome: RunOutcome) -> None:
        self.last_outcome = outcome
        result = outcome.result
        if outcome.state == STOPPED:
            text = f"{outcome.request.name}: stopped at step {result.steps} of {result.total_steps}; checkpoint saved. Resume continues it."
        elif outcome.entry is not None:
            text = (
                f"{outcome.request.name}: {outcome.state} at step {result.steps}. "
                f"The model is in the model manager as {outcome.entry.name}; compare it under Compare."
            )
        else:
            text = f"{outcome.request.name}: {outcome.state} at step {result.steps}."
        self.monitor.set_status(text)
        if outcome.state != STOPPED:
            # The finished run owns its name now, so the next Start needs another.
            self.form.propose_new_name(lambda name: (self.runs_dir / name).exists())
        if outcome.registration_problem:
            self._show_message(outcome.registration_problem, error=True)
        if outcome.entry is not None:
            self._refresh_models(self.form.model_source(), outcome.entry.path)

    def _on_compared(self, comparison: Comparison) -> None:
        base_name, tuned_name = self._compare_names
        self.compare_panel.show_comparison(base_name, comparison.base.text, tuned_name, comparison.tuned.text)
        self.compare_panel.status_label.setText(
            f"{comparison.document.name}: base model {comparison.base.seconds:.1f} s, "
            f"fine-tuned model {comparison.tuned.seconds:.1f} s."
        )

    def _on_failed(self, kind: str, error: BaseException, details: str) -> None:
        message = user_message(error)
        if kind == CHECK:
            self.preview.set_status(f"The check failed: {message}")
            self.last_error = message
            return
        if kind == COMPARE:
            self.compare_panel.status_label.setText(f"Comparing failed: {message}")
            self.last_error = message
            return
        self.monitor.set_status(f"{self.active_run}: training failed.")
        self._show_message(f"Training failed: {message}", error=True)
        if details:
            dialog = ErrorDialog("Training failed", message, details, self)
            dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            dialog.open()

    def _on_cancelled(self, kind: str) -> None:
        if kind == TRAIN:
            self.monitor.set_status(f"{self.active_run}: stopped before training began.")
        elif kind == COMPARE:
            self.compare_panel.status_label.setText("Comparing cancelled.")

    def _on_task_done(self, task: Task) -> None:
        if task.kind == TRAIN:
            self.active_run = None
            self.refresh_runs()
            if task.folder is not None:
                self.runs_panel.select(task.folder.name)
        self._update_buttons()
        if self._after_stop is not None and not self.controller.is_training():
            callback, self._after_stop = self._after_stop, None
            QTimer.singleShot(0, callback)

    # State ------------------------------------------------------------------

    def _update_buttons(self) -> None:
        training = self.controller.is_training()
        stopping = training and self.controller.training_task().cancel.cancelled
        self.start_button.setEnabled(not training)
        self.stop_button.setEnabled(training and not stopping)
        self.resume_button.setEnabled(not training)
        self.check_button.setEnabled(not training)
        self.load_button.setEnabled(not training)
        self.runs_panel.set_busy(training)
        self.compare_panel.set_busy(self.controller.is_busy())

    def _show_message(self, text: str, error: bool = False) -> None:
        self.message_label.setText(text)
        self.message_label.setStyleSheet("color: #b00020;" if error else "")
        if error:
            self.last_error = text
            log.info("fine-tune dialog: %s", text)

    # Closing ----------------------------------------------------------------

    def is_training(self) -> bool:
        return self.controller.is_training()

    def stop_for_close(self, then: Callable[[], None]) -> bool:
        """Prepare for the app closing: return True if training must stop first, and call ``then`` once it has.

        A running run is cancelled. The trainer finishes its current document
        and saves a checkpoint, and the run is recorded as stopped, so it is
        listed and can resume after a restart. When nothing is training, the
        worker thread is stopped at once and False is returned. A check or
        comparison that is loading a model delays that, because loading cannot
        be cancelled.
        """
        if self.controller.stop_training(CLOSING_MESSAGE):
            self._after_stop = then
            self.monitor.set_status("Stopping training and saving a checkpoint before Synopsis closes…")
            self._update_buttons()
            return True
        self.controller.shutdown()
        return False


def _best_step(run_folder: Path) -> int | None:
    """Return the best checkpoint's step recorded in the run's newest complete checkpoint, or None."""
    complete = checkpoint.complete_checkpoints(run_folder / "checkpoints")
    if not complete:
        return None
    try:
        state, _settings = checkpoint.read_state(complete[-1][1])
    except (OSError, ValueError, KeyError) as error:
        log.warning("best step of %s could not be read: %s", run_folder, error)
        return None
    best = state.get("best_step")
    return best if isinstance(best, int) else None

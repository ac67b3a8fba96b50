"""The main window's menus, toolbar and the dialogs they open."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QUrl
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QComboBox, QFileDialog, QInputDialog, QLineEdit, QMessageBox

from synopsis.engine import __version__
from synopsis.engine.errors import ModelError, SynopsisError
from synopsis.engine.logs import log_directory
from synopsis.engine.models import check_model_folder
from synopsis.engine.registry import ModelRegistry

from .export import FORMATS, export_summary
from .preferences import PreferencesDialog, length_choices
from .settings import document_limits

if TYPE_CHECKING:
    from .window import MainWindow

log = logging.getLogger(__name__)

OPEN_FILTER = "Documents (*.pdf *.docx *.txt *.md);;All files (*)"
MAX_MODEL_FOLDERS = 10


@dataclass
class Actions:
    """The window's actions, kept so tests and panels can trigger them."""

    open: QAction
    export: QAction
    copy: QAction
    cancel: QAction
    again: QAction
    preferences: QAction
    models: QAction
    local_model: QAction
    finetune: QAction
    quit: QAction
    length: QComboBox


def _action(window: MainWindow, text: str, slot, shortcuts=(), tip: str = "") -> QAction:
    action = QAction(text, window)
    if shortcuts:
        action.setShortcuts([QKeySequence(key) for key in shortcuts])
    if tip:
        action.setToolTip(tip)
        action.setStatusTip(tip)
    action.triggered.connect(lambda checked=False: slot())
    window.addAction(action)
    return action


def build(window: MainWindow) -> Actions:
    """Create the menus and the toolbar of ``window``."""
    built = Actions(
        open=_action(window, "&Open…", lambda: open_files(window), [QKeySequence.StandardKey.Open], "Add documents to the queue"),
        export=_action(window, "&Export summary…", lambda: export_dialog(window), ["Ctrl+E"], "Save the summary as .txt, .md or .docx"),
        copy=_action(window, "&Copy summary", window.copy_summary, ["Ctrl+Shift+C"], "Copy the summary text"),
        cancel=_action(window, "&Cancel", window.cancel_all, ["Esc", "Ctrl+."], "Stop the running document and the waiting ones"),
        again=_action(window, "Summarize &again", window.summarize_again, ["Ctrl+R"], "Recompute the selected document's summary"),
        preferences=_action(window, "&Preferences…", lambda: edit_preferences(window), ["Ctrl+,"]),
        models=_action(window, "&Models…", lambda: open_model_manager(window)),
        local_model=_action(window, "Use &local model folder…", lambda: choose_model_folder(window)),
        finetune=_action(window, "&Fine-tune…", lambda: open_finetune(window), tip="Fine-tune a model on your document/summary pairs"),
        quit=_action(window, "&Quit", window.close, [QKeySequence.StandardKey.Quit]),
        length=_length_combo(window),
    )
    file_menu = window.menuBar().addMenu("&File")
    for action in (built.open, built.export, built.copy):
        file_menu.addAction(action)
    file_menu.addSeparator()
    file_menu.addAction(built.quit)

    run_menu = window.menuBar().addMenu("&Summarize")
    run_menu.addAction(built.again)
    run_menu.addAction(built.cancel)

    settings_menu = window.menuBar().addMenu("S&ettings")
    for action in (built.preferences, built.models, built.local_model, built.finetune):
        settings_menu.addAction(action)

    help_menu = window.menuBar().addMenu("&Help")
    help_menu.addAction(_action(window, "Open &log folder", open_log_folder))
    help_menu.addAction(_action(window, "&About Synopsis", lambda: show_about(window)))

    toolbar = window.addToolBar("Main")
    toolbar.setObjectName("main-toolbar")
    toolbar.setMovable(False)
    for action in (built.open, built.again, built.cancel, built.export):
        toolbar.addAction(action)
    toolbar.addSeparator()
    toolbar.addWidget(built.length)
    window.summary_panel.set_actions(built.copy, built.export)
    return built


def _length_combo(window: MainWindow) -> QComboBox:
    combo = QComboBox()
    combo.setToolTip("Summary length, in generated tokens (Settings > Preferences sets the exact range)")
    for key, label in length_choices():
        combo.addItem(label, key)
    combo.setCurrentIndex(max(combo.findData(window.settings.length), 0))

    def changed(index: int) -> None:
        window.settings.length = combo.itemData(index)
        window.save_settings()
        window.update_settings_label()

    combo.currentIndexChanged.connect(changed)
    return combo


def open_files(window: MainWindow) -> None:
    paths, _filter = QFileDialog.getOpenFileNames(window, "Open documents", window.settings.last_open_folder, OPEN_FILTER)
    if paths:
        window.add_files([Path(path) for path in paths])


def export_dialog(window: MainWindow) -> None:
    summary = window.current_summary()
    if summary is None:
        window.show_status("There is no summary to export yet.")
        return
    folder = Path(window.settings.last_export_folder or Path(summary.file).parent)
    chosen_format = window.settings.export_format if window.settings.export_format in FORMATS else "md"
    suggested = folder / f"{Path(summary.file).stem}.summary.{chosen_format}"
    filters = ";;".join(FORMATS.values())
    path, selected = QFileDialog.getSaveFileName(window, "Export summary", str(suggested), filters, FORMATS[chosen_format])
    if not path:
        return
    # A typed extension wins over the file-type filter: "notes.docx" means Word.
    typed = Path(path).suffix.lower().lstrip(".")
    export_format = typed if typed in FORMATS else next((key for key, label in FORMATS.items() if label == selected), None)
    export_to(window, Path(path), export_format)


def export_to(window: MainWindow, path: Path, export_format: str | None = None) -> Path | None:
    """Write the shown summary to ``path``; the format comes from the extension when not given."""
    summary = window.current_summary()
    if summary is None:
        return None
    try:
        written = export_summary(summary, path, export_format)
    except OSError as error:
        log.error("export to %s failed: %s", path, error)
        QMessageBox.warning(window, "Export failed", f"The summary could not be written to {path}: {error.strerror or error}.")
        return None
    window.settings.last_export_folder = str(written.parent)
    window.settings.export_format = written.suffix.lstrip(".")
    window.save_settings()
    window.show_status(f"Exported to {written}")
    return written


def edit_preferences(window: MainWindow) -> None:
    dialog = PreferencesDialog(window.settings, window)
    if dialog.exec():
        apply_settings(window, dialog.result_settings())


def apply_settings(window: MainWindow, settings) -> None:
    """Use ``settings`` for the next documents, and save them."""
    window.settings = settings
    window.menu_actions.length.blockSignals(True)
    window.menu_actions.length.setCurrentIndex(max(window.menu_actions.length.findData(settings.length), 0))
    window.menu_actions.length.blockSignals(False)
    window.save_settings()
    window.update_settings_label()


def use_model(window: MainWindow, source: str) -> None:
    """Choose the model for the next documents; the worker loads it on the next job."""
    window.settings.model = source
    if Path(source).is_dir():
        folders = [source] + [folder for folder in window.settings.model_folders if folder != source]
        window.settings.model_folders = folders[:MAX_MODEL_FOLDERS]
    window.save_settings()
    window.update_settings_label()
    window.show_status(f"Model for the next documents: {source}")


def choose_model_folder(window: MainWindow) -> None:
    folder = QFileDialog.getExistingDirectory(window, "Choose a model folder (config.json, tokenizer, model.safetensors)")
    if not folder:
        return
    try:
        check_model_folder(Path(folder))
    except ModelError as error:
        log.info("model folder rejected: %s", error)
        QMessageBox.warning(window, "Not a model folder", str(error))
        return
    # List the folder in the model manager too, so it can be chosen again from there.
    try:
        ModelRegistry().record_folder(folder)
    except SynopsisError as error:
        log.warning("model folder %s not added to the model list: %s", folder, error)
    use_model(window, folder)


def open_model_manager(window: MainWindow) -> None:
    """Open the model manager dialog; when its module is missing, tell the user to pick a folder instead."""
    try:
        from .models_dialog import ModelManagerDialog  # noqa: PLC0415 - optional, loaded on demand
    except ImportError as error:
        log.info("model manager not available: %s", error)
        QMessageBox.information(
            window,
            "Models",
            "The model manager is not available in this build. Use Settings > Use local model folder… "
            "to choose a model folder.",
        )
        return
    # None opens the registry in the user's data folder.
    dialog = ModelManagerDialog(window, None)
    dialog.sig_model_chosen.connect(lambda source: use_model(window, source))
    dialog.exec()


def open_finetune(window: MainWindow) -> None:
    """Show the fine-tune dialog, created on first use and kept, because training goes on while it is hidden."""
    if window.finetune_dialog is None:
        from .finetune_dialog import FinetuneDialog  # noqa: PLC0415 - QtCharts and the trainer load on demand

        window.finetune_dialog = FinetuneDialog(window, model=window.settings.model)
    window.finetune_dialog.limits = document_limits(window.settings)
    window.finetune_dialog.show()
    window.finetune_dialog.raise_()
    window.finetune_dialog.activateWindow()


def ask_password(window: MainWindow, job_id: int) -> None:
    item = window.queue_panel.model.item(job_id)
    if item is None:
        return
    password, accepted = QInputDialog.getText(
        window, "Password", f"Password of {item.path.name}:", QLineEdit.EchoMode.Password
    )
    if accepted:
        window.retry_with_password(job_id, password)


def open_log_folder() -> None:
    folder = log_directory()
    folder.mkdir(parents=True, exist_ok=True)
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))


def show_about(window: MainWindow) -> None:
    QMessageBox.about(
        window,
        "About Synopsis",
        f"<b>Synopsis {__version__}</b><p>Summarizes long documents whole: every window of the "
        "document is encoded, and the decoder attends to all of them at once.</p>",
    )

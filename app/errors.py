"""Showing errors: the engine's message with advice, and a dialog for unexpected exceptions."""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType

from PySide6.QtCore import Qt, QThread
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from synopsis.engine.errors import ModelNotFoundError, OutOfMemoryError, UnsafeWeightsError
from synopsis.engine.logs import log_directory

log = logging.getLogger(__name__)

OOM_ADVICE = (
    "In Settings > Preferences, choose fewer beams (1 uses the least memory) or a shorter summary, "
    "or set the device to cpu. Closing other programs that use the GPU also helps."
)
MODEL_ADVICE = (
    "Choose a model folder on this computer (Settings > Use local model folder…, or Settings > Models…)"
)
# The engine's model messages name command-line options; the window has menus instead.
_COMMAND_LINE_PHRASES = (
    ("pass --model PATH with a model folder", "choose a model folder"),
    ("Pass --model with a folder", "Choose a folder"),
)


def user_message(error: BaseException) -> str:
    """Return the engine's message for ``error``, with advice for the window where the engine's is for the terminal."""
    message = str(error) or type(error).__name__
    if isinstance(error, OutOfMemoryError):
        return f"{message}\n\n{OOM_ADVICE}"
    if isinstance(error, (ModelNotFoundError, UnsafeWeightsError)):
        for phrase, replacement in _COMMAND_LINE_PHRASES:
            message = message.replace(phrase, replacement)
        return f"{message}\n\n{MODEL_ADVICE}"
    return message


class ErrorDialog(QDialog):
    """A message, and details the user can select or copy in one click."""

    def __init__(self, title: str, message: str, details: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.details = details
        label = QLabel(message)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addWidget(label)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        if details:
            text = QPlainTextEdit(details)
            text.setReadOnly(True)
            text.setMinimumHeight(200)
            layout.addWidget(text, 1)
            copy = QPushButton("Copy details")
            copy.clicked.connect(self.copy_details)
            buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        layout.addWidget(buttons)
        self.resize(640, 420 if details else 160)

    def copy_details(self) -> None:
        QGuiApplication.clipboard().setText(self.details)


def crash_details(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> str:
    """Return the traceback text with the log folder, for a bug report."""
    text = "".join(traceback.format_exception(kind, value, tb))
    return f"{text}\nLog folder: {log_directory()}\n"


class ExceptionHook:
    """A sys.excepthook that logs an uncaught exception and shows it in an ErrorDialog.

    Only exceptions raised on the GUI thread open the dialog. The worker catches
    its own, and any other thread's exception is logged only.
    """

    def __init__(self) -> None:
        self.previous = sys.excepthook
        self.dialogs_shown = 0
        self._showing = False

    def install(self) -> None:
        sys.excepthook = self

    def uninstall(self) -> None:
        if sys.excepthook is self:
            sys.excepthook = self.previous

    def __call__(self, kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            self.previous(kind, value, tb)
            return
        log.critical("uncaught exception", exc_info=(kind, value, tb))
        app = QApplication.instance()
        if app is None or QThread.currentThread() is not app.thread() or self._showing:
            return
        self._showing = True
        try:
            self.dialogs_shown += 1
            dialog = ErrorDialog(
                "Unexpected error",
                "Synopsis hit an unexpected error. Your queue and finished summaries are kept. "
                "The details below are also in the log; please include them in a bug report.",
                crash_details(kind, value, tb),
                QApplication.activeWindow(),
            )
            dialog.exec()
        finally:
            self._showing = False

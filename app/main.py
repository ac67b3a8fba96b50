"""Starting the desktop window: ``synopsis`` or ``synopsis gui``."""

from __future__ import annotations

import importlib.resources
import logging
import sys
from pathlib import Path

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from synopsis.engine.logs import configure_logging

from .errors import ExceptionHook

log = logging.getLogger(__name__)

APP_NAME = "Synopsis"
# resources/ installs as the synopsis.resources package, with its icons as package data.
RESOURCES = Path(str(importlib.resources.files("synopsis.resources")))


def app_icon() -> QIcon:
    """Return the Synopsis icon, or an empty icon when the resources folder is missing."""
    icon = QIcon()
    for name in ("synopsis.svg", "synopsis.png"):
        path = RESOURCES / name
        if path.is_file():
            icon.addFile(str(path))
    if icon.isNull():
        log.info("no icon found in %s", RESOURCES)
    return icon


def create_application(argv: list[str] | None = None) -> QApplication:
    """Return the running QApplication, creating it with Synopsis's names and icon if needed."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setDesktopFileName("synopsis")
    app.setWindowIcon(app_icon())
    return app


def run_gui(files: list[str | Path] | None = None) -> int:
    """Open the main window, run the event loop and return its exit code."""
    if not logging.getLogger("synopsis").handlers:
        configure_logging()
    app = create_application()
    hook = ExceptionHook()
    hook.install()

    from .window import MainWindow  # noqa: PLC0415 - after QApplication exists

    window = MainWindow()
    window.setWindowIcon(app.windowIcon())
    # Quitting by any other route than closing the window must still stop the worker.
    app.aboutToQuit.connect(window.runner.shutdown)
    window.show()
    if files:
        window.add_files([Path(path) for path in files])
    log.info("desktop window started")
    try:
        code = app.exec()
    finally:
        hook.uninstall()
    log.info("desktop window closed with code %d", code)
    return int(code)

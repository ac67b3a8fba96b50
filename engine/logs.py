"""Logging to a rotating file under the platform's log directory."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

import platformdirs

APP_NAME = "Synopsis"
LOG_FILE_BYTES = 2_000_000
LOG_FILE_BACKUPS = 5


def log_directory() -> Path:
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def configure_logging(stderr_level: int | None = None) -> Path | None:
    """Send the ``synopsis`` loggers to a rotating file, and to stderr at ``stderr_level`` if given.

    Returns the log file's path, or None when the log directory cannot be
    written (a read-only home must not stop the program).
    """
    root = logging.getLogger("synopsis")
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")

    log_file: Path | None = log_directory() / "synopsis.log"
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
        )
    except OSError:
        log_file = None
    else:
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)

    if stderr_level is not None:
        stream_handler = logging.StreamHandler()
        stream_handler.setLevel(stderr_level)
        stream_handler.setFormatter(formatter)
        root.addHandler(stream_handler)
    return log_file

"""GUI stability and latency fixes: the reference reserve for Qt's lost references, and frozen objects."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Calls of a Qt method without a result, more than None's reference count at start-up.
CALLS = 300_000

SCRIPT = textwrap.dedent(
    f"""
    import os, sys
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication, QLabel
    app = QApplication([])
    if sys.argv[1] == "reserve":
        from synopsis.app.qt_workarounds import keep_singletons_alive
        keep_singletons_alive()
    label = QLabel()
    for _ in range({CALLS}):
        label.setText("x")
    print("survived")
    """
)


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=300, check=False
    )


def test_reserve_survives_many_qt_calls():
    done = _run("reserve")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "survived" in done.stdout


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from CPython 3.12 on")
def test_reserve_is_added_once():
    from synopsis.app import qt_workarounds

    qt_workarounds.keep_singletons_alive()
    after_first = sys.getrefcount(None)
    assert after_first > qt_workarounds._RESERVE
    assert sys.getrefcount(True) > qt_workarounds._RESERVE
    assert sys.getrefcount(False) > qt_workarounds._RESERVE

    qt_workarounds.keep_singletons_alive()
    # Other threads may take or drop a few references meanwhile.
    assert abs(sys.getrefcount(None) - after_first) < 1000


def test_worker_freezes_loaded_objects(qtbot, tmp_path, tiny_model_dir, corpus):
    """After loading a model the worker moves every object out of the collector's full passes."""
    import gc
    import shutil

    from synopsis.app.queue_panel import Status
    from synopsis.app.settings import AppSettings, save_settings
    from synopsis.app.window import MainWindow
    from synopsis.engine.history import HistoryStore

    settings_path = tmp_path / "settings.json"
    save_settings(
        AppSettings(model=str(tiny_model_dir), device="cpu", length="exact", min_tokens=4, max_tokens=8, beams=2),
        settings_path,
    )
    document = tmp_path / "paper.pdf"
    shutil.copyfile(corpus / "documents" / "mozilla_pdf.js__tracemonkey.pdf", document)
    window = MainWindow(settings_path, HistoryStore(tmp_path / "history"))
    qtbot.addWidget(window)
    gc.unfreeze()

    [job_id] = window.add_files([document])
    qtbot.waitUntil(lambda: window.queue_panel.model.item(job_id).status is Status.DONE, timeout=120_000)
    assert gc.get_freeze_count() > 100_000

    window.runner.worker._release_model()
    assert gc.get_freeze_count() == 0
    window.close()
    qtbot.waitUntil(lambda: not window.runner.thread_running(), timeout=60_000)

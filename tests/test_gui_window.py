"""The main window end to end, with the tiny model and real documents dropped on it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import docx
import pytest
import shiboken6
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QThread, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QGuiApplication
from PySide6.QtWidgets import QApplication, QFileDialog

from synopsis.app import actions
from synopsis.app.queue_panel import Status
from synopsis.app.settings import AppSettings, save_settings
from synopsis.app.window import MainWindow, problems_pointer
from synopsis.engine.history import HistoryStore

DOCUMENTS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "documents"
SMALL_PDF = "mozilla_pdf.js__copy_paste_ligatures.pdf"
PAPER_PDF = "mozilla_pdf.js__tracemonkey.pdf"
LONG_PDF = "Unstructured-IO_unstructured__pdf2image-memory-error-test-400p.pdf"
ODD_NAME = "Rapport annuel é 2015 – 日本.pdf"
WAIT_MS = 60_000


def corpus_copy(tmp_path: Path, name: str, as_name: str | None = None) -> Path:
    source = DOCUMENTS / name
    if not source.is_file():
        pytest.skip(f"corpus document not found: {source}")
    target = tmp_path / (as_name or name)
    shutil.copyfile(source, target)
    return target


def drop_files(target, paths: list[Path]) -> bool:
    """Drag ``paths`` over ``target`` and drop them, as a file manager would; return whether the drop was accepted."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path)) for path in paths])
    center = QPoint(target.width() // 2, target.height() // 2)
    buttons, modifiers = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    actions_allowed = Qt.DropAction.CopyAction
    # PySide6 6.12 takes a QPointF for drag events, and earlier versions a QPoint.
    try:
        enter = QDragEnterEvent(QPointF(center), actions_allowed, mime, buttons, modifiers)
        move = QDragMoveEvent(QPointF(center), actions_allowed, mime, buttons, modifiers)
    except TypeError:
        enter = QDragEnterEvent(center, actions_allowed, mime, buttons, modifiers)
        move = QDragMoveEvent(center, actions_allowed, mime, buttons, modifiers)
    QApplication.sendEvent(target, enter)
    QApplication.sendEvent(target, move)
    drop = QDropEvent(QPointF(center), actions_allowed, mime, buttons, modifiers)
    QApplication.sendEvent(target, drop)
    return drop.isAccepted()


@pytest.fixture
def make_window(qtbot, tmp_path, tiny_model_dir):
    created = []

    def make(**overrides) -> MainWindow:
        settings = AppSettings(model=str(tiny_model_dir), device="cpu", length="exact", min_tokens=8, max_tokens=24, beams=2)
        for name, value in overrides.items():
            setattr(settings, name, value)
        settings_path = tmp_path / f"settings-{len(created)}.json"
        save_settings(settings, settings_path)
        window = MainWindow(settings_path, HistoryStore(tmp_path / "history"))
        qtbot.addWidget(window)
        window.show()
        created.append(window)
        return window

    yield make
    for window in created:
        if shiboken6.isValid(window) and window.runner.thread_running():
            window.close()
            qtbot.waitUntil(lambda w=window: not w.runner.thread_running(), timeout=WAIT_MS)


def row(window: MainWindow, job_id: int):
    return window.queue_panel.model.item(job_id)


def wait_status(qtbot, window, job_id, statuses, timeout=WAIT_MS):
    qtbot.waitUntil(lambda: row(window, job_id).status in statuses, timeout=timeout)


def test_drop_non_ascii_name_shows_summary(qtbot, make_window, tmp_path):
    window = make_window()
    pdf = corpus_copy(tmp_path, PAPER_PDF, ODD_NAME)

    accepted = drop_files(window.summary_panel.text.viewport(), [pdf])

    assert accepted
    [item] = window.queue_panel.model.items
    assert item.path == pdf
    wait_status(qtbot, window, item.job_id, {Status.DONE, Status.FAILED})
    assert item.status is Status.DONE, item.message
    assert item.pages == 14
    assert item.words > 1000
    assert item.tokens > 1000
    assert item.windows >= 2
    assert item.nothing_truncated
    assert "nothing truncated" in window.queue_panel.model.data(window.queue_panel.model.index(0, 6))
    assert window.summary_panel.text.toPlainText() == item.summary.text
    assert item.summary.text
    assert ODD_NAME in window.summary_panel.header.text()
    assert window.summary_panel.windows.count() == item.windows
    assert Status.ENCODING in item.seen_statuses
    assert Status.GENERATING in item.seen_statuses


def test_clicking_window_shows_its_pages(qtbot, make_window, tmp_path):
    window = make_window()
    pdf = corpus_copy(tmp_path, PAPER_PDF)
    [job_id] = window.add_files([pdf])
    wait_status(qtbot, window, job_id, {Status.DONE})

    panel = window.summary_panel
    last = panel.windows.item(panel.windows.count() - 1)
    panel.windows.setCurrentItem(last)

    summary = row(window, job_id).summary
    first_page, last_page = summary.windows[-1].pages
    assert f"pages {first_page}–{last_page}" in panel.source_label.text() or f"page {first_page}" in panel.source_label.text()
    assert panel.source.toPlainText()
    assert panel.source.extraSelections()


def test_worker_reports_on_gui_thread(qtbot, make_window, tmp_path):
    window = make_window()
    threads = []
    window.runner.sig_progress.connect(lambda *args: threads.append(QThread.currentThread()))
    window.runner.sig_finished.connect(lambda *args: threads.append(QThread.currentThread()))
    [job_id] = window.add_files([corpus_copy(tmp_path, SMALL_PDF)])
    wait_status(qtbot, window, job_id, {Status.DONE})
    assert threads
    assert all(thread is QApplication.instance().thread() for thread in threads)


def test_open_menu_adds_files(qtbot, make_window, tmp_path, monkeypatch):
    window = make_window()
    pdf = corpus_copy(tmp_path, SMALL_PDF, "chosen file.pdf")
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *args, **kwargs: ([str(pdf)], ""))

    window.menu_actions.open.trigger()

    [item] = window.queue_panel.model.items
    assert item.path == pdf
    wait_status(qtbot, window, item.job_id, {Status.DONE})
    assert window.menu_actions.open.shortcut().toString() == "Ctrl+O"
    assert window.menu_actions.export.shortcut().toString() == "Ctrl+E"
    assert {key.toString() for key in window.menu_actions.cancel.shortcuts()} == {"Esc", "Ctrl+."}


def test_export_each_format_and_copy(qtbot, make_window, tmp_path, monkeypatch):
    window = make_window()
    [job_id] = window.add_files([corpus_copy(tmp_path, PAPER_PDF)])
    wait_status(qtbot, window, job_id, {Status.DONE})
    text = row(window, job_id).summary.text
    out = tmp_path / "out"

    written = {fmt: actions.export_to(window, out / f"summary.{fmt}") for fmt in ("txt", "md", "docx")}

    assert written["txt"].read_text(encoding="utf-8") == text + "\n"
    markdown = written["md"].read_text(encoding="utf-8")
    assert text in markdown
    assert "| window | pages | tokens |" in markdown
    word = docx.Document(str(written["docx"]))
    assert text in "\n".join(paragraph.text for paragraph in word.paragraphs)
    assert sorted(path.name for path in out.iterdir()) == ["summary.docx", "summary.md", "summary.txt"]

    chosen = out / "from dialog.docx"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(chosen), "Word document (*.docx)"))
    window.menu_actions.export.trigger()
    assert chosen.is_file()

    window.menu_actions.copy.trigger()
    assert QGuiApplication.clipboard().text() == text


def test_cancel_mid_run_keeps_finished(qtbot, make_window, tmp_path):
    window = make_window()
    [first] = window.add_files([corpus_copy(tmp_path, SMALL_PDF)])
    wait_status(qtbot, window, first, {Status.DONE})
    [long_job, waiting_job] = window.add_files([corpus_copy(tmp_path, LONG_PDF), corpus_copy(tmp_path, PAPER_PDF)])
    wait_status(qtbot, window, long_job, {Status.ENCODING})

    started = time.monotonic()
    window.menu_actions.cancel.trigger()
    wait_status(qtbot, window, long_job, {Status.CANCELLED}, timeout=2000)
    elapsed = time.monotonic() - started

    assert elapsed < 2.0
    wait_status(qtbot, window, waiting_job, {Status.CANCELLED}, timeout=2000)
    assert Status.READING not in row(window, waiting_job).seen_statuses
    assert row(window, first).status is Status.DONE
    assert row(window, first).summary is not None
    qtbot.waitUntil(lambda: not window.runner.is_busy(), timeout=2000)


def test_gui_responsive_during_run(qtbot, make_window, tmp_path):
    window = make_window()
    ticks = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    [job_id] = window.add_files([corpus_copy(tmp_path, LONG_PDF)])
    wait_status(qtbot, window, job_id, {Status.DONE})
    timer.stop()

    gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:])]
    assert len(ticks) > 50
    # Not a speed test: compute on the GUI thread would stall it for the whole
    # multi-second encoding, while a loaded machine only delays a tick by a
    # fraction of a second. The bound separates the two.
    assert max(gaps) < 2.0
    assert "windows" in row(window, job_id).clock.describe() or row(window, job_id).clock.unit == "tokens"


def test_close_mid_run_stops_worker(qtbot, make_window, tmp_path, qtlog):
    window = make_window()
    [job_id] = window.add_files([corpus_copy(tmp_path, LONG_PDF)])
    wait_status(qtbot, window, job_id, {Status.ENCODING, Status.GENERATING})

    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    qtbot.waitUntil(lambda: not window.runner.thread_running(), timeout=5000)

    assert row(window, job_id).status is Status.CANCELLED
    messages = [record.message for record in qtlog.records]
    assert not [message for message in messages if "QThread" in message], messages


def test_window_deleted_mid_run_stops_worker(qtbot, tmp_path, tiny_model_dir, qtlog):
    settings_path = tmp_path / "settings.json"
    save_settings(AppSettings(model=str(tiny_model_dir), device="cpu", length="exact", min_tokens=8, max_tokens=24), settings_path)
    # Not registered with qtbot, which would close it again after it is deleted.
    window = MainWindow(settings_path, HistoryStore(tmp_path / "history"))
    window.show()
    thread = window.runner._thread
    [job_id] = window.add_files([corpus_copy(tmp_path, LONG_PDF)])
    wait_status(qtbot, window, job_id, {Status.READING, Status.ENCODING, Status.GENERATING})

    window.deleteLater()
    qtbot.waitUntil(lambda: not thread.isRunning(), timeout=5000)

    assert not [record for record in qtlog.records if "QThread" in record.message]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("jsvine_pdfplumber__password-example.pdf", "password required"),
        ("apache_tika__testWORD_truncated.docx", "truncated or damaged"),
        ("ocrmypdf_OCRmyPDF__linn.pdf", "no text layer"),
    ],
)
def test_bad_file_message_in_row(qtbot, make_window, tmp_path, name, expected):
    window = make_window()
    path = corpus_copy(tmp_path, name)
    drop_files(window, [path])
    [item] = window.queue_panel.model.items
    wait_status(qtbot, window, item.job_id, {Status.DONE, Status.FAILED})

    assert item.status is Status.FAILED
    assert expected in item.message
    assert expected in window.queue_panel.model.data(window.queue_panel.model.index(0, 6))
    dialog = window.error_dialog(item.job_id)
    qtbot.addWidget(dialog)
    assert expected in dialog.findChild(type(window.progress_label)).text()


def test_password_retry_summarizes(qtbot, make_window, tmp_path):
    window = make_window()
    [job_id] = window.add_files([corpus_copy(tmp_path, "jsvine_pdfplumber__password-example.pdf")])
    wait_status(qtbot, window, job_id, {Status.FAILED})
    item = row(window, job_id)

    window.retry_with_password(job_id, "test")

    wait_status(qtbot, window, item.job_id, {Status.DONE, Status.FAILED})
    assert item.status is Status.DONE, item.message

    # Summarize again reuses the password the user gave.
    window.summarize_again(item.job_id)
    wait_status(qtbot, window, item.job_id, {Status.DONE, Status.FAILED})
    assert item.status is Status.DONE, item.message


def test_history_reopens_without_recomputing(qtbot, make_window, tmp_path):
    window = make_window()
    pdf = corpus_copy(tmp_path, PAPER_PDF)
    [first] = window.add_files([pdf])
    wait_status(qtbot, window, first, {Status.DONE})
    assert window.runner.worker.computed == 1
    text = row(window, first).summary.text

    renamed = corpus_copy(tmp_path, PAPER_PDF, "same content, other name.pdf")
    [second] = window.add_files([renamed])
    wait_status(qtbot, window, second, {Status.DONE})

    again = row(window, second)
    assert window.runner.worker.computed == 1
    assert again.from_history
    assert again.summary.text == text
    assert Status.ENCODING not in again.seen_statuses
    assert Status.READING not in again.seen_statuses
    assert "from history" in window.queue_panel.model.data(window.queue_panel.model.index(1, 6))

    window.history_panel.table.selectRow(0)
    window.history_panel.sig_open.emit(window.history_panel.selected())
    assert window.summary_panel.text.toPlainText() == text
    assert window.runner.worker.computed == 1

    window.summarize_again(second)
    wait_status(qtbot, window, again.job_id, {Status.DONE})
    assert window.runner.worker.computed == 2
    assert Status.ENCODING in again.seen_statuses


def test_history_entry_source_view_reads_document(qtbot, make_window, tmp_path):
    first = make_window()
    [job_id] = first.add_files([corpus_copy(tmp_path, PAPER_PDF)])
    wait_status(qtbot, first, job_id, {Status.DONE})

    window = make_window()
    assert window.history_panel.entries
    window.open_history_entry(window.history_panel.entries[0])
    panel = window.summary_panel
    panel.windows.setCurrentRow(0)

    qtbot.waitUntil(lambda: bool(panel.source.toPlainText()), timeout=WAIT_MS)
    assert "page" in panel.source_label.text()
    assert window.runner.worker.computed == 0


def test_model_not_found_says_use_local_folder(qtbot, make_window, tmp_path):
    window = make_window(model="synopsis-tests/not-a-real-model")
    [job_id] = window.add_files([corpus_copy(tmp_path, SMALL_PDF)])
    wait_status(qtbot, window, job_id, {Status.DONE, Status.FAILED})
    item = row(window, job_id)
    assert item.status is Status.FAILED
    assert "not in the local Hugging Face cache" in item.message
    assert "Use local model folder" in item.message


def test_close_right_after_submit(qtbot, make_window, tmp_path, qtlog):
    window = make_window()
    window.add_files([corpus_copy(tmp_path, PAPER_PDF)])
    window.close()
    qtbot.waitUntil(lambda: not window.runner.thread_running(), timeout=10_000)
    assert not window.isVisible()
    assert not [record for record in qtlog.records if "QThread" in record.message]


def test_model_reloaded_only_when_setting_changes(qtbot, make_window, tmp_path, tiny_model_dir):
    window = make_window()
    [first] = window.add_files([corpus_copy(tmp_path, SMALL_PDF)])
    wait_status(qtbot, window, first, {Status.DONE})
    loaded = window.runner.worker.loaded

    [second] = window.add_files([corpus_copy(tmp_path, PAPER_PDF)])
    wait_status(qtbot, window, second, {Status.DONE})
    item = row(window, second)
    assert window.runner.worker.loaded is loaded
    assert Status.LOADING_MODEL not in item.seen_statuses

    other = tmp_path / "tiny copy"
    shutil.copytree(tiny_model_dir, other)
    actions.use_model(window, str(other))
    window.summarize_again(second)
    wait_status(qtbot, window, item.job_id, {Status.DONE})
    assert Status.LOADING_MODEL in item.seen_statuses
    assert window.runner.worker.loaded is not loaded
    assert window.runner.worker.loaded_key[0] == str(other)
    assert window.settings.model_folders[0] == str(other)


def test_corrupted_settings_reported_in_window(qtbot, tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{oops", encoding="utf-8")
    window = MainWindow(path, HistoryStore(tmp_path / "history"))
    qtbot.addWidget(window)
    assert "corrupted" in window.settings_problem
    assert window.statusBar().currentMessage() == problems_pointer(1)
    assert list(tmp_path.glob("settings.json.corrupt-*"))
    window.close()
    assert not window.runner.thread_running()


def test_models_action_without_manager(qtbot, make_window, monkeypatch):
    window = make_window()
    shown = []
    monkeypatch.setattr(actions.QMessageBox, "information", lambda *args: shown.append(args[2]))
    monkeypatch.setitem(__import__("sys").modules, "synopsis.app.models_dialog", None)
    window.menu_actions.models.trigger()
    assert shown
    assert "Use local model folder" in shown[0]


def test_models_action_opens_manager(qtbot, make_window, monkeypatch, tmp_path):
    models_dialog = pytest.importorskip("synopsis.app.models_dialog")
    window = make_window()
    folder = str(tmp_path / "chosen-model")
    opened = []

    def fake_exec(dialog):
        opened.append(dialog)
        dialog.sig_model_chosen.emit(folder)
        return 1

    monkeypatch.setattr(models_dialog.ModelManagerDialog, "exec", fake_exec)
    window.menu_actions.models.trigger()

    assert len(opened) == 1
    assert window.settings.model == folder


def test_clock_starts_at_first_report():
    from synopsis.app.eta import StageClock

    clock = StageClock(started=0.0)
    clock.update(0, 10, "windows", now=50.0)
    assert clock.elapsed(now=53.0) == 3.0


def test_header_follows_running_stage(qtbot, make_window, tmp_path):
    window = make_window()
    [job_id] = window.add_files([corpus_copy(tmp_path, LONG_PDF)])
    window.show_job(job_id)
    headers = set()
    window.runner.sig_stage.connect(lambda *_: headers.add(window.summary_panel.header.text()))
    wait_status(qtbot, window, job_id, {Status.DONE})
    assert any(": encoding" in text for text in headers), headers


def test_local_folder_listed_in_manager(qtbot, make_window, monkeypatch, tiny_model_dir):
    from synopsis.engine.registry import ModelKind, ModelRegistry

    window = make_window()
    folder = str(Path(tiny_model_dir).resolve())
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: folder)
    window.menu_actions.local_model.trigger()

    assert window.settings.model == folder
    local = [entry for entry in ModelRegistry().entries() if entry.kind is ModelKind.LOCAL]
    assert [entry.source for entry in local] == [folder]


def test_reading_warning_shown_in_row(qtbot, make_window, tmp_path):
    window = make_window()
    tracked = corpus_copy(tmp_path, "jgm_pandoc__track_changes_insertion.docx")
    window.add_files([tracked])
    [item] = window.queue_panel.model.items
    wait_status(qtbot, window, item.job_id, {Status.DONE, Status.FAILED})
    assert item.status is Status.DONE, item.message

    model = window.queue_panel.model
    details = model.data(model.index(0, 6))
    tooltip = model.data(model.index(0, 6), Qt.ItemDataRole.ToolTipRole)
    assert "warning: the document has tracked changes" in details
    assert "leaves out deletions" in tooltip


def test_startup_problems_listed_in_dialog(qtbot, tmp_path):
    # Deep folders make each path longer than a status bar can show.
    deep = tmp_path.joinpath(*["a-folder-with-a-long-name"] * 6)
    settings_path = deep / "config" / "settings.json"
    settings_path.parent.mkdir(parents=True)
    settings_path.write_text('{"model": "/m", "beams": ', encoding="utf-8")
    history = HistoryStore(deep / "history")
    history.folder.mkdir()
    (history.folder / "truncated.json").write_text('{"id": "1', encoding="utf-8")
    (history.folder / "list.json").write_text("[1, 2]", encoding="utf-8")

    window = MainWindow(settings_path, history)
    qtbot.addWidget(window)

    # Nothing opens before the window is shown, and the status bar only points to the dialog.
    qtbot.wait(50)
    assert window.problems_dialog is None
    assert len(window.startup_problems) == 3
    pointer = window.statusBar().currentMessage()
    assert pointer == "3 saved files could not be used. The dialog lists them, and so does the log."

    window.show()
    qtbot.waitUntil(lambda: window.problems_dialog is not None and window.problems_dialog.isVisible())
    dialog = window.problems_dialog
    assert not dialog.isModal()
    assert dialog.windowModality() == Qt.WindowModality.NonModal
    assert QApplication.activeModalWidget() is None
    assert dialog.details == "\n\n".join(window.startup_problems)
    kept = sorted(deep.rglob("*.corrupt-*"))
    assert len(kept) == 3
    for path in kept:
        assert str(path) in dialog.details
        assert str(path) not in pointer

    # The report opens once: showing the window again opens no second dialog.
    dialog.close()
    window.hide()
    window.show()
    qtbot.wait(50)
    assert window.problems_dialog is dialog
    assert not dialog.isVisible()

    # A history entry found damaged later is listed in a dialog of its own.
    (history.folder / "later.json").write_text("{", encoding="utf-8")
    window.history_panel.refresh()
    window._report_history_problems()
    later = window.problems_dialog
    assert later is not dialog
    assert later.isVisible()
    [kept_later] = history.folder.glob("later.json.corrupt-*")
    assert str(kept_later) in later.details
    assert window.statusBar().currentMessage() == problems_pointer(1)

    window.close()
    qtbot.waitUntil(lambda: not window.runner.thread_running(), timeout=WAIT_MS)

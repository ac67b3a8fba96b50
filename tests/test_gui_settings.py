"""The window's settings layer, length presets, the ETA clock and the exception hook."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from synopsis.app import actions
from synopsis.app import settings as settings_module
from synopsis.app.errors import ErrorDialog, ExceptionHook, user_message
from synopsis.app.eta import StageClock, format_duration
from synopsis.app.preferences import LENGTH_PRESETS, PreferencesDialog, generation_settings
from synopsis.app.queue_panel import Status
from synopsis.app.settings import AppSettings, document_limits, load_settings, save_settings
from synopsis.app.window import MainWindow
from synopsis.engine.documents import DocumentLimits
from synopsis.engine.documents.limits import USER_LIMITS
from synopsis.engine.errors import ModelNotFoundError, OutOfMemoryError
from synopsis.engine.history import HistoryStore


def test_settings_round_trip(tmp_path):
    path = tmp_path / "config" / "settings.json"
    original = AppSettings(model="/models/tiny", length="exact", min_tokens=12, max_tokens=34, beams=3,
                           model_folders=["/models/tiny"], export_format="docx")
    save_settings(original, path)

    loaded = load_settings(path)
    assert loaded.problem is None
    assert loaded.settings == original
    assert json.loads(path.read_text(encoding="utf-8"))["version"] == settings_module.SETTINGS_VERSION


def test_missing_settings_give_defaults(tmp_path):
    loaded = load_settings(tmp_path / "none.json")
    assert loaded.settings == AppSettings()
    assert loaded.problem is None


@pytest.mark.parametrize("content", ["{broken", "[1, 2]", '{"version": "x"}'])
def test_corrupted_settings_are_set_aside(tmp_path, content):
    path = tmp_path / "settings.json"
    path.write_text(content, encoding="utf-8")

    loaded = load_settings(path)

    assert loaded.settings == AppSettings()
    assert "corrupted" in loaded.problem
    assert not path.exists()
    kept = list(tmp_path.glob("settings.json.corrupt-*"))
    assert len(kept) == 1
    assert kept[0].read_text(encoding="utf-8") == content


def test_invalid_field_reset_to_default(tmp_path):
    path = tmp_path / "settings.json"
    content = json.dumps({"version": 1, "beams": "four", "model": "/m", "model_folders": [3]})
    path.write_text(content, encoding="utf-8")

    loaded = load_settings(path)

    assert loaded.settings.beams == AppSettings().beams
    assert loaded.settings.model == "/m"
    assert loaded.settings.model_folders == []
    assert "beams" in loaded.problem
    # The file is moved aside, so saving the repaired settings cannot lose the invalid values.
    [kept] = tmp_path.glob("settings.json.corrupt-*")
    assert kept.read_text(encoding="utf-8") == content
    assert str(kept) in loaded.problem


def test_migration_runs_for_older_version(tmp_path, monkeypatch):
    def rename_length(data: dict) -> dict:
        data["length"] = data.pop("summary_length")
        return data

    monkeypatch.setattr(settings_module, "SETTINGS_VERSION", 2)
    monkeypatch.setattr(settings_module, "MIGRATIONS", {1: rename_length})
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"version": 1, "summary_length": "long"}), encoding="utf-8")

    loaded = load_settings(path)

    assert loaded.problem is None
    assert loaded.settings.length == "long"
    assert loaded.settings.version == 2


def test_newer_version_keeps_known_fields(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"version": 99, "beams": 2, "future": True}), encoding="utf-8")
    loaded = load_settings(path)
    assert loaded.settings.beams == 2
    assert loaded.problem is None


def test_presets_map_to_generation_settings():
    for key, preset in LENGTH_PRESETS.items():
        generation = generation_settings(AppSettings(length=key, beams=3))
        assert (generation.min_tokens, generation.max_tokens) == (preset.min_tokens, preset.max_tokens)
        assert generation.beams == 3
    exact = generation_settings(AppSettings(length="exact", min_tokens=70, max_tokens=30))
    assert (exact.min_tokens, exact.max_tokens) == (30, 70)
    exact.validate()


def test_preferences_dialog_edits_copy(qtbot):
    original = AppSettings()
    dialog = PreferencesDialog(original)
    qtbot.addWidget(dialog)
    dialog.length.setCurrentIndex(dialog.length.findData("exact"))
    dialog.min_tokens.setValue(20)
    dialog.max_tokens.setValue(90)
    dialog.beams.setValue(2)
    dialog.model.setCurrentText("/models/tiny")
    assert dialog.precision.currentData() == "auto"
    dialog.precision.setCurrentIndex(dialog.precision.findData("int8"))

    edited = dialog.result_settings()

    assert (edited.length, edited.min_tokens, edited.max_tokens, edited.beams) == ("exact", 20, 90, 2)
    assert edited.precision == "int8"
    assert generation_settings(edited).precision == "int8"
    assert edited.model == "/models/tiny"
    assert original.model != "/models/tiny"
    assert dialog.min_tokens.isEnabled()


def test_stage_clock_estimates_from_units():
    clock = StageClock(started=100.0)
    clock.update(0, 10, "windows", now=100.0)
    assert clock.remaining(now=100.0) is None
    clock.update(5, 10, "windows", now=110.0)
    assert clock.remaining(now=110.0) == pytest.approx(10.0)
    text = clock.describe(now=110.0)
    assert "Encoding 5 of 10 windows" in text
    assert "0:10 elapsed" in text
    assert "about 0:10 left" in text
    clock.update(10, 100, "tokens", now=112.0)
    assert clock.remaining(now=114.0) == pytest.approx(18.0)
    assert "up to about" in clock.describe(now=114.0)
    assert format_duration(3725) == "1:02:05"


def test_user_message_adds_advice():
    assert "fewer beams" in user_message(OutOfMemoryError("cuda ran out of memory."))
    assert "Use local model folder" in user_message(ModelNotFoundError("Model 'x' is not in the cache."))


def test_exception_hook_shows_copyable_details(qtbot, monkeypatch, caplog):
    shown = []
    monkeypatch.setattr(ErrorDialog, "exec", lambda dialog: shown.append(dialog) or 0)
    hook = ExceptionHook()
    try:
        raise ValueError("boom in a slot")
    except ValueError:
        kind, value, tb = sys.exc_info()
    with caplog.at_level(logging.CRITICAL, logger="synopsis"):
        hook(kind, value, tb)

    assert len(shown) == 1
    assert "boom in a slot" in shown[0].details
    assert "Traceback" in shown[0].details
    assert "uncaught exception" in caplog.text
    shown[0].copy_details()
    from PySide6.QtGui import QGuiApplication

    assert "boom in a slot" in QGuiApplication.clipboard().text()
    qtbot.addWidget(shown[0])


# Document limits in Preferences ----------------------------------------------------

DOCUMENTS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "documents"
PAPER_PDF = "mozilla_pdf.js__tracemonkey.pdf"  # 14 pages
WAIT_MS = 60_000


def open_window(qtbot, settings_path: Path, history_folder: Path) -> MainWindow:
    window = MainWindow(settings_path, HistoryStore(history_folder))
    qtbot.addWidget(window)
    return window


def close_window(qtbot, window: MainWindow) -> None:
    window.close()
    qtbot.waitUntil(lambda: not window.runner.thread_running(), timeout=WAIT_MS)


def failed_message(qtbot, window: MainWindow, job_id: int) -> str:
    item = window.queue_panel.model.item(job_id)
    qtbot.waitUntil(lambda: item.status in (Status.DONE, Status.FAILED), timeout=WAIT_MS)
    assert item.status is Status.FAILED
    return item.message


def test_limit_fields_persist_and_reach_engine(qtbot, tmp_path, tiny_model_dir):
    paper = DOCUMENTS / PAPER_PDF
    if not paper.is_file():
        pytest.skip(f"corpus document not found: {paper}")
    settings_path = tmp_path / "settings.json"
    save_settings(AppSettings(model=str(tiny_model_dir), device="cpu"), settings_path)

    # Edit the fields in the dialog and apply them as the OK button does.
    window = open_window(qtbot, settings_path, tmp_path / "history")
    dialog = PreferencesDialog(window.settings, window)
    assert set(dialog.limits) == set(USER_LIMITS)
    dialog.limits["max_pages"].setValue(5)
    dialog.limits["max_read_seconds"].setValue(42.5)
    actions.apply_settings(window, dialog.result_settings())
    close_window(qtbot, window)

    stored = json.loads(settings_path.read_text(encoding="utf-8"))
    assert stored["max_pages"] == 5
    assert stored["max_read_seconds"] == 42.5

    # A new window reads them back, shows them, and the worker reads with them.
    window = open_window(qtbot, settings_path, tmp_path / "history")
    assert window.settings.max_pages == 5
    reopened = PreferencesDialog(window.settings, window)
    assert reopened.limits["max_pages"].value() == 5
    assert reopened.limits["max_read_seconds"].value() == 42.5
    [job_id] = window.add_files([paper])
    message = failed_message(qtbot, window, job_id)
    assert PAPER_PDF in message
    assert "the page count (14)" in message
    assert "exceeds the limit of 5 pages" in message
    assert "--max-pages" in message
    assert "'Maximum pages' in Settings > Preferences" in message

    # The token limit is checked in the worker once the model has cut the windows.
    reopened.limits["max_pages"].setValue(100)
    reopened.limits["max_input_tokens"].setValue(100)
    actions.apply_settings(window, reopened.result_settings())
    [job_id] = window.add_files([paper])
    message = failed_message(qtbot, window, job_id)
    assert "exceeds the limit of 100 tokens" in message
    assert "'Maximum input tokens' in Settings > Preferences" in message
    close_window(qtbot, window)


@pytest.mark.parametrize(
    ("stored", "expected", "reset"),
    [
        (5, 5.0, False),  # a whole number, as a hand edit writes it
        (0, DocumentLimits().max_read_seconds, True),
        (-1.5, DocumentLimits().max_read_seconds, True),
        ("10", DocumentLimits().max_read_seconds, True),
    ],
)
def test_hand_edited_limit_values(tmp_path, stored, expected, reset):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"version": 1, "max_read_seconds": stored}), encoding="utf-8")

    loaded = load_settings(path)

    assert loaded.settings.max_read_seconds == expected
    assert (loaded.problem is not None) == reset
    assert document_limits(loaded.settings).max_read_seconds == expected


def test_unknown_precision_reset_to_default(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"version": 1, "precision": "fp64", "beams": 2}), encoding="utf-8")

    loaded = load_settings(path)

    assert loaded.settings.precision == "auto"
    assert loaded.settings.beams == 2
    assert "precision" in loaded.problem

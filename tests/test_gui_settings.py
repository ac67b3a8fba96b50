"""The window's settings layer, length presets, the ETA clock and the exception hook."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from synopsis.app import settings as settings_module
from synopsis.app.errors import ErrorDialog, ExceptionHook, user_message
from synopsis.app.eta import StageClock, format_duration
from synopsis.app.preferences import LENGTH_PRESETS, PreferencesDialog, generation_settings
from synopsis.app.settings import AppSettings, load_settings, save_settings
from synopsis.engine.errors import ModelNotFoundError, OutOfMemoryError


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
    path.write_text(json.dumps({"version": 1, "beams": "four", "model": "/m", "model_folders": [3]}), encoding="utf-8")

    loaded = load_settings(path)

    assert loaded.settings.beams == AppSettings().beams
    assert loaded.settings.model == "/m"
    assert loaded.settings.model_folders == []
    assert "beams" in loaded.problem
    assert path.exists()


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

    edited = dialog.result_settings()

    assert (edited.length, edited.min_tokens, edited.max_tokens, edited.beams) == ("exact", 20, 90, 2)
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

"""The model manager dialog, driven as a user would, against a loopback hub."""

from __future__ import annotations

import shutil

import pytest
from PySide6.QtWidgets import QInputDialog, QMessageBox

from synopsis.app.models_dialog import PROGRESS_STEPS, ModelManagerDialog, format_bytes
from synopsis.engine.models import load_model
from synopsis.engine.registry import ModelRegistry, ModelStatus
from tests.hub_server import TINY_REPO, fake_hub, hub_online, serve_tiny  # noqa: F401 - fixtures

DOWNLOAD_TIMEOUT_MS = 30_000


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(data_dir=tmp_path / "data", hub_cache_dir=tmp_path / "hub")


@pytest.fixture
def slow_hub(fake_hub, tiny_model_dir):
    """The tiny model served at about 0.8 MB/s, slow enough to cancel half way."""
    serve_tiny(fake_hub, tiny_model_dir)
    fake_hub.chunk_delay_s = 0.02
    return fake_hub


def open_dialog(qtbot, registry) -> ModelManagerDialog:
    dialog = ModelManagerDialog(None, registry)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def table_rows(dialog) -> list[tuple[str, ...]]:
    table = dialog.table
    return [tuple(table.item(row, column).text() for column in range(table.columnCount())) for row in range(table.rowCount())]


def wait_idle(qtbot, dialog, timeout=DOWNLOAD_TIMEOUT_MS) -> None:
    qtbot.waitUntil(lambda: not dialog.is_busy(), timeout=timeout)


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1 KB"), (830_861, "831 KB"), (1_625_000_000, "1.62 GB"), (3 * 10**12, "3e+03 GB")],
)
def test_format_bytes(count, text):
    assert format_bytes(count) == text


def test_lists_models_and_chooses_one(qtbot, registry, tiny_model_dir):
    registry.add_folder(tiny_model_dir, name="Tiny BART")
    shutil.copytree(tiny_model_dir, registry.fine_tuned_dir / "reports-v1")
    registry.register_finetuned(registry.fine_tuned_dir / "reports-v1", "Reports v1", "facebook/bart-large-cnn", {"rouge1": 0.4})
    dialog = open_dialog(qtbot, registry)

    rows = table_rows(dialog)

    assert [row[:2] for row in rows] == [("Tiny BART", "local"), ("Reports v1", "fine-tuned")]
    assert all(row[3] == "ready" for row in rows)
    assert not dialog.use_button.isEnabled()
    assert dialog.selected_model() is None

    dialog.table.selectRow(1)
    assert dialog.use_button.isEnabled()
    with qtbot.waitSignal(dialog.sig_model_chosen) as chosen:
        dialog.use_button.click()

    assert chosen.args == [str((registry.fine_tuned_dir / "reports-v1").resolve())]
    assert dialog.selected_model() == chosen.args[0]
    assert dialog.result() == ModelManagerDialog.DialogCode.Accepted


def test_download_cancel_and_resume(qtbot, registry, slow_hub):
    registry.endpoint = slow_hub.url
    dialog = open_dialog(qtbot, registry)
    values = []
    dialog.progress_bar.valueChanged.connect(values.append)

    dialog.start_download(TINY_REPO)
    assert dialog.is_busy()
    assert dialog.progress_bar.isVisible()
    qtbot.waitUntil(lambda: dialog.progress_bar.value() > PROGRESS_STEPS // 3, timeout=DOWNLOAD_TIMEOUT_MS)
    assert "downloading" in table_rows(dialog)[0][3]
    dialog.cancel_button.click()
    wait_idle(qtbot, dialog)

    assert table_rows(dialog)[0][0] == TINY_REPO
    assert table_rows(dialog)[0][3] == "partial"
    assert "cancelled" in dialog.message_label.text()
    assert not dialog.progress_bar.isVisible()
    cancelled_at = values[-1]
    assert 0 < cancelled_at < PROGRESS_STEPS

    dialog.table.selectRow(0)
    assert dialog.resume_button.isEnabled()
    assert not dialog.use_button.isEnabled()
    values.clear()
    dialog.resume_button.click()
    wait_idle(qtbot, dialog)

    assert dialog.last_error is None
    assert values == sorted(values)
    assert values[0] >= cancelled_at
    assert values[-1] == PROGRESS_STEPS
    assert slow_hub.file_requests("GET", "model.safetensors")[-1][2].startswith("bytes=")
    assert table_rows(dialog)[0][3] == "ready"
    with qtbot.waitSignal(dialog.sig_model_chosen) as chosen:
        dialog.use_button.click()
    assert load_model(chosen.args[0], device="cpu").model.config.is_encoder_decoder


def test_download_button_asks_for_model_id(qtbot, registry, fake_hub, tiny_model_dir, monkeypatch):
    serve_tiny(fake_hub, tiny_model_dir)
    registry.endpoint = fake_hub.url
    prompts = []

    def enter_repo_id(parent, title, label, text=""):
        prompts.append(text)
        return TINY_REPO, True

    monkeypatch.setattr(QInputDialog, "getText", enter_repo_id)
    dialog = open_dialog(qtbot, registry)

    dialog.download_button.click()
    wait_idle(qtbot, dialog)

    assert prompts == ["facebook/bart-large-cnn"]
    assert table_rows(dialog)[0][::3] == (TINY_REPO, "ready")
    assert dialog.selected_entry().repo_id == TINY_REPO
    assert "Downloaded" in dialog.message_label.text()


def test_rejected_download_shows_error(qtbot, registry, fake_hub, tiny_model_dir):
    repo = serve_tiny(fake_hub, tiny_model_dir)
    repo.files["pytorch_model.bin"] = repo.files.pop("model.safetensors")
    registry.endpoint = fake_hub.url
    dialog = open_dialog(qtbot, registry)

    dialog.start_download(TINY_REPO)
    wait_idle(qtbot, dialog)

    assert "no safetensors weights" in dialog.last_error
    assert "pytorch_model.bin" in dialog.message_label.text()
    assert table_rows(dialog) == []


def test_close_cancels_running_download(qtbot, registry, slow_hub):
    registry.endpoint = slow_hub.url
    dialog = open_dialog(qtbot, registry)
    dialog.start_download(TINY_REPO)
    qtbot.waitUntil(lambda: dialog.progress_bar.value() > PROGRESS_STEPS // 3, timeout=DOWNLOAD_TIMEOUT_MS)

    dialog.reject()

    assert not dialog.is_busy()
    assert not dialog.isVisible()
    [entry] = registry.entries()
    assert entry.status is ModelStatus.PARTIAL


def test_add_folder_runs_off_thread(qtbot, registry, tiny_model_dir):
    dialog = open_dialog(qtbot, registry)

    dialog.add_folder(tiny_model_dir)
    assert dialog.is_busy()
    assert not dialog.add_button.isEnabled()
    wait_idle(qtbot, dialog)

    assert table_rows(dialog)[0][1:] == ("local", format_bytes(sum(p.stat().st_size for p in tiny_model_dir.iterdir())), "ready")
    assert dialog.add_button.isEnabled()


def test_add_invalid_folder_shows_error(qtbot, registry, tmp_path):
    dialog = open_dialog(qtbot, registry)

    dialog.add_folder(tmp_path)
    wait_idle(qtbot, dialog)

    assert "config.json" in dialog.last_error
    assert table_rows(dialog) == []


def test_remove_asks_then_forgets_folder(qtbot, registry, tiny_model_dir, monkeypatch):
    registry.add_folder(tiny_model_dir)
    questions = []

    def confirm(parent, title, text, *args):
        questions.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", confirm)
    dialog = open_dialog(qtbot, registry)
    dialog.table.selectRow(0)

    dialog.remove_button.click()

    assert "stay on disk" in questions[0]
    assert table_rows(dialog) == []
    assert (tiny_model_dir / "model.safetensors").is_file()


def test_unreadable_list_reported(qtbot, registry):
    registry.data_dir.mkdir(parents=True)
    registry.list_file.write_text("not json", encoding="utf-8")

    dialog = open_dialog(qtbot, registry)

    assert "could not be read" in dialog.message_label.text()


def test_default_registry_when_none(qtbot, tiny_model_dir):
    # conftest points the user's data folder (XDG_DATA_HOME) at a temporary folder.
    entry = ModelRegistry().add_folder(tiny_model_dir, name="in the user's data folder")
    try:
        dialog = open_dialog(qtbot, None)

        assert ("in the user's data folder", "local") in [row[:2] for row in table_rows(dialog)]
    finally:
        ModelRegistry().remove(entry)

"""The Fine-tune dialog driven as a user would: preview, train, stop, resume, register, compare.

Pairs are cut from the shared corpus into a temporary JSONL file, so each
step encodes a few short windows of the tiny model and a run takes seconds.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QThread
from PySide6.QtWidgets import QApplication

from synopsis.app.finetune_dialog import CLOSING_MESSAGE, FinetuneDialog
from synopsis.app.finetune_monitor import format_memory, nice_interval
from synopsis.app.finetune_form import NO_VALIDATION, SPLIT, pairs_file_fields
from synopsis.app.finetune_panels import warning_lines
from synopsis.app.settings import AppSettings, save_settings
from synopsis.app.window import MainWindow
from synopsis.engine.documents import DocumentLimits
from synopsis.engine.errors import SettingsError
from synopsis.engine.history import HistoryStore
from synopsis.engine.registry import ModelKind, ModelRegistry
from synopsis.engine.runs import (
    INTERRUPTED,
    RUNNING,
    STOPPED,
    RunRequest,
    check_run_name,
    list_runs,
    load_request,
    read_status,
    save_request,
    train_command,
    write_status,
)
from synopsis.engine.training import TrainingSettings
from synopsis.engine.training.checkpoint import complete_checkpoints

PAIRS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "pairs"
WAIT_MS = 120_000
DOCUMENT_CHARACTERS = 2500  # about 700 tokens of the tiny tokenizer: one window per document
SUMMARY_CHARACTERS = 300


pytestmark = pytest.mark.usefixtures("one_thread")


def _cut(text: str, limit: int) -> str:
    return text[:limit].rsplit(" ", 1)[0]


@pytest.fixture(scope="module")
def corpus_rows() -> list[dict]:
    """Six corpus pairs, cut short: documents of about 2,500 characters, summaries of about 300."""
    rows = []
    for name in ("pmc_articles.jsonl", "arxiv_papers.jsonl"):
        path = PAIRS / name
        if not path.is_file():
            pytest.skip(f"corpus pairs not found at {path}")
        with path.open(encoding="utf-8") as lines:
            for line in list(lines)[:3]:
                pair = json.loads(line)
                rows.append(
                    {"document": _cut(pair["document"], DOCUMENT_CHARACTERS), "summary": _cut(pair["summary"], SUMMARY_CHARACTERS)}
                )
    return rows


@pytest.fixture
def pairs_file(tmp_path, corpus_rows) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in corpus_rows), encoding="utf-8")
    return path


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(data_dir=tmp_path / "data", hub_cache_dir=tmp_path / "hub")


@pytest.fixture
def make_dialog(qtbot, tmp_path, registry, tiny_model_dir):
    created = []

    def make() -> FinetuneDialog:
        dialog = FinetuneDialog(None, registry, tmp_path / "runs", model=str(tiny_model_dir))
        qtbot.addWidget(dialog)
        dialog.show()
        created.append(dialog)
        return dialog

    yield make
    for dialog in created:
        dialog.controller.stop_training()
        dialog.controller.shutdown()


def fill_form(dialog: FinetuneDialog, pairs: Path, name: str = "reports-v1", max_steps: int = 4, eval_every: int = 3) -> None:
    """Set a small run: 4 training and 2 validation pairs, 2 documents per step, short evaluations."""
    form = dialog.form
    form.pairs_edit.setText(str(pairs))
    form.validation_mode.setCurrentIndex(form.validation_mode.findData(SPLIT))
    form.validation_slider.setValue(35)
    form.device_combo.setCurrentText("cpu")
    form.name_edit.setText(name)
    form.epochs.setValue(5)
    form.accumulate.setValue(2)
    form.eval_every.setValue(eval_every)
    form.max_steps.setValue(max_steps)
    form.eval_max_tokens.setValue(8)
    form.eval_beams.setValue(1)


def hold_after_steps(dialog: FinetuneDialog) -> threading.Event:
    """Make the worker wait after each step until the returned event is set, so a Stop lands at a known step."""
    gate = threading.Event()
    dialog.controller.worker.sig_step.connect(lambda _event: gate.wait(30), Qt.ConnectionType.DirectConnection)
    return gate


def metrics_steps(folder: Path) -> tuple[list[int], list[int]]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [row["step"] for row in rows if "eval" not in row], [row["step"] for row in rows if "eval" in row]


# The preview ------------------------------------------------------------------


def test_preview_lists_bad_rows(qtbot, make_dialog, tmp_path, corpus_rows):
    good = [json.dumps(row) for row in corpus_rows[:3]]
    bad = [
        '{"document": "text without a summary"',
        json.dumps({"document": "A document.", "abstract": "wrong key"}),
        json.dumps({"document": "   ", "summary": "A summary."}),
        json.dumps(["a", "list"]),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(good[:2] + bad + good[2:]) + "\n", encoding="utf-8")
    dialog = make_dialog()

    with qtbot.waitSignal(dialog.controller.sig_checked, timeout=WAIT_MS) as checked:
        fill_form(dialog, path)
    report = checked.args[0].report

    rejected = dict(dialog.preview.rejected_rows())
    assert set(rejected) == {"mixed.jsonl line 3", "mixed.jsonl line 4", "mixed.jsonl line 5", "mixed.jsonl line 6"}
    assert rejected["mixed.jsonl line 3"].startswith("invalid JSON")
    assert rejected["mixed.jsonl line 4"] == "summary field 'summary' missing"
    assert rejected["mixed.jsonl line 5"] == "document field 'document' is empty"
    assert "expected a JSON object" in rejected["mixed.jsonl line 6"]
    assert dialog.preview.rejected_label.text() == "4 pairs cannot be used:"

    table = dialog.preview.pairs_table
    assert table.rowCount() == 3
    for row, lengths in enumerate(report.lengths):
        assert table.item(row, 2).text() == f"{lengths.document_tokens:,}"
        assert int(table.item(row, 3).text()) == lengths.windows >= 1
        assert int(table.item(row, 4).text().replace(",", "")) > 0
    assert "Peak memory: about" in dialog.preview.estimate_label.text()
    assert "Time: about" in dialog.preview.estimate_label.text()
    assert dialog.preview.device_label.text().startswith("Device: CPU")
    assert not dialog.preview.warning_label.text().startswith("The estimated peak memory")
    too_small = dataclasses.replace(report, available_memory=report.peak_memory // 2)
    assert warning_lines(too_small)[0].startswith(f"The estimated peak memory ({format_memory(report.peak_memory)}")


def test_preview_applies_preference_limits(qtbot, make_dialog, tmp_path, corpus_rows):
    paper = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "documents" / "mozilla_pdf.js__tracemonkey.pdf"
    if not paper.is_file():
        pytest.skip(f"corpus document not found: {paper}")
    rows = [json.dumps(row) for row in corpus_rows[:3]]
    rows.append(json.dumps({"document": str(paper), "summary": "A tracing JIT for JavaScript."}))
    path = tmp_path / "limits.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    dialog = make_dialog()
    dialog.limits = DocumentLimits(max_pages=5, max_input_tokens=50)

    with qtbot.waitSignal(dialog.controller.sig_checked, timeout=WAIT_MS):
        fill_form(dialog, path)

    rejected = dict(dialog.preview.rejected_rows())
    # The 14-page paper is over the page limit, and each inline document of
    # about 2,500 characters is far over 50 tokens.
    assert "the page count (14) exceeds the limit of 5 pages" in rejected["limits.jsonl line 4"]
    assert "Settings > Preferences" in rejected["limits.jsonl line 4"]
    for line in (1, 2, 3):
        assert "exceeds the limit of 50 tokens" in rejected[f"limits.jsonl line {line}"]


@pytest.mark.parametrize(("span", "interval"), [(1, 1), (6, 1), (7, 2), (24, 5), (100, 20), (2500, 500)])
def test_nice_interval(span, interval):
    assert nice_interval(span) == interval


def test_pairs_file_fields(tmp_path):
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("body;abstract\nA document.;A summary.\n", encoding="utf-8")
    jsonl_path = tmp_path / "pairs.jsonl"
    jsonl_path.write_text('\n{"text": "A", "gist": "B"}\n', encoding="utf-8")

    assert pairs_file_fields(csv_path) == ["body", "abstract"]
    assert pairs_file_fields(jsonl_path) == ["text", "gist"]
    assert pairs_file_fields(tmp_path) == []
    assert pairs_file_fields(tmp_path / "missing.csv") == []


# Training, stopping, resuming -------------------------------------------------------


def test_train_stop_resume_register_compare(qtbot, make_dialog, pairs_file, registry, tmp_path, tiny_model_dir):
    dialog = make_dialog()
    fill_form(dialog, pairs_file)
    gate = hold_after_steps(dialog)

    # Start, and stop after the first step, before any scheduled checkpoint.
    with qtbot.waitSignal(dialog.controller.sig_step, timeout=WAIT_MS) as first:
        assert dialog.start()
    assert first.args[0].step == 1
    assert first.args[0].total_steps == 4
    assert dialog.monitor.chart.train_series.count() == 1
    assert dialog.stop_button.isEnabled()
    dialog.stop_button.click()
    gate.set()
    with qtbot.waitSignal(dialog.controller.sig_finished, timeout=WAIT_MS) as finished:
        pass
    outcome = finished.args[0]
    folder = tmp_path / "runs" / "reports-v1"

    assert outcome.state == STOPPED
    assert outcome.result.cancelled
    assert outcome.entry is None
    assert [step for step, _path in complete_checkpoints(folder / "checkpoints")] == [1]
    assert read_status(folder)["state"] == STOPPED
    assert dialog.monitor.evaluation_rows() == []
    qtbot.waitUntil(lambda: not dialog.controller.is_busy(), timeout=WAIT_MS)

    # A new dialog, as after a restart, lists the stopped run and resumes it from step 1.
    dialog.hide()
    dialog = make_dialog()
    [record] = dialog.runs_panel.records
    assert (record.name, record.state, record.step, record.resumable) == ("reports-v1", STOPPED, 1, True)
    assert dialog.runs_panel.select("reports-v1")
    assert dialog.runs_panel.resume_button.isEnabled()
    steps, on_gui_thread = [], []
    dialog.controller.sig_step.connect(lambda event: steps.append(event.step))
    gui_thread = QApplication.instance().thread()
    dialog.controller.sig_step.connect(lambda _event: on_gui_thread.append(QThread.currentThread() == gui_thread))
    with qtbot.waitSignal(dialog.controller.sig_finished, timeout=WAIT_MS) as finished:
        dialog.runs_panel.resume_button.click()
    outcome = finished.args[0]
    qtbot.waitUntil(lambda: not dialog.controller.is_busy(), timeout=WAIT_MS)

    assert steps == [2, 3, 4]
    assert on_gui_thread == [True, True, True]
    assert outcome.result.steps == 4
    assert metrics_steps(folder) == ([1, 2, 3, 4], [3, 4])
    assert dialog.monitor.chart.train_series.count() == 4
    assert dialog.monitor.chart.validation_series.count() == 2
    rows = dialog.monitor.evaluation_rows()
    assert [row[0] for row in rows] == ["3", "4"]
    assert all(float(cell) >= 0 for row in rows for cell in row[1:6])
    assert "Generated:" in dialog.monitor.best_examples.toHtml()
    assert dialog.monitor.memory_label.text().startswith("Process memory (CPU): ")

    # The best model is in the model manager, with its metrics.
    [entry] = [entry for entry in registry.entries() if entry.kind is ModelKind.FINE_TUNED]
    assert entry.name == "reports-v1"
    assert entry.path == (folder / "best").resolve()
    assert entry.base_model == str(tiny_model_dir)
    assert set(entry.metrics) >= {"step", "loss", "rouge1", "rougeLsum"}
    assert outcome.entry == entry
    assert dialog.runs_panel.records[0].state == "finished"
    assert not dialog.runs_panel.resume_button.isEnabled()

    # Compare: one document, summarized by the base model and the fine-tuned one.
    document = tmp_path / "meeting.txt"
    document.write_text(json.loads(pairs_file.read_text(encoding="utf-8").splitlines()[0])["document"], encoding="utf-8")
    dialog.compare_panel.document_edit.setText(str(document))
    assert dialog.compare_panel.model_combo.currentText().startswith("reports-v1")
    with qtbot.waitSignal(dialog.controller.sig_compared, timeout=WAIT_MS) as compared:
        dialog.compare_panel.compare_button.click()
    comparison = compared.args[0]

    assert comparison.base.model == str(tiny_model_dir)
    assert comparison.tuned.model == str(entry.source)
    assert dialog.compare_panel.base_text.toPlainText() == comparison.base.text
    assert dialog.compare_panel.tuned_text.toPlainText() == comparison.tuned.text
    assert "meeting.txt" in dialog.compare_panel.status_label.text()


def test_start_refuses_existing_run_name(qtbot, make_dialog, pairs_file, tmp_path):
    folder = tmp_path / "runs" / "taken"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{}", encoding="utf-8")
    dialog = make_dialog()
    fill_form(dialog, pairs_file, name="taken")

    assert not dialog.start()
    assert "already exists" in dialog.last_error
    assert not dialog.controller.is_training()


def test_closing_window_stops_training_with_checkpoint(qtbot, tmp_path, tiny_model_dir, pairs_file, qtlog):
    settings_path = tmp_path / "settings.json"
    save_settings(AppSettings(model=str(tiny_model_dir), device="cpu"), settings_path)
    window = MainWindow(settings_path, HistoryStore(tmp_path / "history"))
    qtbot.addWidget(window)
    window.show()
    window.menu_actions.finetune.trigger()
    dialog = window.finetune_dialog
    dialog.registry = ModelRegistry(data_dir=tmp_path / "data", hub_cache_dir=tmp_path / "hub")
    dialog.runs_dir = tmp_path / "runs"
    fill_form(dialog, pairs_file, name="closing", max_steps=200, eval_every=100)
    gate = hold_after_steps(dialog)
    with qtbot.waitSignal(dialog.controller.sig_step, timeout=WAIT_MS):
        assert dialog.start()

    window.close()
    assert window.isVisible()
    gate.set()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not dialog.controller.is_busy(), timeout=WAIT_MS)

    folder = tmp_path / "runs" / "closing"
    status = read_status(folder)
    assert status["state"] == STOPPED
    assert status["message"].startswith(CLOSING_MESSAGE)
    assert [step for step, _path in complete_checkpoints(folder / "checkpoints")] == [1]
    [record] = list_runs(tmp_path / "runs")
    assert record.resumable
    messages = [message.message for message in qtlog.records]
    assert not [message for message in messages if "QThread" in message], messages


# Settings and the equivalent command ----------------------------------------------


def test_settings_save_load_and_command(qtbot, make_dialog, pairs_file, tmp_path):
    dialog = make_dialog()
    fill_form(dialog, pairs_file, name="saved-run")
    dialog.form.learning_rate.setText("5e-05")
    dialog.form.patience.setValue(2)
    dialog.form.weight_decay.setValue(0.05)
    saved = tmp_path / "settings" / "run.json"

    assert dialog.save_settings(saved)
    request = dialog.form.request()
    command = dialog.command_text.toPlainText()
    for expected in (
        "synopsis train", f"--pairs {pairs_file}", "--val-fraction 0.35", "--epochs 5", "--max-steps 4", "--lr 5e-05",
        "--accumulate 2", "--eval-every 3", "--patience 2", "--eval-max-tokens 8", "--eval-beams 1",
        "--skip-bad-pairs", "--device cpu", f"--output {tmp_path / 'runs' / 'saved-run'}",
    ):
        assert expected in command
    assert "# Not settable from the command line: weight decay." in command

    other = make_dialog()
    assert other.load_settings(saved)
    assert other.form.request() == request
    assert other.form.patience.value() == 2

    saved.write_text('{"name": "x", "pairs": "p", "model": "m", "colour": "blue"}', encoding="utf-8")
    assert not other.load_settings(saved)
    assert "Unknown run settings: colour" in other.last_error


def test_form_rejects_bad_input(qtbot, make_dialog, pairs_file):
    dialog = make_dialog()
    fill_form(dialog, pairs_file)
    form = dialog.form

    form.learning_rate.setText("fast")
    with pytest.raises(SettingsError, match="learning rate 'fast' is not a number"):
        form.request()
    form.learning_rate.setText("3e-05")
    form.name_edit.setText("../elsewhere")
    with pytest.raises(SettingsError, match="run name"):
        form.request()
    assert dialog.command_text.toPlainText().startswith("# The run name")
    form.name_edit.setText("ok")
    form.validation_mode.setCurrentIndex(form.validation_mode.findData(NO_VALIDATION))
    assert form.request().validation_fraction is None
    assert "--val-fraction" not in dialog.command_text.toPlainText()


# Run records ------------------------------------------------------------------------


def test_run_request_round_trip(tmp_path):
    settings = TrainingSettings(epochs=2, patience=3, max_grad_norm=None)
    request = RunRequest(name="Run 1", pairs="/data/pairs.csv", model="m", document_field="body", validation_fraction=None, validation_file="/data/val.jsonl", settings=settings)
    save_request(request, tmp_path / "request.json")

    assert load_request(tmp_path / "request.json") == request
    command = train_command(request, tmp_path / "out", resume=True)
    assert command.argv[-1] == "--resume"
    assert "--validation" in command.argv
    assert "--document-field" in command.argv
    assert command.not_expressible == ["max grad norm"]


@pytest.mark.parametrize("name", ["", "../up", "a/b", "con", "trailing.", " lead", "x" * 81])
def test_run_name_rejected(name):
    with pytest.raises(SettingsError):
        check_run_name(name)


def test_run_left_running_is_interrupted(tmp_path):
    runs = tmp_path / "runs"
    for name in ("crashed", "live"):
        folder = runs / name
        folder.mkdir(parents=True)
        save_request(RunRequest(name=name, pairs="p.jsonl", model="m"), folder / "request.json")
        write_status(folder, RUNNING, 3, 10)

    states = {record.name: record.state for record in list_runs(runs, active="live")}

    assert states == {"crashed": INTERRUPTED, "live": RUNNING}
    assert [record.resumable for record in list_runs(runs, active="live") if record.name == "crashed"] == [True]


def test_column_guesses_differ():
    from synopsis.app.finetune_form import _likely_field

    fields = ["id", "text", "abstract"]
    document = _likely_field(fields, "document", set())
    summary = _likely_field(fields, "summary", {document})
    assert document == "text"
    assert summary == "abstract"
    assert _likely_field(["a", "b"], "summary", {"a"}) == "b"


def test_wheel_leaves_unfocused_setting(qtbot):
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication, QSpinBox

    from synopsis.app.finetune_form import TrainingForm

    form = TrainingForm()
    qtbot.addWidget(form)
    box = form.findChildren(QSpinBox)[0]
    before = box.value()
    event = QWheelEvent(
        QPointF(5, 5), QPointF(5, 5), QPoint(0, 0), QPoint(0, 120),
        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False,
    )
    QApplication.sendEvent(box, event)
    assert box.value() == before


def test_history_marks_best_step(qtbot):
    from synopsis.app.finetune_monitor import TrainingMonitor

    monitor = TrainingMonitor()
    qtbot.addWidget(monitor)
    rows = [
        {"step": 1, "loss": 2.0},
        {"step": 1, "eval": {"loss": 1.9, "rougeLsum": 0.2}},
        {"step": 2, "eval": {"loss": 1.8, "rougeLsum": 0.1}},
    ]
    monitor.load_history(rows, best_step=1)
    stars = [row[-1] for row in monitor.evaluation_rows()]
    assert stars == ["★", ""]


@pytest.fixture
def dialog_on(qtbot, registry, tmp_path):
    """Open a dialog for ``model`` without showing it; shut its worker thread down afterwards."""
    created = []

    def make(model: str) -> FinetuneDialog:
        dialog = FinetuneDialog(None, registry, tmp_path / "runs", model=model)
        qtbot.addWidget(dialog)
        created.append(dialog)
        return dialog

    yield make
    for dialog in created:
        dialog.controller.shutdown()


def test_dialog_opens_on_ready_model(dialog_on, registry, tiny_model_dir):
    # The default hub model is not downloaded here, so the dialog picks a ready one.
    registry.add_folder(tiny_model_dir, name="tiny-local")
    dialog = dialog_on("facebook/bart-large-cnn")
    assert dialog.form.model_source() == str(Path(tiny_model_dir).resolve())


def test_dialog_marks_model_not_downloaded(dialog_on):
    dialog = dialog_on("facebook/bart-large-cnn")
    assert dialog.form.model_combo.currentText() == "facebook/bart-large-cnn (not downloaded)"
    assert dialog.form.model_source() == "facebook/bart-large-cnn"
    # No pairs are chosen yet, so nothing may claim that every pair can be used.
    assert "Every pair" not in dialog.preview.rejected_label.text()

"""The fine-tune dialog's settings form: pairs, validation, base model, run name and training settings.

The form turns its widgets into a :class:`RunRequest` and back; it never
starts work itself.
"""

from __future__ import annotations

from collections.abc import Callable

import csv
import io
import json
import logging
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from synopsis.engine.errors import SettingsError
from synopsis.engine.generation import GenerationSettings
from synopsis.engine.pairs import CSV_DELIMITERS, DEFAULT_DOCUMENT_FIELD, DEFAULT_SUMMARY_FIELD, JSON_LINES_SUFFIXES
from synopsis.engine.runs import RunRequest, suggest_run_name
from synopsis.engine.training.settings import PRECISIONS, ROUGE_METRICS, TrainingSettings

log = logging.getLogger(__name__)

PAIRS_FILTER = "Pairs files (*.jsonl *.ndjson *.json *.csv *.tsv);;All files (*)"
SPLIT, SEPARATE, NO_VALIDATION = "split", "file", "none"
DEVICES = ("auto", "cpu", "cuda", "mps")
FIELD_SCAN_BYTES = 1_000_000  # enough of a JSONL file to reach the end of its first line in most files
CHANGE_DELAY_MS = 400  # typing pauses this long before a pairs change triggers a new check


def pairs_file_fields(path: Path) -> list[str]:
    """Return the column names of a CSV/TSV file, or the keys of a JSONL/JSON file's first object; [] otherwise."""
    suffix = path.suffix.lower()
    if not path.is_file():
        return []
    try:
        if suffix in CSV_DELIMITERS:
            with path.open(encoding="utf-8-sig", newline="") as stream:
                header = stream.readline()
            # The delimiter that splits the header into the most columns.
            rows = [next(csv.reader(io.StringIO(header), delimiter=d), []) for d in CSV_DELIMITERS[suffix]]
            return max(rows, key=len)
        if suffix in JSON_LINES_SUFFIXES:
            with path.open(encoding="utf-8-sig") as stream:
                text = stream.read(FIELD_SCAN_BYTES)
            for line in text.split("\n"):
                if line.strip():
                    value = json.loads(line)
                    return list(value) if isinstance(value, dict) else []
        if suffix == ".json":
            value = json.loads(path.read_text(encoding="utf-8-sig"))
            if isinstance(value, list) and value and isinstance(value[0], dict):
                return list(value[0])
    except (OSError, UnicodeDecodeError, ValueError) as error:
        log.info("columns of %s could not be read: %s", path, error)
    return []


def _spin(minimum: int, maximum: int, value: int, tip: str, special: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(minimum, maximum)
    box.setValue(value)
    box.setToolTip(tip)
    if special:
        box.setSpecialValueText(special)  # shown for the minimum, which then means "unset"
    return box


def _double(minimum: float, maximum: float, value: float, step: float, decimals: int, tip: str, special: str = "") -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(minimum, maximum)
    box.setDecimals(decimals)
    box.setSingleStep(step)
    box.setValue(value)
    box.setToolTip(tip)
    if special:
        box.setSpecialValueText(special)
    return box


def _optional(box: QSpinBox) -> int | None:
    """Return the box's value, or None when it shows its special text (its minimum, 0)."""
    return box.value() or None


class TrainingForm(QWidget):
    """All inputs of a training run; :meth:`request` builds the RunRequest they describe."""

    sig_changed = Signal()
    """Any input changed (the dialog updates the equivalent command)."""

    sig_pairs_changed = Signal()
    """The pairs, their columns, the validation choice or the base model changed, after a short pause."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pairs_timer = QTimer(self)
        self._pairs_timer.setSingleShot(True)
        self._pairs_timer.setInterval(CHANGE_DELAY_MS)
        self._pairs_timer.timeout.connect(self.sig_pairs_changed)
        self._name_edited = False

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._build_pairs_group())
        layout.addWidget(self._build_model_group())
        layout.addWidget(self._build_settings_group())
        self.advanced_button = QToolButton()
        self.advanced_button.setText("Advanced settings")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_button.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_button.toggled.connect(self._show_advanced)
        layout.addWidget(self.advanced_button)
        self.advanced_group = self._build_advanced_group()
        self.advanced_group.setVisible(False)
        layout.addWidget(self.advanced_group)
        layout.addStretch(1)
        self._connect_changes()
        self._update_enabled()
        self._wheel_guard = _WheelGuard(self)
        for box in self.findChildren(QAbstractSpinBox) + self.findChildren(QComboBox):
            box.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            box.installEventFilter(self._wheel_guard)

    # Layout -----------------------------------------------------------------

    def _build_pairs_group(self) -> QGroupBox:
        group = QGroupBox("Pairs")
        form = QFormLayout(group)
        self.pairs_edit = QLineEdit()
        self.pairs_edit.setPlaceholderText("a folder, a .csv or a .jsonl file")
        self.pairs_edit.setToolTip(
            "Document/summary pairs: a folder (report.pdf beside report.summary.txt, or documents/ and "
            "summaries/ subfolders), a CSV/TSV file with a header row, or a JSONL file with one object per line"
        )
        folder_button = QPushButton("Folder…")
        file_button = QPushButton("File…")
        folder_button.clicked.connect(self._choose_pairs_folder)
        file_button.clicked.connect(lambda: self._choose_file(self.pairs_edit, "Choose a pairs file"))
        row = QHBoxLayout()
        row.addWidget(self.pairs_edit, 1)
        row.addWidget(folder_button)
        row.addWidget(file_button)
        form.addRow("Pairs:", row)

        self.document_field = self._field_combo(DEFAULT_DOCUMENT_FIELD, "document text, or the path of a PDF, DOCX, TXT or MD file")
        self.summary_field = self._field_combo(DEFAULT_SUMMARY_FIELD, "reference summary")
        columns = QHBoxLayout()
        columns.addWidget(QLabel("Document:"))
        columns.addWidget(self.document_field, 1)
        columns.addWidget(QLabel("Summary:"))
        columns.addWidget(self.summary_field, 1)
        form.addRow("Columns:", columns)

        self.validation_mode = QComboBox()
        self.validation_mode.addItem("Hold out part of the pairs", SPLIT)
        self.validation_mode.addItem("Separate file", SEPARATE)
        self.validation_mode.addItem("No validation", NO_VALIDATION)
        self.validation_mode.setToolTip(
            "Pairs to evaluate on (ROUGE, best checkpoint, early stopping); without them no best model is chosen"
        )
        self.validation_slider = QSlider(Qt.Orientation.Horizontal)
        self.validation_slider.setRange(5, 50)
        self.validation_slider.setSingleStep(5)
        self.validation_slider.setPageStep(5)
        self.validation_slider.setValue(10)
        self.validation_slider.setToolTip("Percent of the pairs held out for validation, chosen by the seed")
        self.validation_label = QLabel()
        self.validation_edit = QLineEdit()
        self.validation_edit.setPlaceholderText("validation pairs: a folder, .csv or .jsonl")
        self.validation_browse = QPushButton("File…")
        self.validation_browse.clicked.connect(lambda: self._choose_file(self.validation_edit, "Choose validation pairs"))
        validation = QHBoxLayout()
        validation.addWidget(self.validation_mode)
        validation.addWidget(self.validation_slider, 1)
        validation.addWidget(self.validation_label)
        validation.addWidget(self.validation_edit, 2)
        validation.addWidget(self.validation_browse)
        form.addRow("Validation:", validation)

        self.skip_bad = QCheckBox("Leave out pairs that cannot be used")
        self.skip_bad.setChecked(True)
        self.skip_bad.setToolTip("Train without the pairs the preview rejects; unticked, such pairs stop the run")
        form.addRow("", self.skip_bad)
        return group

    def _field_combo(self, default: str, role: str) -> QComboBox:
        combo = QComboBox()
        combo.setEditable(True)
        combo.addItem(default)
        combo.setToolTip(f"CSV column or JSON key of the {role}; unused for folders")
        return combo

    def _build_model_group(self) -> QGroupBox:
        group = QGroupBox("Model and run")
        form = QFormLayout(group)
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.setToolTip("The model to start from: one from the model manager, a hub id or a model folder")
        form.addRow("Base model:", self.model_combo)
        self.device_combo = QComboBox()
        self.device_combo.setEditable(True)
        self.device_combo.addItems(DEVICES)
        self.device_combo.setToolTip("auto picks a CUDA GPU, then Apple MPS, then the CPU; cuda:N picks GPU N")
        form.addRow("Device:", self.device_combo)
        self.name_edit = QLineEdit()
        self.name_edit.setToolTip("Name of the run folder and of the fine-tuned model in the model manager")
        self.name_edit.textEdited.connect(self._name_was_edited)
        form.addRow("Output name:", self.name_edit)
        return group

    def _build_settings_group(self) -> QGroupBox:
        defaults = TrainingSettings()
        group = QGroupBox("Training")
        form = QFormLayout(group)
        self.epochs = _spin(1, 1000, defaults.epochs, "Passes over the training pairs")
        self.learning_rate = QLineEdit(f"{defaults.learning_rate:g}")
        validator = QDoubleValidator(1e-9, 1.0, 12, self.learning_rate)
        validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
        self.learning_rate.setValidator(validator)
        self.learning_rate.setToolTip("Peak AdamW learning rate, reached after warmup (per optimizer step, e.g. 3e-05)")
        self.accumulate = _spin(1, 4096, defaults.accumulate, "Documents per optimizer step (gradient accumulation)")
        self.chunk_windows = _spin(
            1, 256, defaults.chunk_windows,
            "Windows re-encoded with gradients at once; more is faster and uses more memory (windows)",
        )
        self.eval_every = _spin(1, 1_000_000, defaults.eval_every, "Optimizer steps between evaluations and checkpoints (steps)")
        self.patience = _spin(
            0, 1000, 0, "Evaluations without improvement before stopping early (evaluations); never: train to the end",
            "never",
        )
        form.addRow("Epochs:", self.epochs)
        form.addRow("Learning rate:", self.learning_rate)
        form.addRow("Accumulation:", self.accumulate)
        form.addRow("Windows per re-encode chunk:", self.chunk_windows)
        form.addRow("Evaluate every:", self.eval_every)
        form.addRow("Early-stopping patience:", self.patience)
        return group

    def _build_advanced_group(self) -> QGroupBox:
        defaults = TrainingSettings()
        group = QGroupBox("Advanced")
        form = QFormLayout(group)
        self.max_steps = _spin(0, 10_000_000, 0, "Optimizer steps in the whole run, resumed steps included (steps)", "no limit")
        self.warmup = _double(0, 0.99, defaults.warmup_fraction, 0.01, 3, "Share of all steps spent warming the learning rate up from 0 (fraction)")
        self.weight_decay = _double(0, 1, defaults.weight_decay, 0.01, 4, "AdamW decoupled weight decay (per step, times the learning rate)")
        self.max_grad_norm = _double(0, 1000, defaults.max_grad_norm or 0, 0.1, 2, "Clip the gradient's global L2 norm to this value", "no clipping")

        self.best_metric = QComboBox()
        self.best_metric.addItems(list(ROUGE_METRICS) + ["loss"])
        self.best_metric.setCurrentText(defaults.best_metric)
        self.best_metric.setToolTip("Validation metric that picks the best checkpoint; ROUGE higher is better, loss lower")
        self.keep_last = _spin(1, 100, defaults.keep_last, "Step checkpoints kept besides the best one (checkpoints)")
        self.seed = _spin(0, 2**31 - 1, defaults.seed, "Random seed for the validation split, the pair order and dropout")
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.precision.setToolTip("auto: bf16 or fp16 on a CUDA GPU, fp32 elsewhere")

        self.window_tokens = _spin(0, 1_000_000, 0, "Tokens per encoder window, special tokens included (tokens)", "model maximum")
        self.eval_max_tokens = _spin(0, 4096, 0, "Maximum tokens generated per validation summary (tokens)", "model default")
        self.eval_beams = _spin(0, 32, 0, "Beam width when generating validation summaries (1 is greedy)", "model default")
        self.max_eval_pairs = _spin(0, 1_000_000, 0, "Validation pairs used per evaluation (pairs)", "all")
        self.max_skipped = _spin(1, 10_000, defaults.max_skipped_steps, "Steps with a non-finite loss or gradient before training stops (steps)")

        for label, widget in (
            ("Max steps:", self.max_steps), ("Warmup fraction:", self.warmup), ("Weight decay:", self.weight_decay),
            ("Max grad norm:", self.max_grad_norm), ("Best metric:", self.best_metric),
            ("Checkpoints kept:", self.keep_last), ("Seed:", self.seed), ("Precision:", self.precision),
            ("Window tokens:", self.window_tokens), ("Evaluation max tokens:", self.eval_max_tokens),
            ("Evaluation beams:", self.eval_beams), ("Max evaluation pairs:", self.max_eval_pairs),
            ("Skipped steps allowed:", self.max_skipped),
        ):
            form.addRow(label, widget)
        return group

    def _connect_changes(self) -> None:
        for line in (self.pairs_edit, self.validation_edit):
            line.textChanged.connect(self._pairs_edited)
        for combo in (self.document_field, self.summary_field, self.model_combo, self.device_combo):
            combo.currentTextChanged.connect(self._pairs_edited)
        self.validation_mode.currentIndexChanged.connect(self._pairs_edited)
        self.validation_slider.valueChanged.connect(self._pairs_edited)
        self.pairs_edit.textChanged.connect(self._refresh_fields)
        self.model_combo.currentTextChanged.connect(self._suggest_name)
        for widget in self.findChildren(QSpinBox) + self.findChildren(QDoubleSpinBox):
            widget.valueChanged.connect(self.sig_changed)
        for widget in (self.learning_rate, self.name_edit):
            widget.textChanged.connect(self.sig_changed)
        for combo in (self.best_metric, self.precision):
            combo.currentTextChanged.connect(self.sig_changed)
        self.skip_bad.toggled.connect(self.sig_changed)

    # Reactions --------------------------------------------------------------

    def _pairs_edited(self, *_args) -> None:
        self._update_enabled()
        self.sig_changed.emit()
        self._pairs_timer.start()

    def _update_enabled(self) -> None:
        mode = self.validation_mode.currentData()
        self.validation_slider.setVisible(mode == SPLIT)
        self.validation_label.setVisible(mode == SPLIT)
        self.validation_label.setText(f"{self.validation_slider.value()} %")
        self.validation_edit.setVisible(mode == SEPARATE)
        self.validation_browse.setVisible(mode == SEPARATE)
        is_file = not Path(self.pairs_edit.text().strip()).expanduser().is_dir()
        self.document_field.setEnabled(is_file)
        self.summary_field.setEnabled(is_file)

    def _refresh_fields(self) -> None:
        """Offer the file's columns in the two column boxes, keeping the current choices.

        A column that is not in the file is replaced by a likely one (the
        default name, then common names such as text/abstract), and the two
        boxes never start on the same column.
        """
        fields = pairs_file_fields(Path(self.pairs_edit.text().strip()).expanduser())
        taken: set[str] = set()
        for combo, default in ((self.document_field, DEFAULT_DOCUMENT_FIELD), (self.summary_field, DEFAULT_SUMMARY_FIELD)):
            current = combo.currentText()
            if fields and (current not in fields or current in taken):
                current = _likely_field(fields, default, taken)
            taken.add(current)
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(fields or [default])
            combo.setCurrentText(current)
            combo.blockSignals(False)

    def _suggest_name(self, model: str) -> None:
        if not self._name_edited and model.strip():
            self.name_edit.setText(suggest_run_name(model.strip()))

    def propose_new_name(self, taken: Callable[[str], bool]) -> None:
        """Replace the output name with a fresh one for ``model``, numbered past the names ``taken``."""
        base = suggest_run_name(self.model_source() or "model")
        name, number = base, 2
        while taken(name):
            name, number = f"{base}-{number}", number + 1
        self.name_edit.setText(name)
        self._name_edited = False

    def _name_was_edited(self, _text: str) -> None:
        self._name_edited = True

    def _show_advanced(self, shown: bool) -> None:
        self.advanced_group.setVisible(shown)
        self.advanced_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def _choose_pairs_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of documents and summaries")
        if folder:
            self.pairs_edit.setText(folder)

    def _choose_file(self, target: QLineEdit, title: str) -> None:
        path, _filter = QFileDialog.getOpenFileName(self, title, target.text(), PAIRS_FILTER)
        if path:
            target.setText(path)

    # Models -----------------------------------------------------------------

    def set_models(self, models: list[tuple[str, str]], current: str) -> None:
        """List ``(label, source)`` models in the base-model box and select ``current``."""
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for label, source in models:
            self.model_combo.addItem(label, source)
            self.model_combo.setItemData(self.model_combo.count() - 1, source, Qt.ItemDataRole.ToolTipRole)
        self.model_combo.blockSignals(False)
        self.set_model(current)

    def set_model(self, source: str) -> None:
        index = self.model_combo.findData(source)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        else:
            self.model_combo.setCurrentText(source)
        self._suggest_name(source)

    def model_source(self) -> str:
        """Return the chosen model's source: the listed entry's, or the text typed."""
        text = self.model_combo.currentText().strip()
        index = self.model_combo.currentIndex()
        if index >= 0 and self.model_combo.itemText(index) == text:
            return self.model_combo.itemData(index) or text
        return text

    # Request ----------------------------------------------------------------

    def request(self) -> RunRequest:
        """Return the request the inputs describe; raise SettingsError naming an invalid input."""
        try:
            learning_rate = float(self.learning_rate.text())
        except ValueError:
            raise SettingsError(f"The learning rate '{self.learning_rate.text()}' is not a number, e.g. 3e-05.") from None
        settings = TrainingSettings(
            epochs=self.epochs.value(),
            max_steps=_optional(self.max_steps),
            learning_rate=learning_rate,
            warmup_fraction=self.warmup.value(),
            weight_decay=self.weight_decay.value(),
            accumulate=self.accumulate.value(),
            max_grad_norm=self.max_grad_norm.value() or None,
            chunk_windows=self.chunk_windows.value(),
            eval_every=self.eval_every.value(),
            patience=_optional(self.patience),
            best_metric=self.best_metric.currentText(),
            keep_last=self.keep_last.value(),
            seed=self.seed.value(),
            precision=self.precision.currentText(),
            window_tokens=_optional(self.window_tokens),
            eval_generation=GenerationSettings(
                max_tokens=_optional(self.eval_max_tokens),
                beams=_optional(self.eval_beams),
                window_tokens=_optional(self.window_tokens),
            ),
            max_eval_pairs=_optional(self.max_eval_pairs),
            max_skipped_steps=self.max_skipped.value(),
        )
        mode = self.validation_mode.currentData()
        validation_file = self.validation_edit.text().strip() if mode == SEPARATE else None
        if mode == SEPARATE and not validation_file:
            raise SettingsError("No validation file chosen: choose one, or hold out part of the pairs.")
        request = RunRequest(
            name=self.name_edit.text().strip(),
            pairs=self.pairs_edit.text().strip(),
            model=self.model_source(),
            document_field=self.document_field.currentText().strip(),
            summary_field=self.summary_field.currentText().strip(),
            validation_fraction=self.validation_slider.value() / 100 if mode == SPLIT else None,
            validation_file=validation_file,
            device=self.device_combo.currentText().strip() or "auto",
            skip_bad_pairs=self.skip_bad.isChecked(),
            settings=settings,
        )
        request.validate()
        return request

    def set_request(self, request: RunRequest) -> None:
        """Show ``request`` in the inputs."""
        settings = request.settings
        self.pairs_edit.setText(request.pairs)
        self.document_field.setCurrentText(request.document_field)
        self.summary_field.setCurrentText(request.summary_field)
        if request.validation_file is not None:
            self.validation_mode.setCurrentIndex(self.validation_mode.findData(SEPARATE))
            self.validation_edit.setText(request.validation_file)
        elif request.validation_fraction is not None:
            self.validation_mode.setCurrentIndex(self.validation_mode.findData(SPLIT))
            self.validation_slider.setValue(round(request.validation_fraction * 100))
        else:
            self.validation_mode.setCurrentIndex(self.validation_mode.findData(NO_VALIDATION))
        self.skip_bad.setChecked(request.skip_bad_pairs)
        self._name_edited = True
        self.name_edit.setText(request.name)
        self.set_model(request.model)
        self.device_combo.setCurrentText(request.device)

        self.epochs.setValue(settings.epochs)
        self.max_steps.setValue(settings.max_steps or 0)
        self.learning_rate.setText(f"{settings.learning_rate:g}")
        self.warmup.setValue(settings.warmup_fraction)
        self.weight_decay.setValue(settings.weight_decay)
        self.accumulate.setValue(settings.accumulate)
        self.max_grad_norm.setValue(settings.max_grad_norm or 0)
        self.chunk_windows.setValue(settings.chunk_windows)
        self.eval_every.setValue(settings.eval_every)
        self.patience.setValue(settings.patience or 0)
        self.best_metric.setCurrentText(settings.best_metric)
        self.keep_last.setValue(settings.keep_last)
        self.seed.setValue(settings.seed)
        self.precision.setCurrentText(settings.precision)
        self.window_tokens.setValue(settings.window_tokens or 0)
        self.eval_max_tokens.setValue(settings.eval_generation.max_tokens or 0)
        self.eval_beams.setValue(settings.eval_generation.beams or 0)
        self.max_eval_pairs.setValue(settings.max_eval_pairs or 0)
        self.max_skipped.setValue(settings.max_skipped_steps)
        self._update_enabled()


# Column names that usually hold the document or the summary, best first.
_LIKELY_FIELDS = {
    DEFAULT_DOCUMENT_FIELD: ("document", "text", "article", "body", "source", "input", "content"),
    DEFAULT_SUMMARY_FIELD: ("summary", "abstract", "highlights", "target", "output", "reference"),
}


def _likely_field(fields: list[str], default: str, taken: set[str]) -> str:
    """Return the column of ``fields`` most likely meant for ``default``, avoiding ``taken``."""
    lowered = {field.lower(): field for field in fields}
    for name in _LIKELY_FIELDS.get(default, (default,)):
        if name in lowered and lowered[name] not in taken:
            return lowered[name]
    free = [field for field in fields if field not in taken]
    if not free:
        return fields[0]
    # Summaries tend to come after documents, so the summary takes the last free column.
    if default == DEFAULT_SUMMARY_FIELD:
        return free[-1]
    return free[0]


class _WheelGuard(QObject):
    """Stops the mouse wheel from changing a setting the user is only scrolling past.

    A spin box or combo box reacts to the wheel only after it has been clicked
    or tabbed into. Until then the wheel event is ignored, so it scrolls the form.
    """

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Wheel and not watched.hasFocus():
            event.ignore()
            return True
        return False

"""Summary length presets, and the Preferences dialog that edits AppSettings."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from synopsis.engine.documents.limits import USER_LIMITS
from synopsis.engine.generation import GenerationSettings
from synopsis.engine.models import DEFAULT_MODEL
from synopsis.engine.speed import PRECISIONS

from .settings import AppSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LengthPreset:
    """A named summary length, as a range of generated tokens."""

    name: str
    label: str
    min_tokens: int
    max_tokens: int


# BART-large-cnn's own defaults (56 to 142 tokens) sit between short and
# medium; a whole long document usually deserves more.
LENGTH_PRESETS = {
    "short": LengthPreset("short", "Short", 40, 100),
    "medium": LengthPreset("medium", "Medium", 100, 250),
    "long": LengthPreset("long", "Long", 250, 500),
}
EXACT = "exact"
MAX_SUMMARY_TOKENS = 1023  # BART's decoder has 1024 positions, one taken by the start token
MAX_BEAMS = 8
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISION_LABELS = {
    "auto": "Automatic",
    "fp32": "fp32 (full precision)",
    "bf16": "bf16",
    "fp16": "fp16 (GPU only)",
    "int8": "int8 (CPU only)",
}
MAX_LIMIT_COUNT = 2_000_000_000  # QSpinBox stores a signed 32-bit int
MAX_READ_SECONDS = 86_400.0


def token_range(settings: AppSettings) -> tuple[int, int]:
    """Return (min, max) summary tokens for the chosen preset or the exact range."""
    preset = LENGTH_PRESETS.get(settings.length)
    if preset is not None:
        return preset.min_tokens, preset.max_tokens
    low, high = sorted((settings.min_tokens, settings.max_tokens))
    return max(low, 0), max(high, 1)


def generation_settings(settings: AppSettings) -> GenerationSettings:
    """Build the engine's settings from the window's settings."""
    min_tokens, max_tokens = token_range(settings)
    return GenerationSettings(
        max_tokens=max_tokens, min_tokens=min_tokens, beams=max(settings.beams, 1), precision=settings.precision
    )


def describe_length(settings: AppSettings) -> str:
    """Return a short label such as 'Medium (100-250 tokens)'."""
    low, high = token_range(settings)
    preset = LENGTH_PRESETS.get(settings.length)
    name = preset.label if preset else "Exact"
    return f"{name} ({low}-{high} tokens)"


def length_choices() -> list[tuple[str, str]]:
    """Return (key, label) pairs for a length combo box, presets first."""
    choices = [(key, f"{preset.label} ({preset.min_tokens}-{preset.max_tokens} tokens)") for key, preset in LENGTH_PRESETS.items()]
    choices.append((EXACT, "Exact range"))
    return choices


class PreferencesDialog(QDialog):
    """Edits a copy of the settings; ``result_settings()`` returns it after Accept."""

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self._settings = dataclasses.replace(settings, model_folders=list(settings.model_folders))

        self.length = QComboBox()
        for key, label in length_choices():
            self.length.addItem(label, key)
        self.min_tokens = self._token_spin(settings.min_tokens, 0)
        self.max_tokens = self._token_spin(settings.max_tokens, 1)
        self.beams = QSpinBox()
        self.beams.setRange(1, MAX_BEAMS)
        self.beams.setValue(max(1, min(settings.beams, MAX_BEAMS)))
        self.beams.setToolTip("Beam search width: more beams can give a better summary, slower and with more memory.")
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.setToolTip("A Hugging Face hub id or a local model folder in save_pretrained layout.")
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.precision = QComboBox()
        for key in PRECISIONS:
            self.precision.addItem(PRECISION_LABELS[key], key)
        self.precision.setToolTip(
            "The number format the encoder reads documents in. Automatic picks bf16 where the processor or GPU "
            "supports it, which is faster and changes the encoder's output by well under 1%; the decoder always "
            "runs in fp32. The model files are never changed."
        )

        self.limits = {name: self._limit_spin(name, getattr(settings, name)) for name in USER_LIMITS}

        self._fill_models(settings)
        self._select(self.length, settings.length if settings.length in dict(length_choices()) else "medium")
        self._select_text(self.device, settings.device)
        self._select(self.precision, settings.precision)
        self.length.currentIndexChanged.connect(self._update_range_enabled)
        self._update_range_enabled()
        self._build_layout()

    def _token_spin(self, value: int, minimum: int) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(minimum, MAX_SUMMARY_TOKENS)
        spin.setSuffix(" tokens")
        spin.setValue(max(minimum, min(value, MAX_SUMMARY_TOKENS)))
        return spin

    @staticmethod
    def _limit_spin(name: str, value: int | float) -> QSpinBox | QDoubleSpinBox:
        setting = USER_LIMITS[name]
        if isinstance(value, float):
            spin = QDoubleSpinBox()
            spin.setDecimals(1)
            spin.setRange(0.1, MAX_READ_SECONDS)
        else:
            spin = QSpinBox()
            spin.setRange(1, MAX_LIMIT_COUNT)
            spin.setGroupSeparatorShown(True)
        spin.setSuffix(f" {setting.unit}")
        spin.setValue(value)
        spin.setToolTip(
            f"Maximum {setting.description}. Reading stops with an error when a document exceeds it "
            f"(on the command line: {setting.flag})."
        )
        return spin

    def _fill_models(self, settings: AppSettings) -> None:
        names = [settings.model, DEFAULT_MODEL, *settings.model_folders]
        for name in dict.fromkeys(names):
            self.model.addItem(name)
        self.model.setCurrentText(settings.model)

    def _build_layout(self) -> None:
        range_row = QHBoxLayout()
        range_row.addWidget(self.min_tokens)
        range_row.addWidget(QLabel("to"))
        range_row.addWidget(self.max_tokens)
        browse = QPushButton("Folder…")
        browse.setToolTip("Choose a local model folder (config.json, tokenizer files, model.safetensors).")
        browse.clicked.connect(self._browse_model_folder)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(browse)

        form = QFormLayout()
        form.addRow("Summary length:", self.length)
        form.addRow("Exact range:", range_row)
        form.addRow("Beams:", self.beams)
        form.addRow("Model:", model_row)
        form.addRow("Device:", self.device)
        form.addRow("Encoder precision:", self.precision)

        limits_form = QFormLayout()
        for name, spin in self.limits.items():
            limits_form.addRow(f"{USER_LIMITS[name].label}:", spin)
        limits_box = QGroupBox("Document limits")
        limits_box.setLayout(limits_form)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(limits_box)
        layout.addWidget(buttons)
        self.resize(560, self.sizeHint().height())

    @staticmethod
    def _select(combo: QComboBox, key: str) -> None:
        index = combo.findData(key)
        combo.setCurrentIndex(max(index, 0))

    @staticmethod
    def _select_text(combo: QComboBox, text: str) -> None:
        index = combo.findText(text)
        if index < 0:
            combo.addItem(text)
            index = combo.count() - 1
        combo.setCurrentIndex(index)

    def _update_range_enabled(self) -> None:
        exact = self.length.currentData() == EXACT
        self.min_tokens.setEnabled(exact)
        self.max_tokens.setEnabled(exact)

    def _browse_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder", self.model.currentText())
        if folder:
            self.model.setCurrentText(folder)

    def result_settings(self) -> AppSettings:
        """Return the settings as edited in the dialog."""
        settings = self._settings
        settings.length = self.length.currentData()
        low, high = sorted((self.min_tokens.value(), self.max_tokens.value()))
        settings.min_tokens, settings.max_tokens = low, max(high, 1)
        settings.beams = self.beams.value()
        settings.model = self.model.currentText().strip() or DEFAULT_MODEL
        settings.device = self.device.currentText()
        settings.precision = self.precision.currentData()
        for name, spin in self.limits.items():
            setattr(settings, name, spin.value())
        return settings

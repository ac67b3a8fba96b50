"""The desktop window's settings: one typed, versioned dataclass stored as JSON.

The file lives in ``user_config_dir("Synopsis")/settings.json`` and is written
atomically. Older files are brought up to date by the functions in
``MIGRATIONS``. A file that cannot be parsed is renamed aside (never
deleted) and the defaults are used, with a message for the user.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import platformdirs

from synopsis.engine.documents import DocumentLimits
from synopsis.engine.documents.limits import USER_LIMITS
from synopsis.engine.files import set_aside, write_text_atomic
from synopsis.engine.models import DEFAULT_MODEL
from synopsis.engine.speed import PRECISIONS

log = logging.getLogger(__name__)

APP_NAME = "Synopsis"
SETTINGS_VERSION = 1

# MIGRATIONS[n] turns the dict of a version-n file into a version n+1 dict.
# Version 1 is the first released layout, so there is nothing to migrate yet.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}


@dataclass
class AppSettings:
    """Everything the window remembers between runs."""

    version: int = SETTINGS_VERSION
    model: str = DEFAULT_MODEL  # hub id or model folder
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    length: str = "medium"  # a preset name from preferences.LENGTH_PRESETS, or "exact"
    min_tokens: int = 100  # used when length is "exact"
    max_tokens: int = 250
    beams: int = 4
    precision: str = "auto"  # the encoder's number format, one of engine.speed.PRECISIONS
    model_folders: list[str] = field(default_factory=list)  # local folders the user picked, newest first
    last_open_folder: str = ""
    last_export_folder: str = ""
    export_format: str = "md"  # txt, md or docx
    window_geometry: str = ""  # QWidget.saveGeometry() in base64
    window_state: str = ""  # QMainWindow.saveState() in base64
    # Document limits, named as in DocumentLimits; each must be positive.
    max_pages: int = DocumentLimits.max_pages
    max_characters: int = DocumentLimits.max_characters
    max_input_tokens: int = DocumentLimits.max_input_tokens
    max_read_seconds: float = DocumentLimits.max_read_seconds


@dataclass
class LoadResult:
    """Settings read from disk, and a message for the user when the file had a problem."""

    settings: AppSettings
    problem: str | None = None


def default_settings_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "settings.json"


def migrate(data: dict) -> dict:
    """Apply migrations until ``data`` has the current version.

    A file from a newer Synopsis keeps the fields this version defines.
    """
    version = data.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"invalid settings version {version!r}")
    while version < SETTINGS_VERSION:
        data = MIGRATIONS[version](dict(data))
        version += 1
        data["version"] = version
        log.info("migrated settings to version %d", version)
    if version > SETTINGS_VERSION:
        log.warning("settings file is version %d, newer than %d: unknown fields are ignored", version, SETTINGS_VERSION)
    return data


def _field_types() -> dict[str, type]:
    defaults = AppSettings()
    return {item.name: type(getattr(defaults, item.name)) for item in dataclasses.fields(AppSettings)}


def settings_from_json(data: dict) -> tuple[AppSettings, list[str]]:
    """Build settings from a migrated dict; fields of the wrong type fall back to their default.

    Returns the settings and the names of the fields that were reset.
    """
    values = {}
    reset = []
    for name, expected in _field_types().items():
        if name not in data:
            continue
        value = data[name]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # a hand edit may write 600.0 as 600
        valid = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is list:
            valid = valid and all(isinstance(item, str) for item in value)
        if name in USER_LIMITS:
            valid = valid and value > 0 and value == value  # NaN is not equal to itself
        if name == "precision":
            valid = valid and value in PRECISIONS
        if valid:
            values[name] = value
        else:
            reset.append(name)
    values["version"] = SETTINGS_VERSION
    return AppSettings(**values), reset


def document_limits(settings: AppSettings) -> DocumentLimits:
    """Return the engine's document limits as the user set them in Preferences."""
    return DocumentLimits(**{name: getattr(settings, name) for name in USER_LIMITS})


def load_settings(path: Path | None = None) -> LoadResult:
    """Read the settings file; a missing file gives the defaults, a corrupted one is set aside."""
    path = path or default_settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return LoadResult(AppSettings())
    except OSError as error:
        log.warning("could not read settings %s: %s", path, error)
        return LoadResult(AppSettings(), f"Settings could not be read ({error}); defaults are used.")

    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the file does not contain a JSON object")
        data = migrate(data)
    except (ValueError, KeyError) as error:
        return _set_aside_result(path, error)

    settings, reset = settings_from_json(data)
    if reset:
        return _reset_fields_result(path, settings, reset)
    return LoadResult(settings)


def _reset_fields_result(path: Path, settings: AppSettings, reset: list[str]) -> LoadResult:
    """Keep the valid fields, and move the file aside so the invalid values are not lost when settings are saved."""
    names = ", ".join(reset)
    log.warning("settings %s: invalid values reset to defaults: %s", path, names)
    try:
        kept = set_aside(path)
    except OSError as rename_error:
        log.error("settings %s could not be moved aside: %s", path, rename_error)
        return LoadResult(settings, f"Some settings were invalid and were reset to their defaults: {names}.")
    return LoadResult(
        settings,
        f"Some settings were invalid and were reset to their defaults: {names}. "
        f"The file as it was is kept as {kept}.",
    )


def _set_aside_result(path: Path, error: Exception) -> LoadResult:
    try:
        kept = set_aside(path)
    except OSError as rename_error:
        log.error("settings %s are corrupted (%s) and could not be renamed: %s", path, error, rename_error)
        return LoadResult(AppSettings(), f"The settings file {path} is corrupted ({error}); defaults are used.")
    log.error("settings %s are corrupted (%s); moved to %s", path, error, kept)
    return LoadResult(
        AppSettings(),
        f"The settings file was corrupted ({error}). It was kept as {kept} and the defaults are used.",
    )


def save_settings(settings: AppSettings, path: Path | None = None) -> None:
    """Write ``settings`` atomically; a failure is logged, not raised, because losing preferences must not stop the app."""
    path = path or default_settings_path()
    settings.version = SETTINGS_VERSION
    try:
        write_text_atomic(path, json.dumps(dataclasses.asdict(settings), ensure_ascii=False, indent=2) + "\n")
    except OSError as error:
        log.error("could not save settings to %s: %s", path, error)

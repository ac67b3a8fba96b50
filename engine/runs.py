"""Training runs started from the desktop window: what was asked for, and how each run ended.

A run folder under ``user_data_dir("Synopsis")/runs/<name>/`` is the
trainer's output folder (``run.json``, ``metrics.jsonl``, ``checkpoints/``,
``best/``, ``last/``). Two more files let a run be listed and resumed after a
restart:

- ``request.json``: the :class:`RunRequest` (pairs, validation, base model,
  device and training settings), so a resume reloads the same pairs;
- ``status.json``: the run's state (``running``, ``stopped``, ``finished``,
  ``stopped early`` or ``failed``), its step and a message.

A run whose status still reads ``running`` when no trainer is working on it
was interrupted (the app was killed or crashed), and it is listed as such.

:class:`RunRequest` is also the format of the settings files the dialog saves
and loads, and :func:`train_command` turns it into the equivalent
``synopsis train`` command line.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import re
import shlex
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from .documents import DocumentLimits
from .errors import DocumentError, SettingsError
from .files import set_aside, write_text_atomic
from .generation import GenerationSettings
from .pairs import DEFAULT_DOCUMENT_FIELD, DEFAULT_SUMMARY_FIELD, Pair, RejectedPair, load_pairs, split_pairs
from .progress import CancellationToken, ProgressFn, ignore_progress
from .training.checkpoint import complete_checkpoints, read_state
from .training.settings import TrainingSettings

log = logging.getLogger(__name__)

APP_NAME = "Synopsis"
REQUEST_FILE = "request.json"
STATUS_FILE = "status.json"
RUN_FILE = "run.json"
REQUEST_VERSION = 1

RUNNING = "running"
STOPPED = "stopped"
FINISHED = "finished"
STOPPED_EARLY = "stopped early"
FAILED = "failed"
INTERRUPTED = "interrupted"  # listed only: the status file still reads "running"
NEW = "new"  # listed only: a request without a status file

# Letters, digits, dot, dash, underscore and space, starting with a letter or
# digit: safe as a folder name on Linux, macOS and Windows.
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,79}")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {f"com{n}" for n in range(1, 10)} | {f"lpt{n}" for n in range(1, 10)}


def default_runs_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "runs"


def check_run_name(name: str) -> None:
    """Raise SettingsError unless ``name`` can be a run folder's name on every platform."""
    if not _RUN_NAME.fullmatch(name) or name.endswith((".", " ")) or name.lower() in _WINDOWS_RESERVED:
        raise SettingsError(
            f"The run name '{name}' is invalid: use 1 to 80 letters, digits, dots, dashes, underscores "
            "or spaces, starting with a letter or digit and not ending with a dot or space."
        )


def suggest_run_name(model: str, now: datetime.datetime | None = None) -> str:
    """Return a name such as ``bart-large-cnn-20261204-1530`` for a new run of ``model``."""
    now = now or datetime.datetime.now()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/\\")).name or "model").strip("-.") or "model"
    return f"{stem[:60]}-{now:%Y%m%d-%H%M}"


# The request ----------------------------------------------------------------


@dataclass(frozen=True)
class RunRequest:
    """Everything a training run needs besides the model weights: data, model, device and settings."""

    name: str
    pairs: str  # a folder, a CSV/TSV file or a JSONL/JSON file, as load_pairs takes it
    model: str  # hub id or model folder to start from
    document_field: str = DEFAULT_DOCUMENT_FIELD  # CSV column or JSON key; unused for folders
    summary_field: str = DEFAULT_SUMMARY_FIELD
    validation_fraction: float | None = 0.1  # share of the pairs held out; None: none, or validation_file
    validation_file: str | None = None  # separate validation pairs; excludes validation_fraction
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    skip_bad_pairs: bool = True  # train without the pairs that cannot be used, instead of stopping
    settings: TrainingSettings = field(default_factory=TrainingSettings)

    def validate(self) -> None:
        """Raise SettingsError naming the first invalid field."""
        check_run_name(self.name)
        if not self.pairs.strip():
            raise SettingsError("No training pairs chosen: choose a folder, a CSV file or a JSONL file.")
        if not self.model.strip():
            raise SettingsError("No base model chosen: choose a model to fine-tune.")
        if self.validation_file is not None and self.validation_fraction is not None:
            raise SettingsError("Choose either a validation fraction or a validation file, not both.")
        if self.validation_fraction is not None and not 0 < self.validation_fraction < 1:
            raise SettingsError(
                f"The validation fraction must be between 0 and 1 (exclusive), got {self.validation_fraction}."
            )
        for role, name in (("document", self.document_field), ("summary", self.summary_field)):
            if not name.strip():
                raise SettingsError(f"The {role} column name is empty: choose the column that contains the {role}.")
        self.settings.validate()

    @property
    def has_validation(self) -> bool:
        return self.validation_file is not None or self.validation_fraction is not None

    def to_json(self) -> dict:
        data = {"version": REQUEST_VERSION}
        data.update({item.name: getattr(self, item.name) for item in dataclasses.fields(self)})
        data["settings"] = self.settings.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> "RunRequest":
        """Build a request from ``to_json`` output; raise SettingsError on unknown or missing fields."""
        if not isinstance(data, dict):
            raise SettingsError("The run settings must be a JSON object.")
        values = dict(data)
        version = values.pop("version", REQUEST_VERSION)
        if version != REQUEST_VERSION:
            raise SettingsError(f"Run settings of version {version!r} are not supported; this Synopsis reads version {REQUEST_VERSION}.")
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SettingsError(f"Unknown run settings: {', '.join(unknown)}.")
        missing = sorted(name for name in ("name", "pairs", "model") if name not in values)
        if missing:
            raise SettingsError(f"The run settings lack {', '.join(missing)}.")
        try:
            settings = values.get("settings") or {}
            if not isinstance(settings, dict):
                raise TypeError("'settings' is not an object")
            values["settings"] = TrainingSettings.from_json(settings)
            request = cls(**values)
        except TypeError as error:
            raise SettingsError(f"The run settings are invalid: {error}.") from error
        wrong = [*wrong_type_fields(request), *wrong_type_fields(request.settings, "settings.")]
        wrong += wrong_type_fields(request.settings.eval_generation, "settings.eval_generation.")
        if wrong:
            raise SettingsError(f"The run settings have values of the wrong type: {', '.join(wrong)}.")
        return request


def wrong_type_fields(instance: object, prefix: str = "") -> list[str]:
    """Return the names of ``instance``'s dataclass fields whose values do not match their annotations.

    Only plain types and unions of them are checked, and fields of other types
    are skipped. An int is accepted for a float, but a bool is not accepted for an int.
    """
    wrong = []
    for name, hint in typing.get_type_hints(type(instance)).items():
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if not all(isinstance(option, type) for option in allowed) or not dataclasses.is_dataclass(instance):
            continue
        if any(dataclasses.is_dataclass(option) for option in allowed):
            continue
        if float in allowed:
            allowed = (*allowed, int)
        value = getattr(instance, name)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            wrong.append(f"{prefix}{name}")
    return wrong


def save_request(request: RunRequest, path: str | Path) -> None:
    write_text_atomic(path, json.dumps(request.to_json(), indent=1, ensure_ascii=False) + "\n")


def load_request(path: str | Path) -> RunRequest:
    """Read a request (a saved settings file or a run's request.json); raise SettingsError when it cannot be used."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SettingsError(f"{path} could not be read: {error.strerror or error}.") from error
    except json.JSONDecodeError as error:
        raise SettingsError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}).") from error
    except UnicodeDecodeError as error:
        raise SettingsError(f"{path} is not UTF-8 text.") from error
    return RunRequest.from_json(data)


# The equivalent command -----------------------------------------------------


@dataclass(frozen=True)
class TrainCommand:
    """A ``synopsis train`` command line, and the settings it cannot express."""

    argv: list[str]
    not_expressible: list[str]  # settings that differ from the defaults and have no command-line flag

    def text(self) -> str:
        """Return the command quoted for a POSIX shell."""
        return shlex.join(self.argv)


# Settings the train command has no flag for, with their labels.
_NO_FLAG = {
    "warmup_fraction": "warmup fraction",
    "weight_decay": "weight decay",
    "max_grad_norm": "max grad norm",
    "keep_last": "checkpoints kept",
    "max_skipped_steps": "skipped steps allowed",
}


def train_command(request: RunRequest, output_dir: str | Path, resume: bool = False) -> TrainCommand:
    """Return the ``synopsis train`` command that runs ``request`` into ``output_dir``.

    Flags are given only for values that differ from the defaults, except the
    required ones, so the command stays short and reads like one typed by hand.
    """
    settings = request.settings
    defaults = TrainingSettings()
    argv = ["synopsis", "train", "--pairs", request.pairs, "--model", request.model, "--output", str(output_dir)]
    if request.validation_file is not None:
        argv += ["--validation", request.validation_file]
    elif request.validation_fraction is not None:
        argv += ["--val-fraction", f"{request.validation_fraction:g}"]

    flags = (
        ("--epochs", "epochs"),
        ("--max-steps", "max_steps"),
        ("--lr", "learning_rate"),
        ("--accumulate", "accumulate"),
        ("--chunk-windows", "chunk_windows"),
        ("--eval-every", "eval_every"),
        ("--patience", "patience"),
        ("--best-metric", "best_metric"),
        ("--seed", "seed"),
        ("--precision", "precision"),
        ("--window-tokens", "window_tokens"),
        ("--max-eval-pairs", "max_eval_pairs"),
    )
    for flag, name in flags:
        value = getattr(settings, name)
        if value is not None and value != getattr(defaults, name):
            argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    generation = settings.eval_generation
    if generation.max_tokens is not None:
        argv += ["--eval-max-tokens", str(generation.max_tokens)]
    if generation.beams is not None:
        argv += ["--eval-beams", str(generation.beams)]
    if request.document_field != DEFAULT_DOCUMENT_FIELD:
        argv += ["--document-field", request.document_field]
    if request.summary_field != DEFAULT_SUMMARY_FIELD:
        argv += ["--summary-field", request.summary_field]
    if request.skip_bad_pairs:
        argv.append("--skip-bad-pairs")
    if request.device not in ("", "auto"):
        argv += ["--device", request.device]
    if resume:
        argv.append("--resume")

    not_expressible = [label for name, label in _NO_FLAG.items() if getattr(settings, name) != getattr(defaults, name)]
    # The train command sets only max tokens and beams of the evaluation's
    # generation, and takes its window length from --window-tokens.
    expected_generation = GenerationSettings(
        max_tokens=generation.max_tokens, beams=generation.beams, window_tokens=settings.window_tokens
    )
    if generation != expected_generation:
        not_expressible.append("other evaluation generation settings")
    return TrainCommand(argv, not_expressible)


# Run folders ------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_status(folder: Path, state: str, step: int = 0, total_steps: int = 0, message: str = "", **extra) -> None:
    """Record the run's state in ``folder/status.json``, atomically."""
    data = {"state": state, "step": step, "total_steps": total_steps, "message": message, "updated": _now()}
    data.update(extra)
    write_text_atomic(folder / STATUS_FILE, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def read_status(folder: Path, problems: list[str] | None = None) -> dict:
    """Return the run's status, or an empty dict when it has none or it cannot be read.

    A status file that is not a JSON object is moved aside, and a message for
    the user is appended to ``problems``. Fields of the wrong type are dropped.
    """
    data = read_json_object(folder / STATUS_FILE, problems)
    expected = {"state": str, "step": int, "total_steps": int, "message": str, "updated": str}
    for name, kind in expected.items():
        if name in data and (not isinstance(data[name], kind) or isinstance(data[name], bool)):
            log.warning("status of run %s: ignored %s of the wrong type: %r", folder, name, data[name])
            del data[name]
    return data


def read_json_object(path: Path, problems: list[str] | None = None) -> dict:
    """Return the JSON object in ``path``; {} when it is missing, unreadable or not a JSON object.

    A file whose content is not a JSON object is moved aside as
    ``NAME.corrupt-<date>`` (kept, never deleted), and a message saying so is
    appended to ``problems``.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as error:
        log.warning("%s could not be read: %s", path, error)
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the file does not contain a JSON object")
    except ValueError as error:  # invalid JSON, invalid UTF-8 or not an object
        try:
            kept = set_aside(path)
        except OSError as rename_error:
            log.error("%s is unreadable (%s) and could not be moved aside: %s", path, error, rename_error)
            return {}
        log.warning("%s is unreadable (%s); moved to %s", path, error, kept)
        if problems is not None:
            problems.append(f"{path.name} could not be read ({error}). It was moved to {kept}.")
        return {}
    return data


def _whole_number(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class RunRecord:
    """One run folder as the runs list shows it."""

    name: str
    folder: Path
    state: str  # one of RUNNING, STOPPED, FINISHED, STOPPED_EARLY, FAILED, INTERRUPTED, NEW
    step: int  # step of the newest complete checkpoint; 0 when there is none
    total_steps: int  # 0 when the run never started training
    base_model: str
    message: str
    updated: str  # ISO time of the last status change, UTC
    request: RunRequest | None  # None when request.json is missing or unreadable
    request_problem: str | None = None
    problems: tuple[str, ...] = ()  # files of the run that were unreadable and moved aside

    @property
    def resumable(self) -> bool:
        """A run can continue unless it finished, is running, or lacks its request."""
        return self.request is not None and self.state not in (FINISHED, STOPPED_EARLY, RUNNING)


def read_run(folder: Path, active: str | None = None) -> RunRecord | None:
    """Describe the run in ``folder``, or return None when the folder contains no run.

    ``active`` names the run this process is training now; any other run whose
    status still reads "running" is reported as interrupted.
    """
    request_path = folder / REQUEST_FILE
    if not request_path.is_file() and not (folder / "run.json").is_file():
        return None
    request, problem = None, None
    try:
        request = load_request(request_path)
    except SettingsError as error:
        problem = str(error)
    problems: list[str] = []
    status = read_status(folder, problems)
    state = status.get("state", NEW)
    if state not in (NEW, RUNNING, STOPPED, FINISHED, STOPPED_EARLY, FAILED):
        log.warning("run %s has an unknown state %r; listed as interrupted", folder, state)
        state = INTERRUPTED
    if state == RUNNING and folder.name != active:
        state = INTERRUPTED
    checkpoints = complete_checkpoints(folder / "checkpoints", problems)
    step = checkpoints[-1][0] if checkpoints else 0
    run_file = read_json_object(folder / "run.json", problems)
    base_model = run_file.get("base_model")
    if not isinstance(base_model, str) or not base_model:
        base_model = request.model if request else ""
    return RunRecord(
        name=folder.name,
        folder=folder,
        state=state,
        step=step,
        total_steps=_whole_number(run_file.get("total_steps")) or status.get("total_steps", 0),
        base_model=base_model,
        message=status.get("message", ""),
        updated=status.get("updated", ""),
        request=request,
        request_problem=problem,
        problems=tuple(problems),
    )


def list_runs(runs_dir: Path | None = None, active: str | None = None) -> list[RunRecord]:
    """Return the runs under ``runs_dir`` (the user's runs folder by default), newest status first."""
    runs_dir = runs_dir or default_runs_dir()
    if not runs_dir.is_dir():
        return []
    records = []
    for folder in sorted(runs_dir.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            record = read_run(folder, active)
        except OSError as error:
            log.warning("run folder %s could not be read: %s", folder, error)
            continue
        if record is not None:
            records.append(record)
    records.sort(key=lambda record: record.updated, reverse=True)
    return records


def metrics_rows(folder: Path) -> list[dict]:
    """Return the rows of the run's metrics.jsonl, skipping lines that are not JSON objects (a line cut short by a crash)."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    skipped = 0
    # errors="replace": a line with invalid UTF-8 fails to parse below and is skipped.
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                rows.append(row)
            else:
                skipped += 1
    if skipped:
        log.warning("%s: skipped %d lines that are not JSON objects", path, skipped)
    return rows


# Settings of a resumed run ----------------------------------------------------


class RunFileError(DocumentError):
    """A run's run.json is damaged or missing, and no checkpoint has the settings to resume with.

    A DocumentError, so the command line exits with the data-error code (3),
    as it does for unusable pairs.
    """


@dataclass(frozen=True)
class SavedSettings:
    """The training settings a run was saved with, and where they came from."""

    settings: TrainingSettings
    notice: str | None = None  # message for the user when the settings come from a checkpoint, not run.json


def _parse_settings(data: object) -> tuple[TrainingSettings | None, str | None]:
    """Return the TrainingSettings in ``data`` (to_json output), or None and why they cannot be used."""
    if not isinstance(data, dict):
        return None, "the settings are not a JSON object"
    try:
        settings = TrainingSettings.from_json(data)
    except (SettingsError, TypeError) as error:
        return None, str(error)
    wrong = [*wrong_type_fields(settings), *wrong_type_fields(settings.eval_generation, "eval_generation.")]
    if wrong:
        return None, f"these settings have values of the wrong type: {', '.join(wrong)}"
    return settings, None


def _run_file_settings(path: Path) -> tuple[TrainingSettings | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "it is missing"
    except OSError as error:
        return None, f"it could not be read: {error.strerror or error}"
    except ValueError as error:  # invalid JSON or invalid UTF-8
        return None, f"it is not valid JSON: {error}"
    if not isinstance(data, dict):
        return None, "it does not contain a JSON object"
    if "settings" not in data:
        return None, "it has no 'settings' object"
    return _parse_settings(data["settings"])


def saved_training_settings(folder: Path, checkpoint: Path, set_aside_damaged: bool = True) -> SavedSettings:
    """Return the settings to resume the run in ``folder`` with: from run.json, else from ``checkpoint``.

    ``checkpoint`` is the complete checkpoint the run resumes from. Every
    checkpoint stores the full settings it was saved with, so a damaged
    run.json is moved aside (kept as ``run.json.corrupt-<date>``) and the
    checkpoint's settings are used, with a notice for the user. The trainer
    writes a new run.json when it starts. With ``set_aside_damaged`` False
    (ranks other than the first of a distributed run), nothing is moved.

    Raises RunFileError when neither run.json nor the checkpoint has usable
    settings.
    """
    path = folder / RUN_FILE
    settings, problem = _run_file_settings(path)
    if settings is not None:
        return SavedSettings(settings)

    kept = None
    if set_aside_damaged and path.exists():
        try:
            kept = set_aside(path)
        except OSError as error:
            log.error("%s is unusable (%s) and could not be moved aside: %s", path, problem, error)
    where = f" It was moved to {kept}." if kept is not None else ""
    try:
        _state, checkpoint_data = read_state(checkpoint)
    except (OSError, ValueError) as error:
        checkpoint_settings, checkpoint_problem = None, str(error)
    else:
        checkpoint_settings, checkpoint_problem = _parse_settings(checkpoint_data)

    if checkpoint_settings is None:
        log.error("%s is unusable (%s), and so are the settings of checkpoint %s (%s)", path, problem, checkpoint, checkpoint_problem)
        restore = f"repair {kept}, rename it to {RUN_FILE}" if kept is not None else f"restore {path} from a backup"
        raise RunFileError(
            path,
            f"the run in {folder} cannot be resumed. {RUN_FILE} cannot be used because {problem}, and the "
            f"settings saved in checkpoint {checkpoint.name} cannot be used either ({checkpoint_problem}).{where} "
            f"To go on, either {restore} and resume again, or start a new run in an empty folder with the same "
            "options.",
        )
    log.warning("%s is unusable (%s); resuming with the settings of checkpoint %s", path, problem, checkpoint)
    return SavedSettings(
        checkpoint_settings,
        f"{path} cannot be used because {problem}.{where} The run resumes with the settings saved in "
        f"checkpoint {checkpoint.name}, and a new {RUN_FILE} is written when training starts.",
    )


# Pairs of a run ---------------------------------------------------------------


@dataclass
class RunPairs:
    """The pairs a request names: training and validation pairs, and those that could not be read."""

    train: list[Pair]
    validation: list[Pair]
    rejected: list[RejectedPair]


def load_run_pairs(
    request: RunRequest,
    progress: ProgressFn = ignore_progress,
    cancel: CancellationToken | None = None,
    limits: DocumentLimits | None = None,
) -> RunPairs:
    """Load the request's pairs and its validation pairs (a separate file or a seeded split), as ``synopsis train`` does.

    The split uses the training seed, so the same request always holds out
    the same pairs, which a resumed run relies on.
    """
    fields = {"document_field": request.document_field, "summary_field": request.summary_field, "limits": limits}
    loaded = load_pairs(request.pairs, progress=progress, cancel=cancel, **fields)
    rejected = list(loaded.rejected)
    if request.validation_file is not None:
        validation = load_pairs(request.validation_file, progress=progress, cancel=cancel, **fields)
        return RunPairs(loaded.pairs, validation.pairs, rejected + validation.rejected)
    if request.validation_fraction is not None and len(loaded.pairs) >= 2:
        train, held_out = split_pairs(loaded.pairs, request.validation_fraction, request.settings.seed)
        return RunPairs(train, held_out, rejected)
    return RunPairs(loaded.pairs, [], rejected)

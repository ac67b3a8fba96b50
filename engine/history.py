"""Finished summaries kept on disk, so a document is never summarized twice by accident.

Each entry is one JSON file under ``user_data_dir("Synopsis")/history``,
written atomically. An entry is found again by the SHA-256 of the document's
bytes together with the model and the generation settings, so a renamed or
moved copy of the same file still matches, and a changed file does not.

The store keeps no state in memory besides its folder, so a GUI thread may
list entries while a worker thread saves one: readers see a whole file or no
file, because every write is an atomic rename.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import platformdirs

from .errors import DocumentError
from .files import set_aside, write_text_atomic
from .generation import GenerationSettings
from .progress import CancellationToken
from .summarize import SentenceSource, Summary
from .windows import Window

log = logging.getLogger(__name__)

APP_NAME = "Synopsis"
ENTRY_FORMAT = 1  # version of the JSON layout of one entry
HASH_CHUNK_BYTES = 1 << 20


def default_history_folder() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "history"


def file_sha256(path: str | Path, cancel: CancellationToken | None = None) -> str:
    """Return the hex SHA-256 of the file's bytes; ``cancel`` is checked between 1 MiB chunks."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(HASH_CHUNK_BYTES):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                digest.update(chunk)
    except FileNotFoundError as error:
        raise DocumentError(path, "file not found; check the path.") from error
    except IsADirectoryError as error:
        raise DocumentError(path, "this is a folder, not a file; choose a document inside it.") from error
    except PermissionError as error:
        raise DocumentError(path, "permission denied while opening the file; check its permissions.") from error
    return digest.hexdigest()


# Settings that change speed but never the summary, so history ignores them when matching.
SPEED_ONLY_SETTINGS = ("threads",)


def settings_to_json(settings: GenerationSettings) -> dict:
    return dataclasses.asdict(settings)


def _output_settings(settings: dict) -> dict:
    return {name: value for name, value in settings.items() if name not in SPEED_ONLY_SETTINGS}


@dataclass
class HistoryEntry:
    """One finished summary with everything needed to show it again without the model."""

    id: str
    source: str  # path of the document when it was summarized
    content_hash: str  # hex SHA-256 of the document's bytes
    model: str  # the model as the user chose it: a hub id or a folder
    settings: dict  # GenerationSettings as a dict
    summary: str
    windows: list[dict]  # Window fields: index, token_start, token_end, char_start, char_end, pages
    sentences: list[dict]  # SentenceSource.to_json() of each summary sentence
    created: str  # ISO 8601 date and time, UTC
    total_tokens: int
    pages: int | None
    words: int | None = None
    seconds: float = 0.0
    token_ids: list[int] = field(default_factory=list)
    format: int = ENTRY_FORMAT

    @property
    def file_name(self) -> str:
        return Path(self.source).name

    @property
    def created_local(self) -> datetime:
        return datetime.fromisoformat(self.created).astimezone()

    def matches(self, content_hash: str, model: str, settings: GenerationSettings) -> bool:
        return (
            self.content_hash == content_hash
            and self.model == model
            and _output_settings(self.settings) == _output_settings(settings_to_json(settings))
        )

    def to_summary(self) -> Summary:
        """Rebuild the engine's Summary from this entry, without recomputing anything."""
        windows = [
            Window(
                index=item["index"],
                token_start=item["token_start"],
                token_end=item["token_end"],
                char_start=item["char_start"],
                char_end=item["char_end"],
                pages=tuple(item["pages"]) if item.get("pages") else None,
            )
            for item in self.windows
        ]
        sentences = [
            SentenceSource(
                text=item["text"],
                pages=tuple(item["pages"]) if item.get("pages") else None,
                windows=tuple(item.get("windows") or ()),
            )
            for item in self.sentences
        ]
        return Summary(
            file=Path(self.source),
            text=self.summary,
            token_ids=list(self.token_ids),
            windows=windows,
            total_tokens=self.total_tokens,
            pages=self.pages,
            seconds=self.seconds,
            model=self.model,
            sentences=sentences,
        )

    @classmethod
    def from_json(cls, data: dict) -> HistoryEntry:
        known = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def entry_from_summary(
    summary: Summary,
    content_hash: str,
    model: str,
    settings: GenerationSettings,
    words: int | None = None,
) -> HistoryEntry:
    """Build a new history entry, dated now, for a summary just computed."""
    windows = [
        {
            "index": window.index,
            "token_start": window.token_start,
            "token_end": window.token_end,
            "char_start": window.char_start,
            "char_end": window.char_end,
            "pages": list(window.pages) if window.pages else None,
        }
        for window in summary.windows
    ]
    return HistoryEntry(
        id=uuid.uuid4().hex,
        source=str(summary.file),
        content_hash=content_hash,
        model=model,
        settings=settings_to_json(settings),
        summary=summary.text,
        windows=windows,
        sentences=[sentence.to_json() for sentence in summary.sentences],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        total_tokens=summary.total_tokens,
        pages=summary.pages,
        words=words,
        seconds=round(summary.seconds, 3),
        token_ids=list(summary.token_ids),
    )


# Field types of an entry file; a tuple lists the types allowed.
_ENTRY_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "source": str,
    "content_hash": str,
    "model": str,
    "settings": dict,
    "summary": str,
    "windows": list,
    "sentences": list,
    "created": str,
    "total_tokens": int,
    "pages": (int, type(None)),
    "words": (int, type(None)),
    "seconds": (int, float),
    "token_ids": list,
    "format": int,
}
_WINDOW_KEYS = ("index", "token_start", "token_end", "char_start", "char_end")


def entry_problem(data: object) -> str | None:
    """Return what makes ``data`` unusable as a history entry, or None when it is a valid entry."""
    if not isinstance(data, dict):
        return "the file does not contain a JSON object"
    required = {
        item.name
        for item in dataclasses.fields(HistoryEntry)
        if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if missing:
        return f"missing fields: {', '.join(missing)}"
    for name, expected in _ENTRY_TYPES.items():
        value = data.get(name)
        if name in data and (not isinstance(value, expected) or isinstance(value, bool)):
            return f"field '{name}' has the wrong type ({type(value).__name__})"
    for window in data["windows"]:
        if not isinstance(window, dict) or not all(isinstance(window.get(key), int) for key in _WINDOW_KEYS):
            return "a window is not an object with integer offsets"
        if not isinstance(window.get("pages"), (list, type(None))):
            return "a window's pages are not a list"
    for sentence in data["sentences"]:
        if not isinstance(sentence, dict) or not isinstance(sentence.get("text"), str):
            return "a sentence is not an object with a text"
        if not all(isinstance(sentence.get(key), (list, type(None))) for key in ("pages", "windows")):
            return "a sentence's pages or windows are not a list"
    if not all(isinstance(token, int) for token in data.get("token_ids", [])):
        return "token_ids contains a value that is not an integer"
    try:
        datetime.fromisoformat(data["created"])
    except ValueError:
        return f"'created' is not an ISO 8601 date: {data['created']!r}"
    return None


class HistoryStore:
    """A folder of history entries, one ``<id>.json`` file each.

    An entry file that cannot be used (invalid JSON, missing fields, wrong
    types) is renamed to ``<id>.json.corrupt-<date>`` and skipped, and a
    message for the user is kept until :meth:`take_problems` returns it.
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_history_folder()
        self._problems: list[str] = []
        self._problems_lock = threading.Lock()

    def take_problems(self) -> list[str]:
        """Return the messages about entry files set aside since the last call, and forget them."""
        with self._problems_lock:
            problems, self._problems = self._problems, []
        return problems

    def path_for(self, entry_id: str) -> Path:
        return self.folder / f"{entry_id}.json"

    def save(self, entry: HistoryEntry) -> Path:
        """Write ``entry`` atomically and return its file."""
        path = self.path_for(entry.id)
        write_text_atomic(path, json.dumps(dataclasses.asdict(entry), ensure_ascii=False, indent=1))
        log.info("saved history entry %s for %s", entry.id, entry.source)
        return path

    def load(self, entry_id: str) -> HistoryEntry | None:
        """Return the entry with ``entry_id``, or None when it is missing or unreadable."""
        return self._read(self.path_for(entry_id))

    def entries(self) -> list[HistoryEntry]:
        """Return every readable entry, newest first; unreadable files are logged and skipped."""
        if not self.folder.is_dir():
            return []
        found = [self._read(path) for path in self.folder.glob("*.json")]
        entries = [entry for entry in found if entry is not None]
        entries.sort(key=lambda entry: entry.created, reverse=True)
        return entries

    def find(self, content_hash: str, model: str, settings: GenerationSettings) -> HistoryEntry | None:
        """Return the newest entry for the same document bytes, model and settings, if any."""
        for entry in self.entries():
            if entry.matches(content_hash, model, settings):
                return entry
        return None

    def delete(self, entry_id: str) -> None:
        self.path_for(entry_id).unlink(missing_ok=True)
        log.info("deleted history entry %s", entry_id)

    def _read(self, path: Path) -> HistoryEntry | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("skipped unreadable history entry %s: %s", path, error)
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError as error:  # invalid JSON or invalid UTF-8
            self._set_aside(path, f"it is not valid JSON ({error})")
            return None
        problem = entry_problem(data)
        if problem is not None:
            self._set_aside(path, problem)
            return None
        return HistoryEntry.from_json(data)

    def _set_aside(self, path: Path, problem: str) -> None:
        try:
            kept = set_aside(path)
        except FileNotFoundError:
            return  # another thread set it aside first
        except OSError as error:
            log.error("history entry %s is unusable (%s) and could not be moved aside: %s", path, problem, error)
            return
        log.warning("history entry %s is unusable (%s); moved to %s", path, problem, kept)
        with self._problems_lock:
            self._problems.append(f"A history entry could not be read because {problem}. It was moved to {kept}.")

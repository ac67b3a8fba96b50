"""Document/summary pairs for fine-tuning and evaluation: loading and splitting.

Pairs come from one of three sources:

- a folder, either with each summary beside its document (``report.pdf`` and
  ``report.summary.txt``) or with ``documents/`` and ``summaries/`` subfolders
  whose files match by stem (``documents/report.pdf`` and
  ``summaries/report.txt``);
- a CSV (or TSV) file with a header row;
- a JSONL file with one JSON object per line, or a ``.json`` file holding a
  list of such objects.

In CSV and JSON the document field contains either the document's text or the
path of a PDF, DOCX, TXT or MD file, relative to the data file's folder. A
pair that cannot be used is rejected with its location and the reason, and
loading goes on, so the caller can list every problem at once and then
choose to stop or to skip the rejected pairs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .documents import SUPPORTED_SUFFIXES, DocumentLimits, load_document
from .errors import DocumentError, SettingsError
from .progress import CancellationToken, ProgressFn, ignore_progress

log = logging.getLogger(__name__)

DEFAULT_DOCUMENT_FIELD = "document"
DEFAULT_SUMMARY_FIELD = "summary"

SUMMARY_SUFFIXES = (".txt", ".md")
SUMMARY_INFIX = ".summary"  # report.pdf -> report.summary.txt
DOCUMENTS_FOLDER = "documents"
SUMMARIES_FOLDER = "summaries"

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
CSV_DELIMITERS = {".csv": (",", ";", "\t"), ".tsv": ("\t", ",", ";")}

# A document field whose value is one short line ending in one of these
# suffixes is read as a path. The unsupported ones are included so that the
# user gets the reader's advice ("save it as .docx") rather than a pair whose
# "document" is a file name.
_PATH_SUFFIXES = frozenset(SUPPORTED_SUFFIXES) | {".doc", ".rtf", ".odt", ".pages", ".html", ".htm", ".epub"}
_MAX_PATH_CHARACTERS = 1024
_CSV_FIELD_LIMIT = 2**31 - 1  # csv's default of 131,072 characters is shorter than many documents


@dataclass(frozen=True)
class Pair:
    """One training or evaluation example: a whole document's text and its reference summary."""

    source: str  # where the pair came from, for messages: "meetings.jsonl line 3", "report.pdf"
    document: str
    summary: str


@dataclass(frozen=True)
class RejectedPair:
    """A pair that could not be used, with where it is and why."""

    source: str  # "pairs.jsonl line 7", "documents/report.pdf"
    reason: str  # "summary field 'summary' missing"

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class PairsError(DocumentError):
    """The pairs file or folder cannot be used at all: not found, unknown format or a missing column."""


@dataclass
class LoadedPairs:
    """The result of loading pairs: the good ones in file order and the rejected ones."""

    origin: Path
    pairs: list[Pair] = field(default_factory=list)
    rejected: list[RejectedPair] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)


# Loading --------------------------------------------------------------------


def load_pairs(
    path: str | Path,
    document_field: str = DEFAULT_DOCUMENT_FIELD,
    summary_field: str = DEFAULT_SUMMARY_FIELD,
    password: str | None = None,
    limits: DocumentLimits | None = None,
    progress: ProgressFn = ignore_progress,
    cancel: CancellationToken | None = None,
) -> LoadedPairs:
    """Load document/summary pairs from a folder, a CSV/TSV file or a JSONL/JSON file.

    ``document_field`` and ``summary_field`` name the columns or keys in CSV
    and JSON. ``password`` opens encrypted PDFs that a pair refers to.
    Progress is reported in pairs read, and ``cancel`` is checked between
    pairs. Raises :class:`PairsError` when ``path`` cannot be used at all;
    problems with single pairs go to ``LoadedPairs.rejected``.
    """
    path = Path(path).expanduser()
    reader = _PairReader(path, document_field, summary_field, password, limits or DocumentLimits(), cancel)
    if path.is_dir():
        records = _folder_records(path)
    elif not path.exists():
        raise PairsError(path, "file or folder not found; check the path.")
    elif path.suffix.lower() in JSON_LINES_SUFFIXES:
        records = _json_lines_records(path)
    elif path.suffix.lower() == ".json":
        records = _json_array_records(path)
    elif path.suffix.lower() in CSV_DELIMITERS:
        records = _csv_records(path, document_field, summary_field)
    else:
        raise PairsError(
            path,
            "unknown pairs format; use a folder of documents with summaries beside them, "
            "a .csv or .tsv file with a header row, or a .jsonl file.",
        )

    result = LoadedPairs(origin=path)
    records = list(records)
    progress(0, len(records), "pairs")
    for done, record in enumerate(records, start=1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        outcome = reader.read(record)
        if isinstance(outcome, Pair):
            result.pairs.append(outcome)
        else:
            result.rejected.append(outcome)
        progress(done, len(records), "pairs")

    log.info("loaded %d pairs from %s, rejected %d", len(result.pairs), path, len(result.rejected))
    for rejected in result.rejected:
        log.info("rejected pair %s", rejected)
    return result


@dataclass
class _Record:
    """One candidate pair before its files are read."""

    source: str
    fields: dict | None = None  # CSV row or JSON object
    document_path: Path | None = None  # folder layouts
    summary_path: Path | None = None
    problem: str | None = None  # set when the record is rejected before reading


class _PairReader:
    """Turns records into pairs, reading the files they point to."""

    def __init__(
        self,
        origin: Path,
        document_field: str,
        summary_field: str,
        password: str | None,
        limits: DocumentLimits,
        cancel: CancellationToken | None,
    ) -> None:
        self.base = origin if origin.is_dir() else origin.parent
        self.document_field = document_field
        self.summary_field = summary_field
        self.password = password
        self.limits = limits
        self.cancel = cancel

    def read(self, record: _Record) -> Pair | RejectedPair:
        if record.problem is not None:
            return RejectedPair(record.source, record.problem)
        try:
            if record.fields is not None:
                return self._from_fields(record)
            return self._from_files(record)
        except DocumentError as error:
            return RejectedPair(record.source, str(error))

    def _read_file(self, path: Path) -> str:
        document = load_document(path, password=self.password, limits=self.limits, cancel=self.cancel)
        return document.text

    def _from_files(self, record: _Record) -> Pair | RejectedPair:
        document = self._read_file(record.document_path)
        summary = self._read_file(record.summary_path).strip()
        if not summary:
            return RejectedPair(record.source, f"summary file {record.summary_path.name} is empty")
        return Pair(record.source, document, summary)

    def _from_fields(self, record: _Record) -> Pair | RejectedPair:
        fields = record.fields
        for role, name in (("document", self.document_field), ("summary", self.summary_field)):
            value = fields.get(name)
            if value is None:
                return RejectedPair(record.source, f"{role} field '{name}' missing")
            if not isinstance(value, str):
                return RejectedPair(
                    record.source, f"{role} field '{name}' is {_json_type(value)}, expected text"
                )
            if not value.strip():
                return RejectedPair(record.source, f"{role} field '{name}' is empty")

        summary = fields[self.summary_field].strip()
        value = fields[self.document_field]
        path = _as_document_path(value)
        if path is None:
            return Pair(record.source, value, summary)

        full_path = path if path.is_absolute() else self.base / path
        document = self._read_file(full_path)
        return Pair(f"{record.source} ({path})", document, summary)


def _as_document_path(value: str) -> Path | None:
    """Return ``value`` as a path when it looks like a file name rather than a document's text."""
    candidate = value.strip()
    if "\n" in candidate or len(candidate) > _MAX_PATH_CHARACTERS:
        return None
    path = Path(candidate).expanduser()
    if path.suffix.lower() not in _PATH_SUFFIXES:
        return None
    return path


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# JSON -------------------------------------------------------------------------


def _json_lines_records(path: Path) -> Iterator[_Record]:
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        source = f"{path.name} line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield _Record(source, problem=f"invalid JSON ({error.msg.removesuffix(' at')} at column {error.colno})")
            continue
        if not isinstance(value, dict):
            yield _Record(source, problem=f"the line is {_json_type(value)}, expected a JSON object")
            continue
        yield _Record(source, fields=value)


def _json_array_records(path: Path) -> Iterator[_Record]:
    text = _read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise PairsError(
            path, f"invalid JSON ({error.msg} at line {error.lineno}, column {error.colno})."
        ) from error
    if not isinstance(value, list):
        raise PairsError(
            path, f"the file holds {_json_type(value)}; a .json pairs file must hold a list of objects, "
            "or use JSONL (.jsonl) with one object per line."
        )
    for number, item in enumerate(value, start=1):
        source = f"{path.name} item {number}"
        if not isinstance(item, dict):
            yield _Record(source, problem=f"the item is {_json_type(item)}, expected a JSON object")
        else:
            yield _Record(source, fields=item)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise PairsError(
            path, f"the file is not valid UTF-8 (byte {error.start}); save it as UTF-8 and try again."
        ) from error
    except OSError as error:
        raise PairsError(path, f"the file could not be read ({error.strerror}).") from error


def _read_lines(path: Path) -> list[str]:
    # Split on \n only: str.splitlines() would also split on characters such
    # as U+2028 that JSON allows unescaped inside strings.
    return _read_text(path).split("\n")


# CSV --------------------------------------------------------------------------


def _csv_records(path: Path, document_field: str, summary_field: str) -> Iterator[_Record]:
    text = _read_text(path)
    delimiter = _choose_delimiter(text, CSV_DELIMITERS[path.suffix.lower()], (document_field, summary_field))
    previous_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        rows = list(_csv_rows(path, text, delimiter, document_field, summary_field))
    finally:
        csv.field_size_limit(previous_limit)
    yield from rows


def _csv_rows(
    path: Path, text: str, delimiter: str, document_field: str, summary_field: str
) -> Iterator[_Record]:
    reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter)
    columns = reader.fieldnames or []
    missing = [name for name in (document_field, summary_field) if name not in columns]
    if missing:
        listed = ", ".join(f"'{name}'" for name in columns) or "none"
        raise PairsError(
            path,
            f"no column named {' or '.join(repr(name) for name in missing)} in the header row "
            f"(columns: {listed}); name the columns with --document-field and --summary-field.",
        )

    start_line = reader.line_num + 1
    try:
        for row in reader:
            source = f"{path.name} line {start_line}"
            start_line = reader.line_num + 1
            if None in row:
                yield _Record(source, problem=f"the row has more fields than the header's {len(columns)}")
                continue
            yield _Record(source, fields=row)
    except csv.Error as error:
        raise PairsError(path, f"invalid CSV near line {reader.line_num}: {error}.") from error


def _choose_delimiter(text: str, candidates: tuple[str, ...], required: tuple[str, ...]) -> str:
    """Return the first delimiter under which the header row contains every ``required`` column."""
    header = text.split("\n", 1)[0]
    for delimiter in candidates:
        columns = next(csv.reader([header], delimiter=delimiter), [])
        if all(name in columns for name in required):
            return delimiter
    return candidates[0]


# Folders ----------------------------------------------------------------------


def _folder_records(folder: Path) -> list[_Record]:
    documents = folder / DOCUMENTS_FOLDER
    summaries = folder / SUMMARIES_FOLDER
    if documents.is_dir() and summaries.is_dir():
        return _matched_records(folder, _visible_files(documents), _visible_files(summaries))
    files = _visible_files(folder)
    summary_files = [path for path in files if _is_summary_file(path)]
    document_files = [path for path in files if not _is_summary_file(path)]
    return _matched_records(folder, document_files, summary_files)


def _visible_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))


def _is_summary_file(path: Path) -> bool:
    return path.suffix.lower() in SUMMARY_SUFFIXES and path.stem.lower().endswith(SUMMARY_INFIX)


def _summary_key(path: Path) -> str:
    """Return the document stem a summary file belongs to: ``report`` for ``report.summary.txt`` and ``report.txt``."""
    stem = path.stem
    if stem.lower().endswith(SUMMARY_INFIX):
        stem = stem[: -len(SUMMARY_INFIX)]
    return stem


def _matched_records(folder: Path, document_files: list[Path], summary_files: list[Path]) -> list[_Record]:
    """Match documents to summaries by stem; anything unmatched or ambiguous becomes a rejected record."""
    documents_by_stem: dict[str, list[Path]] = {}
    for path in document_files:
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            log.info("pairs folder %s: ignoring %s (not a document type Synopsis reads)", folder, path.name)
            continue
        documents_by_stem.setdefault(path.stem, []).append(path)
    summaries_by_stem: dict[str, list[Path]] = {}
    for path in summary_files:
        if path.suffix.lower() in SUMMARY_SUFFIXES:
            summaries_by_stem.setdefault(_summary_key(path), []).append(path)

    records: list[_Record] = []
    for stem in sorted(set(documents_by_stem) | set(summaries_by_stem)):
        docs = documents_by_stem.get(stem, [])
        sums = summaries_by_stem.get(stem, [])
        label = _relative(folder, docs[0] if docs else sums[0])
        if not sums:
            expected = f"{stem}{SUMMARY_INFIX}.txt"
            if docs[0].parent.name == DOCUMENTS_FOLDER:
                expected = f"{SUMMARIES_FOLDER}/{stem}.txt"
            records.append(_Record(label, problem=f"no summary file; expected {expected}"))
        elif not docs:
            records.append(
                _Record(label, problem=f"no document named {stem} with a {'/'.join(SUPPORTED_SUFFIXES)} suffix to match it")
            )
        elif len(docs) > 1 or len(sums) > 1:
            names = ", ".join(_relative(folder, path) for path in docs + sums)
            records.append(_Record(label, problem=f"several files share the name {stem} ({names}); keep one of each"))
        else:
            records.append(_Record(label, document_path=docs[0], summary_path=sums[0]))
    return records


def _relative(folder: Path, path: Path) -> str:
    return path.relative_to(folder).as_posix()


# Splitting --------------------------------------------------------------------


def split_pairs(pairs: list[Pair], validation_fraction: float, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """Split ``pairs`` into training and validation pairs; the same seed gives the same split.

    The validation share is ``round(len(pairs) * validation_fraction)``, at
    least one pair, and at least one pair stays for training. Both lists keep
    the input order.
    """
    if not 0 < validation_fraction < 1:
        raise SettingsError(
            f"The validation fraction must be between 0 and 1 (exclusive), got {validation_fraction}."
        )
    if len(pairs) < 2:
        raise SettingsError(
            f"Splitting off a validation set needs at least 2 pairs, got {len(pairs)}: "
            "add pairs or pass a separate validation file."
        )
    count = min(max(round(len(pairs) * validation_fraction), 1), len(pairs) - 1)
    indices = list(range(len(pairs)))
    random.Random(seed).shuffle(indices)
    chosen = set(indices[:count])
    training = [pair for index, pair in enumerate(pairs) if index not in chosen]
    validation = [pair for index, pair in enumerate(pairs) if index in chosen]
    return training, validation


_WHITESPACE = re.compile(r"\s+")


def document_fingerprint(pair: Pair) -> str:
    """Return a whitespace-insensitive hash of the pair's document, to spot the same document twice."""
    normalized = _WHITESPACE.sub(" ", pair.document).strip()
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()

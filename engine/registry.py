"""The models Synopsis can use: hub downloads, folders the user added, and fine-tuned models.

Hub models are found by scanning Hugging Face caches, so a model downloaded by
any tool appears once it is complete, contains safetensors weights and is an
encoder-decoder. The list file ``user_data_dir("Synopsis")/models.json``
stores what a scan cannot find: the folders the user added, the fine-tuned
models the trainer registered, and the hub downloads started here. Those
records let a cancelled download show as partial, and let a download into
another cache folder be scanned too. The file is written atomically, and one that cannot be read is
renamed aside and reported through :attr:`ModelRegistry.load_warning`.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import platformdirs
from huggingface_hub import scan_cache_dir
from huggingface_hub.utils import CachedRepoInfo, CachedRevisionInfo, CacheNotFound, WeakFileLock

from . import hub
from .errors import Cancelled, ModelError, ModelNotFoundError, NotEncoderDecoderError, UnsafeWeightsError
from .files import set_aside, write_text_atomic
from .progress import CancellationToken, ProgressFn, ignore_progress

log = logging.getLogger(__name__)

APP_NAME = "Synopsis"
LIST_VERSION = 1


class ModelKind(str, Enum):
    HUB = "hub"
    LOCAL = "local"
    FINE_TUNED = "fine-tuned"


class ModelStatus(str, Enum):
    READY = "ready"
    PARTIAL = "partial"  # a hub download that was cancelled or interrupted
    MISSING = "missing"  # an added or fine-tuned folder that is gone or no longer a model


@dataclass(frozen=True)
class ModelEntry:
    """One model as the model manager lists it."""

    kind: ModelKind
    name: str
    source: str  # what load_model takes: a hub id (default cache) or a folder path
    path: Path | None  # the folder on disk (hub: the snapshot), None before a download wrote one
    size_bytes: int
    status: ModelStatus
    repo_id: str | None = None
    revision: str = "main"  # the branch or tag a hub download requested
    commit: str | None = None  # the hub snapshot's commit hash
    cache_dir: Path | None = None
    base_model: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity that stays the same between listings (kind plus repo id or folder)."""
        if self.kind is ModelKind.HUB:
            return f"hub:{self.cache_dir}:{self.repo_id}"
        return f"{self.kind.value}:{self.path}"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def register_finetuned(
    folder: str | Path,
    name: str,
    base_model: str,
    metrics: dict[str, Any] | None = None,
    data_dir: str | Path | None = None,
) -> ModelEntry:
    """Add a fine-tuned model folder to the registry in ``data_dir`` (the user's data folder by default)."""
    return ModelRegistry(data_dir).register_finetuned(folder, name, base_model, metrics)


class ModelRegistry:
    """Lists, adds, downloads and removes models. Its methods are safe to call from several threads."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        hub_cache_dir: str | Path | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.list_file = self.data_dir / "models.json"
        self.fine_tuned_dir = self.data_dir / "models"
        self.hub_cache_dir = Path(hub_cache_dir) if hub_cache_dir else hub.default_cache_dir()
        self.endpoint = endpoint  # None: HF_ENDPOINT, else huggingface.co
        self.load_warning: str | None = None  # set when an unreadable list file was set aside
        self._lock = threading.RLock()
        self._config_checks: dict[tuple[Path, float], bool] = {}

    # The list file ----------------------------------------------------------

    @contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        """Yield the list for changing, then write it back atomically.

        A thread lock and a file lock cover the read and the write together,
        so a trainer in another process cannot lose an entry added here.
        """
        with self._lock:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with WeakFileLock(self.list_file.with_name(self.list_file.name + ".lock")):
                data = self._read()
                yield data
                write_text_atomic(self.list_file, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def _read(self) -> dict[str, Any]:
        empty: dict[str, Any] = {"version": LIST_VERSION, "local": [], "fine_tuned": [], "downloads": []}
        try:
            text = self.list_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return empty
        except UnicodeDecodeError as error:
            self._set_aside(ValueError(f"it is not UTF-8 text: {error}"))
            return empty
        except OSError as error:
            raise ModelError(f"The model list {self.list_file} could not be read: {error}.") from error
        try:
            data = json.loads(text)
            _check_list_shape(data)
        except ValueError as error:
            self._set_aside(error)
            return empty
        for key in ("local", "fine_tuned", "downloads"):
            data.setdefault(key, [])
        return data

    def _set_aside(self, error: Exception) -> None:
        try:
            aside = set_aside(self.list_file)
        except OSError as rename_error:
            log.error("could not move the unreadable %s aside: %s", self.list_file, rename_error)
            aside = self.list_file
        self.load_warning = (
            f"The model list {self.list_file} could not be read ({error}), so it was moved to {aside} "
            "and a new list started. Downloaded and fine-tuned models are still found; add your own "
            "folders again."
        )
        log.warning("unreadable model list %s moved to %s: %s", self.list_file, aside, error)

    # Listing ----------------------------------------------------------------

    def entries(self) -> list[ModelEntry]:
        """Return every model: hub models, then added folders, then fine-tuned models."""
        with self._lock:
            data = self._read()
        return [*self._hub_entries(data), *self._local_entries(data), *self._fine_tuned_entries(data)]

    def find(self, key: str) -> ModelEntry | None:
        """Return the entry with this :attr:`ModelEntry.key`, if it is still listed."""
        return next((entry for entry in self.entries() if entry.key == key), None)

    def _hub_entries(self, data: dict[str, Any]) -> list[ModelEntry]:
        downloads = {(self._record_cache(record), record["repo_id"]): record for record in data["downloads"]}
        caches = [_resolve(self.hub_cache_dir)] + [cache for cache, _ in downloads]
        entries = []
        seen = set()
        for cache in dict.fromkeys(caches):
            for repo in self._scan(cache):
                if repo.repo_type != "model":
                    continue
                record = downloads.get((cache, repo.repo_id))
                entry = self._hub_entry(cache, repo, record)
                if entry is not None:
                    entries.append(entry)
                    seen.add((cache, repo.repo_id))
        for (cache, repo_id), record in downloads.items():
            if (cache, repo_id) not in seen and not record.get("complete"):
                entries.append(self._partial_entry(cache, repo_id, record, revision=None))
        return sorted(entries, key=lambda entry: entry.name.lower())

    def _scan(self, cache: Path) -> list[CachedRepoInfo]:
        try:
            info = scan_cache_dir(cache)
        except (CacheNotFound, ValueError, OSError) as error:
            log.debug("hub cache %s not scanned: %s", cache, error)
            return []
        for warning in info.warnings:
            log.debug("hub cache %s: %s", cache, warning)
        return list(info.repos)

    def _hub_entry(self, cache: Path, repo: CachedRepoInfo, record: dict | None) -> ModelEntry | None:
        requested = record.get("revision", "main") if record else "main"
        revision = repo.refs.get(requested) or repo.refs.get("main")
        if revision is None and repo.revisions:
            revision = max(repo.revisions, key=lambda candidate: candidate.last_modified)
        if record is not None and not record.get("complete"):
            return self._partial_entry(cache, repo.repo_id, record, revision)
        if revision is None or not self._is_usable_snapshot(revision.snapshot_path):
            return None

        default_cache = cache == _resolve(hub.default_cache_dir())
        refs = revision.refs
        # load_model(repo_id) reads refs/main of the default cache; anything
        # else is passed as the snapshot folder itself.
        source = repo.repo_id if default_cache and "main" in refs else str(revision.snapshot_path)
        name = repo.repo_id if "main" in refs else f"{repo.repo_id} @ {revision.commit_hash[:8]}"
        return ModelEntry(
            kind=ModelKind.HUB,
            name=name,
            source=source,
            path=revision.snapshot_path,
            size_bytes=revision.size_on_disk,
            status=ModelStatus.READY,
            repo_id=repo.repo_id,
            revision=requested,
            commit=revision.commit_hash,
            cache_dir=cache,
        )

    def _partial_entry(
        self, cache: Path, repo_id: str, record: dict, revision: CachedRevisionInfo | None
    ) -> ModelEntry:
        size = (revision.size_on_disk if revision else 0) + hub.partial_download_bytes(repo_id, cache)
        return ModelEntry(
            kind=ModelKind.HUB,
            name=repo_id,
            source=repo_id,
            path=revision.snapshot_path if revision else None,
            size_bytes=size,
            status=ModelStatus.PARTIAL,
            repo_id=repo_id,
            revision=record.get("revision", "main"),
            commit=revision.commit_hash if revision else None,
            cache_dir=cache,
        )

    def _is_usable_snapshot(self, folder: Path) -> bool:
        """Check a folder cheaply: config.json of an encoder-decoder and safetensors weights, no loading."""
        config = folder / "config.json"
        try:
            stamp = (config, config.stat().st_mtime)
        except OSError:
            return False
        if stamp not in self._config_checks:
            self._config_checks[stamp] = hub.is_encoder_decoder_config(config)
        return self._config_checks[stamp] and hub.has_safetensors_weights(folder)

    def _local_entries(self, data: dict[str, Any]) -> list[ModelEntry]:
        entries = []
        for record in data["local"]:
            folder = Path(record["path"])
            entries.append(
                ModelEntry(
                    kind=ModelKind.LOCAL,
                    name=record.get("name") or folder.name,
                    source=str(folder),
                    path=folder,
                    size_bytes=_folder_size(folder),
                    status=self._folder_status(folder),
                )
            )
        return entries

    def _fine_tuned_entries(self, data: dict[str, Any]) -> list[ModelEntry]:
        entries = []
        registered = set()
        for record in data["fine_tuned"]:
            folder = Path(record["path"])
            registered.add(_resolve(folder))
            entries.append(self._fine_tuned_entry(folder, record))
        # A folder the trainer saved but never registered (it crashed in between) is still listed.
        if self.fine_tuned_dir.is_dir():
            for folder in sorted(self.fine_tuned_dir.iterdir()):
                if folder.is_dir() and _resolve(folder) not in registered and (folder / "config.json").is_file():
                    entries.append(self._fine_tuned_entry(folder, {}))
        return entries

    def _fine_tuned_entry(self, folder: Path, record: dict[str, Any]) -> ModelEntry:
        return ModelEntry(
            kind=ModelKind.FINE_TUNED,
            name=record.get("name") or folder.name,
            source=str(folder),
            path=folder,
            size_bytes=_folder_size(folder),
            status=self._folder_status(folder),
            base_model=record.get("base_model"),
            metrics=dict(record.get("metrics") or {}),
        )

    def _folder_status(self, folder: Path) -> ModelStatus:
        return ModelStatus.READY if self._is_usable_snapshot(folder) else ModelStatus.MISSING

    # Adding -----------------------------------------------------------------

    def add_folder(
        self, folder: str | Path, name: str | None = None, cancel: CancellationToken | None = None
    ) -> ModelEntry:
        """Validate a model folder by loading it on the CPU, then add it to the list.

        Slow for a large model (it reads all weights), so the GUI calls it off
        its thread. Raises the errors of ``load_model``: ModelNotFoundError,
        UnsafeWeightsError, NotEncoderDecoderError or ModelError. The folder
        itself is never written.
        """
        from .models import load_model  # imported here: torch and transformers load slowly

        folder = Path(folder).expanduser().resolve()
        loaded = load_model(folder, device="cpu")
        del loaded
        if cancel is not None:
            cancel.raise_if_cancelled()
        return self.record_folder(folder, name)

    def record_folder(self, folder: str | Path, name: str | None = None) -> ModelEntry:
        """Add a model folder to the list without loading it, for a caller that has checked it already.

        ``models.check_model_folder`` is check enough for the list, which
        looks only for the folder's files. Weights that fail to load raise
        their error when a summary or a training run loads them.
        """
        folder = Path(folder).expanduser().resolve()
        with self._editing() as data:
            data["local"] = [record for record in data["local"] if _resolve(record["path"]) != folder]
            data["local"].append({"path": str(folder), "name": name or folder.name, "added": _now()})
        log.info("added model folder %s", folder)
        return self._entry_for_folder(ModelKind.LOCAL, folder)

    def register_finetuned(
        self, folder: str | Path, name: str, base_model: str, metrics: dict[str, Any] | None = None
    ) -> ModelEntry:
        """Add a fine-tuned model folder, with the base model it started from and its evaluation metrics.

        The folder must hold config.json of an encoder-decoder and safetensors
        weights; it is checked without loading the weights. A folder under
        :attr:`fine_tuned_dir` belongs to Synopsis and is deleted on removal;
        one elsewhere is only forgotten.
        """
        folder = Path(folder).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise ModelNotFoundError(f"{folder} has no config.json, so it is not a saved model folder.")
        if not hub.has_safetensors_weights(folder):
            raise UnsafeWeightsError(
                f"{folder} has no complete safetensors weights: save the model with safe_serialization=True."
            )
        if not hub.is_encoder_decoder_config(folder / "config.json"):
            raise NotEncoderDecoderError(
                f"{folder} does not contain an encoder-decoder model: Synopsis needs one such as BART or T5."
            )
        metrics = json.loads(json.dumps(metrics or {}))  # fails early on values JSON cannot store

        with self._editing() as data:
            data["fine_tuned"] = [record for record in data["fine_tuned"] if _resolve(record["path"]) != folder]
            data["fine_tuned"].append(
                {"path": str(folder), "name": name, "base_model": base_model, "metrics": metrics, "created": _now()}
            )
        log.info("registered fine-tuned model %s (%s, from %s)", name, folder, base_model)
        return self._entry_for_folder(ModelKind.FINE_TUNED, folder)

    def _entry_for_folder(self, kind: ModelKind, folder: Path) -> ModelEntry:
        for entry in self.entries():
            if entry.kind is kind and entry.path is not None and _resolve(entry.path) == folder:
                return entry
        # Reached only when another process removed the entry in between.
        raise ModelError(f"{folder} was added but is no longer listed: open the model list again.")

    def download(
        self,
        repo_id: str,
        revision: str = "main",
        cache_dir: str | Path | None = None,
        progress: ProgressFn = ignore_progress,
        cancel: CancellationToken | None = None,
    ) -> ModelEntry:
        """Download (or resume) a hub model into ``cache_dir`` (default: :attr:`hub_cache_dir`) and list it.

        Until it completes the model is listed as partial, also after a crash.
        A rejected or unknown repository is dropped from the list again.
        """
        repo_id = repo_id.strip()
        cache = _resolve(cache_dir) if cache_dir else _resolve(self.hub_cache_dir)
        self._record_download(repo_id, revision, cache, complete=False)
        try:
            snapshot = hub.download_model(
                repo_id, revision=revision, cache_dir=cache, endpoint=self.endpoint, progress=progress, cancel=cancel
            )
        except (ModelNotFoundError, UnsafeWeightsError, NotEncoderDecoderError):
            self._forget_download(repo_id, cache)
            raise
        except (Cancelled, ModelError):
            raise  # stays listed as partial, ready to resume
        self._record_download(repo_id, revision, cache, complete=True, commit=snapshot.name)
        entry = self.find(f"hub:{cache}:{repo_id}")
        if entry is None:
            raise ModelError(f"'{repo_id}' was downloaded to {snapshot} but is not usable as a summarizer.")
        return entry

    def _record_download(self, repo_id: str, revision: str, cache: Path, complete: bool, commit: str | None = None) -> None:
        with self._editing() as data:
            data["downloads"] = [record for record in data["downloads"] if not self._same_download(record, repo_id, cache)]
            record = {"repo_id": repo_id, "revision": revision, "complete": complete, "commit": commit}
            if cache != _resolve(self.hub_cache_dir):
                record["cache_dir"] = str(cache)
            data["downloads"].append(record)

    def _forget_download(self, repo_id: str, cache: Path) -> None:
        with self._editing() as data:
            data["downloads"] = [record for record in data["downloads"] if not self._same_download(record, repo_id, cache)]

    def _record_cache(self, record: dict[str, Any]) -> Path:
        return _resolve(record.get("cache_dir")) or _resolve(self.hub_cache_dir)

    def _same_download(self, record: dict[str, Any], repo_id: str, cache: Path) -> bool:
        return record["repo_id"] == repo_id and self._record_cache(record) == cache

    # Removing ---------------------------------------------------------------

    def remove_deletes_files(self, entry: ModelEntry) -> bool:
        """Return whether :meth:`remove` deletes files (hub caches, fine-tuned folders under :attr:`fine_tuned_dir`)."""
        if entry.kind is ModelKind.HUB:
            return True
        if entry.kind is ModelKind.FINE_TUNED and entry.path is not None:
            return self._owns(entry.path)
        return False

    def remove(self, entry: ModelEntry) -> None:
        """Remove a model from the list.

        A hub model's cache revision and partial files are deleted. A
        fine-tuned folder under :attr:`fine_tuned_dir` is deleted. Any other
        folder is only forgotten: files the user owns are never deleted.
        """
        if entry.kind is ModelKind.HUB:
            self._remove_hub(entry)
            return
        folder = _resolve(entry.path) if entry.path else None
        section = "local" if entry.kind is ModelKind.LOCAL else "fine_tuned"
        with self._editing() as data:
            data[section] = [record for record in data[section] if _resolve(record["path"]) != folder]
        if entry.kind is ModelKind.FINE_TUNED and folder is not None and self._owns(folder):
            shutil.rmtree(folder)
            log.info("deleted fine-tuned model %s", folder)
        else:
            log.info("forgot model folder %s (files kept)", folder)

    def _owns(self, folder: Path) -> bool:
        root = _resolve(self.fine_tuned_dir)
        folder = _resolve(folder)
        return folder != root and root in folder.parents

    def _remove_hub(self, entry: ModelEntry) -> None:
        cache = entry.cache_dir or _resolve(self.hub_cache_dir)
        repo_id = entry.repo_id or entry.name
        if entry.commit:
            try:
                scan_cache_dir(cache).delete_revisions(entry.commit).execute()
            except (CacheNotFound, OSError) as error:
                raise ModelError(f"Could not delete '{repo_id}' from the cache {cache}: {error}") from error
        repo_folder = hub.repo_cache_folder(repo_id, cache)
        for partial in (repo_folder / "blobs").glob("*.incomplete"):
            partial.unlink(missing_ok=True)
        snapshots = repo_folder / "snapshots"
        if repo_folder.is_dir() and not (snapshots.is_dir() and any(snapshots.iterdir())):
            shutil.rmtree(repo_folder, ignore_errors=True)
        self._forget_download(repo_id, cache)
        log.info("deleted %s (revision %s) from the cache %s", repo_id, entry.commit, cache)


# Types of the optional fields of a list entry, checked when present and not null.
_OPTIONAL_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "base_model": str,
    "metrics": dict,
    "revision": str,
    "cache_dir": str,
    "complete": bool,
    "commit": str,
}


def _check_list_shape(data: Any) -> None:
    if not isinstance(data, dict):
        raise ValueError("the top level is not an object")
    for key in ("local", "fine_tuned", "downloads"):
        records = data.get(key, [])
        if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
            raise ValueError(f"'{key}' is not a list of objects")
    for record in [*data.get("local", []), *data.get("fine_tuned", [])]:
        if not isinstance(record.get("path"), str):
            raise ValueError("a model folder entry has no path")
    for record in data.get("downloads", []):
        if not isinstance(record.get("repo_id"), str):
            raise ValueError("a download entry has no repo_id")
    for key, record in [(key, record) for key in ("local", "fine_tuned", "downloads") for record in data.get(key, [])]:
        for name, expected in _OPTIONAL_FIELD_TYPES.items():
            if record.get(name) is not None and not isinstance(record[name], expected):
                raise ValueError(f"'{name}' of an entry in '{key}' is a {type(record[name]).__name__}")


def _resolve(path: str | Path | None) -> Path | None:
    if not path:
        return None
    return Path(path).expanduser().resolve()


def _folder_size(folder: Path) -> int:
    """Return the bytes of the files directly in ``folder`` (model folders are flat)."""
    total = 0
    try:
        for path in folder.iterdir():
            if path.is_file():
                total += path.stat().st_size
    except OSError:
        return 0
    return total


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

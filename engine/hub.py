"""Downloading summarization models from the Hugging Face hub into its cache.

Only the files a summarizer needs are fetched: ``config.json``,
``generation_config.json``, the tokenizer files and the safetensors weights
(``model.safetensors``, or ``model.safetensors.index.json`` and its shards).
Pickled weights (.bin, .pt, .ckpt), TensorFlow, Flax and ONNX exports are
never downloaded. A repository without safetensors weights, or whose config
is not an encoder-decoder, is rejected before its weights are requested.

Downloads resume. In huggingface_hub 2.4, ``hf_hub_download`` writes each file
to a temporary name unique to the call and deletes it on any error, so a
cancelled download would start again from zero. This module streams every
file itself into ``blobs/<etag>.incomplete`` in the cache (the name
``scan_cache_dir`` reports as an incomplete download), keeps that file when
cancelled or interrupted, and continues it with an HTTP Range request. Once a
blob is complete and its checksum matches, ``hf_hub_download`` links it into
``snapshots/<commit>/``, so the cache layout stays the library's own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import filelock
import httpx2
from huggingface_hub import HfApi, HfFileMetadata, constants, get_hf_file_metadata, get_session, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import WeakFileLock, build_hf_headers, hf_raise_for_status

from .errors import Cancelled, ModelError, ModelNotFoundError, NotEncoderDecoderError, UnsafeWeightsError
from .files import write_text_atomic
from .progress import CancellationToken, ProgressFn, ignore_progress

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
# Tokenizer files of the encoder-decoder families Synopsis supports: BART and
# mBART (byte-level BPE), PEGASUS and T5 (SentencePiece), Marian (two .spm files).
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "spiece.model",
        "sentencepiece.bpe.model",
        "tokenizer.model",
        "source.spm",
        "target.spm",
    }
)
# Only named in the rejection message: weight formats that are never fetched.
UNSAFE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

PROGRESS_UNIT = "bytes"
READ_CHUNK_BYTES = 64 * 1024
# A stalled connection raises after this many seconds without data, which
# also bounds how long a cancel can take.
READ_TIMEOUT_S = float(constants.HF_HUB_DOWNLOAD_TIMEOUT)
METADATA_TIMEOUT_S = float(constants.HF_HUB_ETAG_TIMEOUT)
# Seconds to wait for another process that downloads the same blob before
# raising a ModelError with the advice to try again later.
LOCK_TIMEOUT_S = 5.0
HASH_CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub repository, as listed by ``model_info(files_metadata=True)``."""

    name: str
    size: int | None
    sha256: str | None  # content hash of files stored with Git LFS (weights)
    git_oid: str | None  # git blob id of files stored in git itself (configs, tokenizers)


def default_endpoint() -> str:
    """Return the hub address: ``HF_ENDPOINT`` as huggingface_hub read it at import, else huggingface.co."""
    return constants.ENDPOINT


def default_cache_dir() -> Path:
    """Return the Hugging Face hub cache folder (``HF_HUB_CACHE``, else ``HF_HOME/hub``)."""
    return Path(constants.HF_HUB_CACHE)


def repo_cache_folder(repo_id: str, cache_dir: str | Path | None = None) -> Path:
    """Return the folder of a model repository inside a hub cache (``models--owner--name``)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    return cache / ("models--" + repo_id.replace("/", "--"))


def partial_download_bytes(repo_id: str, cache_dir: str | Path | None = None) -> int:
    """Return the bytes held in unfinished ``.incomplete`` files of a repository."""
    blobs = repo_cache_folder(repo_id, cache_dir) / "blobs"
    total = 0
    for path in blobs.glob("*.incomplete"):
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total


def has_safetensors_weights(folder: Path) -> bool:
    """Return whether ``folder`` contains complete safetensors weights that transformers loads.

    That is ``model.safetensors``, or an index whose every shard is present.
    """
    if (folder / WEIGHTS_FILE).is_file():
        return True
    index = folder / WEIGHTS_INDEX_FILE
    if not index.is_file():
        return False
    try:
        shards = _shard_names(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(shards) and all((folder / shard).is_file() for shard in shards)


def is_encoder_decoder_config(config_file: Path) -> bool:
    """Return whether a ``config.json`` describes an encoder-decoder model, without loading weights.

    The file's own ``is_encoder_decoder`` decides when present. Otherwise the
    default of the transformers config class for its ``model_type`` decides,
    because T5 configs may omit the key. An unreadable file or a model type unknown to
    transformers counts as not encoder-decoder.
    """
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    if "is_encoder_decoder" in data:
        return bool(data["is_encoder_decoder"])
    model_type = data.get("model_type")
    if not isinstance(model_type, str):
        return False

    # Imported here so listing the registry does not pay for transformers
    # unless a config lacks the key.
    from transformers import AutoConfig

    try:
        return bool(AutoConfig.for_model(model_type).is_encoder_decoder)
    except (ValueError, KeyError):
        return False


def download_model(
    repo_id: str,
    *,
    revision: str = "main",
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    progress: ProgressFn = ignore_progress,
    cancel: CancellationToken | None = None,
) -> Path:
    """Download a hub model's summarization files into the cache and return its snapshot folder.

    ``progress(done, total, "bytes")`` counts bytes already on disk as done, so
    a resumed download starts where the cancelled one stopped. ``cancel`` is
    checked between files and after every chunk read; :class:`Cancelled`
    leaves the partial file in place for the next call to resume.

    Raises :class:`UnsafeWeightsError` for a repository without safetensors
    weights and :class:`NotEncoderDecoderError` for a decoder-only or
    encoder-only config, both before any weights are requested, and
    :class:`ModelNotFoundError` or :class:`ModelError` for hub and network
    failures. The snapshot folder loads with ``load_model``, and when
    ``cache_dir`` is the default cache, ``load_model(repo_id)`` finds it too.
    """
    endpoint = (endpoint or default_endpoint()).rstrip("/")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cancel = cancel or CancellationToken()
    repo_folder = repo_cache_folder(repo_id, cache)
    repo_was_cached = repo_folder.exists()

    try:
        return _download(repo_id, revision, cache, endpoint, progress, cancel)
    except (UnsafeWeightsError, NotEncoderDecoderError):
        # Only the config (and index) came down; leave no trace of a rejected repository.
        if not repo_was_cached:
            shutil.rmtree(repo_folder, ignore_errors=True)
        raise
    except Cancelled:
        log.info("download of %s cancelled; partial files kept in %s", repo_id, repo_folder)
        raise
    except (HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, httpx2.HTTPError, filelock.Timeout) as error:
        raise _hub_error(repo_id, revision, endpoint, error) from error
    except OSError as error:
        log.warning("writing %s into %s failed: %s", repo_id, cache, error)
        raise ModelError(
            f"Could not write '{repo_id}' into the cache folder {cache}: {error}. "
            "Free some disk space or choose another folder, then resume the download."
        ) from error


def _download(
    repo_id: str,
    revision: str,
    cache: Path,
    endpoint: str,
    progress: ProgressFn,
    cancel: CancellationToken,
) -> Path:
    cancel.raise_if_cancelled()
    commit, remote = _list_repository(repo_id, revision, endpoint)
    if CONFIG_FILE not in remote:
        raise ModelNotFoundError(
            f"'{repo_id}' has no config.json at revision {revision}, so it is not a "
            "transformers model: choose another model id."
        )
    weights_entry = _weights_entry(repo_id, remote)
    fetcher = _Fetcher(repo_id, commit, cache, endpoint, cancel)

    # The config and the shard index are small: fetch them first, so a
    # repository is rejected before its weights are requested, and the shard
    # list (hence the byte total) is known before progress starts.
    config_path = fetcher.fetch(remote[CONFIG_FILE])
    if not is_encoder_decoder_config(config_path):
        model_type = _model_type(config_path)
        raise NotEncoderDecoderError(
            f"'{repo_id}' is not an encoder-decoder model ({model_type}): Synopsis needs one such "
            "as BART, PEGASUS, mBART or T5. Its weights were not downloaded."
        )
    weights = [remote[weights_entry]]
    if weights_entry == WEIGHTS_INDEX_FILE:
        index_path = fetcher.fetch(remote[WEIGHTS_INDEX_FILE])
        weights += _shards_from_index(repo_id, index_path, remote)

    extras = [remote[name] for name in sorted(remote) if name == GENERATION_CONFIG_FILE or name in TOKENIZER_FILES]
    plan = [remote[CONFIG_FILE], *extras, *weights]
    total = fetcher.start_progress(progress, plan)
    log.info("downloading %s@%s (%d files, %d bytes) into %s", repo_id, commit, len(plan), total, cache)

    for file in plan:
        cancel.raise_if_cancelled()
        fetcher.fetch(file)

    # The ref is written last: scan_cache_dir treats a ref to a missing
    # snapshot as a corrupted repository, and transformers resolves
    # load_model(repo_id) through refs/main.
    if revision != commit:
        write_text_atomic(repo_cache_folder(repo_id, cache) / "refs" / revision, commit)
    snapshot = repo_cache_folder(repo_id, cache) / "snapshots" / commit
    log.info("downloaded %s into %s", repo_id, snapshot)
    return snapshot


def _list_repository(repo_id: str, revision: str, endpoint: str) -> tuple[str, dict[str, RemoteFile]]:
    """Return the commit a revision points to and the files at the repository's top level."""
    info = HfApi(endpoint=endpoint).model_info(
        repo_id, revision=revision, files_metadata=True, timeout=METADATA_TIMEOUT_S
    )
    if not info.sha:
        raise ModelError(f"The hub at {endpoint} returned no commit for '{repo_id}' at {revision}.")
    files = {}
    for sibling in info.siblings or []:
        if "/" in sibling.rfilename:
            continue  # subfolders hold other exports (onnx/, openvino/, ...)
        files[sibling.rfilename] = RemoteFile(
            name=sibling.rfilename,
            size=sibling.size,
            sha256=sibling.lfs.sha256 if sibling.lfs else None,
            git_oid=None if sibling.lfs else sibling.blob_id,
        )
    return info.sha, files


def _weights_entry(repo_id: str, remote: dict[str, RemoteFile]) -> str:
    """Return the weights file to start from, or raise when the repository has no safetensors weights."""
    if WEIGHTS_FILE in remote:
        return WEIGHTS_FILE
    if WEIGHTS_INDEX_FILE in remote:
        return WEIGHTS_INDEX_FILE
    unsafe = sorted(name for name in remote if name.endswith(UNSAFE_WEIGHT_SUFFIXES))
    detail = f" It has {', '.join(unsafe)}, which can run code when loaded." if unsafe else ""
    raise UnsafeWeightsError(
        f"'{repo_id}' has no safetensors weights ({WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE}).{detail} "
        "Synopsis loads safetensors only: choose a model that publishes them."
    )


def _shard_names(index_text: str) -> list[str]:
    weight_map = json.loads(index_text).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError("the index has no weight_map")
    return sorted(set(weight_map.values()))


def _shards_from_index(repo_id: str, index_path: Path, remote: dict[str, RemoteFile]) -> list[RemoteFile]:
    try:
        names = _shard_names(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError) as error:
        raise ModelError(f"'{repo_id}': {WEIGHTS_INDEX_FILE} could not be read ({error}).") from error
    missing = [name for name in names if name not in remote or not name.endswith(".safetensors")]
    if missing or not names:
        raise ModelError(
            f"'{repo_id}': {WEIGHTS_INDEX_FILE} lists shards that are not safetensors files of the "
            f"repository ({', '.join(missing) or 'none listed'}), so the weights cannot be downloaded."
        )
    return [remote[name] for name in names]


def _model_type(config_path: Path) -> str:
    try:
        return str(json.loads(config_path.read_text(encoding="utf-8")).get("model_type", "unknown type"))
    except (OSError, ValueError, AttributeError):
        return "unreadable config"


class _Fetcher:
    """Fetches the files of one repository commit into the cache, counting bytes for progress."""

    def __init__(self, repo_id: str, commit: str, cache: Path, endpoint: str, cancel: CancellationToken) -> None:
        self.repo_id = repo_id
        self.commit = commit
        self.cache = cache
        self.endpoint = endpoint
        self.cancel = cancel
        self.repo_folder = repo_cache_folder(repo_id, cache)
        self.snapshot = self.repo_folder / "snapshots" / commit
        self._metadata: dict[str, HfFileMetadata] = {}
        self._progress: ProgressFn = ignore_progress
        self._total = 0
        self._done = 0

    def start_progress(self, progress: ProgressFn, plan: list[RemoteFile]) -> int:
        """Start reporting bytes of ``plan``, counting what is already on disk as done, and return the total."""
        self._total = sum(self._size(file) or 0 for file in plan)
        self._done = sum(self._bytes_on_disk(file) for file in plan)
        self._progress = progress
        self._progress(min(self._done, self._total), self._total, PROGRESS_UNIT)
        return self._total

    def _count(self, nbytes: int) -> None:
        self._done += nbytes
        if self._total:
            # A file whose size the hub did not list can run past the total, so reports stop at the total.
            self._progress(min(self._done, self._total), self._total, PROGRESS_UNIT)

    def _url(self, file: RemoteFile) -> str:
        return hf_hub_url(self.repo_id, file.name, revision=self.commit, endpoint=self.endpoint)

    def _head(self, file: RemoteFile) -> HfFileMetadata:
        """Return the file's ETag, size and download address, asking the hub once per file."""
        if file.name not in self._metadata:
            metadata = get_hf_file_metadata(self._url(file), endpoint=self.endpoint, timeout=METADATA_TIMEOUT_S)
            if not metadata.etag:
                raise ModelError(f"The hub at {self.endpoint} sent no ETag for {file.name} of '{self.repo_id}'.")
            self._metadata[file.name] = metadata
        return self._metadata[file.name]

    def _size(self, file: RemoteFile) -> int | None:
        if (self.snapshot / file.name).exists():
            return file.size if file.size is not None else (self.snapshot / file.name).stat().st_size
        metadata = self._head(file)
        return metadata.size if metadata.size is not None else file.size

    def _blob(self, file: RemoteFile) -> Path:
        return self.repo_folder / "blobs" / self._head(file).etag

    def _bytes_on_disk(self, file: RemoteFile) -> int:
        if (self.snapshot / file.name).exists():
            return self._size(file) or 0
        blob = self._blob(file)
        if blob.exists():
            return blob.stat().st_size
        partial = blob.with_name(blob.name + ".incomplete")
        size = self._size(file)
        have = partial.stat().st_size if partial.exists() else 0
        return have if size is None or have <= size else 0

    def fetch(self, file: RemoteFile) -> Path:
        """Download one file unless it is cached, and return its path in the snapshot.

        Only bytes written by this call are counted, because ``start_progress``
        counted the ones already on disk.
        """
        pointer = self.snapshot / file.name
        if pointer.exists():
            return pointer

        blob = self._blob(file)
        if not blob.exists():
            lock = self.cache / ".locks" / self.repo_folder.name / f"{blob.name}.lock"
            lock.parent.mkdir(parents=True, exist_ok=True)
            with WeakFileLock(lock, timeout=LOCK_TIMEOUT_S):
                if not blob.exists():
                    self._download_blob(file, blob)

        # The blob is in place, so hf_hub_download only creates the snapshot link
        # (or a copy where symlinks are unsupported) and downloads nothing.
        linked = hf_hub_download(
            self.repo_id,
            file.name,
            revision=self.commit,
            cache_dir=self.cache,
            endpoint=self.endpoint,
            etag_timeout=METADATA_TIMEOUT_S,
        )
        return Path(linked)

    def _download_blob(self, file: RemoteFile, blob: Path) -> None:
        blob.parent.mkdir(parents=True, exist_ok=True)
        partial = blob.with_name(blob.name + ".incomplete")
        size = self._size(file)
        self._stream(file, size, partial)
        received = partial.stat().st_size
        if size is not None and received != size:
            raise ModelError(
                f"The download of {file.name} from '{self.repo_id}' stopped at {received} of {size} bytes: "
                "resume the download to continue."
            )
        self._verify(file, partial)
        os.replace(partial, blob)

    def _stream(self, file: RemoteFile, size: int | None, partial: Path) -> None:
        """Append the file's missing bytes to ``partial``, resuming with a Range request."""
        have = partial.stat().st_size if partial.exists() else 0
        if size is not None and have > size:
            log.warning("%s is longer than %s (%d bytes); starting it again", partial, file.name, size)
            partial.unlink()
            have = 0
        if size is not None and have == size:
            return

        url = self._url(file)
        location = self._head(file).location
        headers = build_hf_headers()
        if urlsplit(location).netloc != urlsplit(url).netloc:
            # A signed CDN address carries its own authorization; the hub token stays with the hub.
            headers.pop("authorization", None)
        headers["Accept-Encoding"] = "identity"  # byte offsets must count the file, not a compressed stream
        if have:
            headers["Range"] = f"bytes={have}-"
            log.info("resuming %s of %s at byte %d", file.name, self.repo_id, have)

        timeout = httpx2.Timeout(METADATA_TIMEOUT_S, read=READ_TIMEOUT_S)
        with get_session().stream("GET", location, headers=headers, timeout=timeout) as response:
            hf_raise_for_status(response)
            # A server that ignores Range sends the whole file from byte 0:
            # skip what is already on disk instead of writing it twice.
            skip = have if have and response.status_code != 206 else 0
            with partial.open("ab") as output:
                for chunk in response.iter_bytes(chunk_size=READ_CHUNK_BYTES):
                    if skip:
                        dropped = min(skip, len(chunk))
                        chunk = chunk[dropped:]
                        skip -= dropped
                    if chunk:
                        output.write(chunk)
                        self._count(len(chunk))
                    self.cancel.raise_if_cancelled()

    def _verify(self, file: RemoteFile, path: Path) -> None:
        """Compare the file with the hash the hub listed, and delete it and raise ModelError on a mismatch."""
        if file.sha256:
            digest = hashlib.sha256()
            expected = file.sha256
        elif file.git_oid:
            # A git blob id is the SHA-1 of "blob <size>\0" followed by the content.
            digest = hashlib.sha1(usedforsecurity=False)
            digest.update(f"blob {path.stat().st_size}\0".encode())
            expected = file.git_oid
        else:
            return
        with path.open("rb") as stream:
            while block := stream.read(HASH_CHUNK_BYTES):
                digest.update(block)
                self.cancel.raise_if_cancelled()
        if digest.hexdigest() != expected:
            path.unlink(missing_ok=True)
            raise ModelError(
                f"{file.name} of '{self.repo_id}' arrived damaged (its checksum does not match the hub's), "
                "so it was deleted: download the model again."
            )


def _hub_error(repo_id: str, revision: str, endpoint: str, error: Exception) -> ModelError:
    """Translate a huggingface_hub or network error into an engine error with advice."""
    log.warning("download of %s@%s from %s failed: %r", repo_id, revision, endpoint, error)
    if isinstance(error, HFValidationError):
        return ModelNotFoundError(
            f"'{repo_id}' is not a valid hub model id: use owner/name, for example facebook/bart-large-cnn."
        )
    if isinstance(error, GatedRepoError):
        return ModelError(
            f"'{repo_id}' is gated: accept its conditions on its hub page, log in with `hf auth login`, "
            "then download again."
        )
    if isinstance(error, RepositoryNotFoundError):
        return ModelNotFoundError(
            f"No model '{repo_id}' on {endpoint}, or it is private: check the id, for example "
            "facebook/bart-large-cnn."
        )
    if isinstance(error, RevisionNotFoundError):
        return ModelNotFoundError(f"'{repo_id}' has no revision '{revision}' on {endpoint}.")
    if isinstance(error, RemoteEntryNotFoundError):
        return ModelError(
            f"A file of '{repo_id}' disappeared from {endpoint} during the download: download it again."
        )
    if isinstance(error, OfflineModeIsEnabled):
        return ModelError(
            "Downloads are switched off because HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: "
            "unset it and restart Synopsis to download models."
        )
    if isinstance(error, filelock.Timeout):
        return ModelError(
            f"Another program is downloading '{repo_id}' into the same cache folder: wait for it to "
            "finish, then resume."
        )
    if isinstance(error, httpx2.TimeoutException):
        return ModelError(
            f"The connection to {endpoint} timed out while downloading '{repo_id}'. What was downloaded "
            "is kept: resume the download to continue."
        )
    if isinstance(error, httpx2.TransportError):
        return ModelError(
            f"Could not reach {endpoint} to download '{repo_id}' ({error}). Check the network "
            "connection; what was downloaded is kept, so a resume continues from there."
        )
    return ModelError(f"The download of '{repo_id}' from {endpoint} failed: {error}")

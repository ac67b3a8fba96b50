"""Checkpoints written atomically, found again after a crash, and pruned.

A checkpoint is a folder in ``save_pretrained`` layout (safetensors weights,
config, tokenizer) plus the training state: ``optimizer.pt``,
``scheduler.pt``, ``rng.pt`` and ``scaler.pt`` (tensors, numbers and lists
only, read back with ``torch.load(weights_only=True)``), ``trainer_state.json``
and ``settings.json``. It is written into a temporary folder beside its final
place. Every file is flushed to disk, the ``COMPLETE`` marker is written last,
and only then is the folder renamed into place. A folder without the marker,
or a leftover temporary folder, is never loaded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import ModelError, SynopsisError
from ..files import set_aside

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
STATE_FILE = "trainer_state.json"
SETTINGS_FILE = "settings.json"
TEMPORARY_PREFIX = ".tmp-"
REPLACED_PREFIX = ".old-"
STEP_PREFIX = "step-"


class CheckpointWriteError(SynopsisError):
    """A checkpoint, or the best/ or last/ model folder, could not be written (disk full, permissions)."""


def is_write_failure(error: BaseException) -> bool:
    """Return whether ``error`` is how a library reports a failed file write.

    Python's own writes raise OSError. The libraries behind a checkpoint wrap
    the kernel's error instead (measured with safetensors 0.8, torch 2.13,
    tokenizers 0.23 on ENOSPC and EFBIG): safetensors raises SafetensorError
    ("I/O error: File too large (os error 27)"), ``torch.save`` raises
    RuntimeError ("[enforce fail at inline_container.cc] unexpected pos"), and
    the tokenizers library raises a plain Exception ("(os error 28)").
    """
    if isinstance(error, (OSError, SafetensorError, RuntimeError)):
        return True
    return type(error) is Exception and "os error" in str(error)


def _failure_reason(error: BaseException) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return f"{type(error).__name__}: {error}"


def _free_space_note(folder: Path) -> str:
    """Return "12.3 MB free on the disk of FOLDER. " or "" when the free space cannot be measured."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return ""
    return f"{free / 1e6:.1f} MB free on the disk of {probe}. "


def step_folder(checkpoints: Path, step: int) -> Path:
    return checkpoints / f"{STEP_PREFIX}{step:06d}"


def folder_step(folder: Path) -> int | None:
    """Return the step number in a ``step-NNNNNN`` folder name, or None for any other name."""
    digits = folder.name.removeprefix(STEP_PREFIX)
    if not folder.name.startswith(STEP_PREFIX) or not digits.isdigit():
        return None
    return int(digits)


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as stream:
                os.fsync(stream.fileno())
    _fsync_directory(folder)


def _fsync_directory(folder: Path) -> None:
    # Windows cannot open a directory to flush it; there a rename is already durable enough.
    if os.name == "nt":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _replace_folder(temporary: Path, target: Path) -> None:
    """Rename ``temporary`` to ``target``, moving an existing ``target`` aside first and deleting it after."""
    replaced = None
    if target.exists():
        replaced = target.with_name(f"{REPLACED_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}")
        os.replace(target, replaced)
    os.replace(temporary, target)
    _fsync_directory(target.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def _temporary_folder(target: Path) -> Path:
    temporary = target.with_name(f"{TEMPORARY_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}")
    temporary.mkdir(parents=True)
    return temporary


def write_checkpoint(
    target: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    state: dict,
    settings: dict,
    tensors: dict[str, object],
) -> None:
    """Write a complete checkpoint to ``target`` atomically.

    ``state`` and ``settings`` are stored as JSON; each entry of ``tensors``
    (optimizer, scheduler, rng, scaler state dicts) as ``NAME.pt``.
    """
    temporary = _temporary_folder(target)
    try:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        for name, value in tensors.items():
            torch.save(value, temporary / f"{name}.pt")
        (temporary / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        (temporary / SETTINGS_FILE).write_text(json.dumps(settings, indent=1), encoding="utf-8")
        _fsync_tree(temporary)
        # The marker goes last: its presence means every other file is on disk.
        (temporary / MARKER).write_text("", encoding="utf-8")
        _fsync_tree(temporary)
        _replace_folder(temporary, target)
    except BaseException as error:
        # BaseException too: a Ctrl-C mid-write must not leave a temporary folder behind.
        shutil.rmtree(temporary, ignore_errors=True)
        if is_write_failure(error):
            log.error("checkpoint %s could not be written: %r", target, error)
            raise CheckpointWriteError(_write_failure_message(target, error)) from error
        raise


def _write_failure_message(target: Path, error: BaseException) -> str:
    """Describe a failed checkpoint write and name the newest complete checkpoint, which the failure left intact."""
    reason = _failure_reason(error)
    previous = [folder for _, folder in complete_checkpoints(target.parent) if folder != target]
    if previous:
        previous_note = f"The previous checkpoint {previous[-1]} is intact"
        next_step = "then resume the run (synopsis train --resume) to continue from it"
    else:
        previous_note = "No earlier checkpoint exists"
        next_step = "then start the run again"
    return (
        f"Could not write checkpoint {target}: {reason}. {previous_note}. {_free_space_note(target.parent)}"
        f"Free disk space or fix the folder's permissions, {next_step}."
    )


def publish_model(checkpoint: Path, target: Path, state: dict) -> None:
    """Make ``target`` (best/ or last/) a loadable model folder holding ``checkpoint``'s model and tokenizer.

    Files are hard-linked where the file system allows it, since checkpoint
    files are never modified after the rename, and copied otherwise. The
    optimizer and RNG state are left out: best/ and last/ are for inference.
    """
    temporary = _temporary_folder(target)
    try:
        for source in checkpoint.iterdir():
            if source.suffix == ".pt" or source.name in (MARKER, STATE_FILE) or not source.is_file():
                continue
            try:
                os.link(source, temporary / source.name)
            except OSError:
                shutil.copy2(source, temporary / source.name)
        (temporary / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        _fsync_tree(temporary)
        (temporary / MARKER).write_text("", encoding="utf-8")
        _replace_folder(temporary, target)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if is_write_failure(error):
            log.error("model folder %s could not be updated: %r", target, error)
            raise CheckpointWriteError(
                f"Could not update {target}: {_failure_reason(error)}. Checkpoint {checkpoint} is complete. "
                f"{_free_space_note(target.parent)}"
                "Free disk space or fix the folder's permissions, then resume the run (synopsis train --resume)."
            ) from error
        raise


def clean_interrupted_writes(folder: Path) -> None:
    """Delete temporary folders a crash left in ``folder``, and put back a folder moved aside mid-replace."""
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if path.name.startswith(TEMPORARY_PREFIX):
            log.warning("removing %s, a checkpoint that was not finished writing", path)
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(REPLACED_PREFIX):
            original = folder / path.name.removeprefix(REPLACED_PREFIX).rsplit("-", 1)[0]
            if original.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:
                log.warning("restoring %s, which was being replaced when the run stopped", original)
                os.replace(path, original)


def complete_checkpoints(checkpoints: Path, problems: list[str] | None = None) -> list[tuple[int, Path]]:
    """Return ``(step, folder)`` of every complete, readable step checkpoint, oldest first.

    Folders without the marker are skipped with a warning. A folder with the
    marker whose files cannot be read (hand-edited or damaged state, truncated
    weights) is moved aside as ``step-NNNNNN.corrupt-<date>``, so a resume
    falls back to the checkpoint before it, and a message is appended to
    ``problems``.
    """
    if not checkpoints.is_dir():
        return []
    found = []
    for folder in checkpoints.iterdir():
        step = folder_step(folder)
        if step is None or not folder.is_dir():
            continue
        if not is_complete(folder):
            log.warning("ignoring %s: it has no %s marker, so it was not finished writing", folder, MARKER)
            continue
        try:
            damage = checkpoint_damage(folder)
        except FileNotFoundError as error:
            # Not moved: the folder may be mid-deletion by a trainer pruning it.
            log.warning("ignoring %s: a file is missing (%s)", folder, error)
            continue
        if damage is not None:
            _set_aside_checkpoint(folder, damage, problems)
            continue
        found.append((step, folder))
    return sorted(found)


def checkpoint_damage(folder: Path) -> str | None:
    """Return what makes a complete checkpoint unreadable, or None when its files look sound.

    Reads the JSON files, the safetensors headers and the zip directories of
    the ``.pt`` files, but loads no tensors. Raises FileNotFoundError when a
    file is missing, which a folder being deleted looks like.
    """
    parsed = {}
    for name in (STATE_FILE, SETTINGS_FILE):
        try:
            parsed[name] = json.loads((folder / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as error:
            return f"{name} cannot be read ({error})"
        if not isinstance(parsed[name], dict):
            return f"{name} does not contain a JSON object"
    step = parsed[STATE_FILE].get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        return f"{STATE_FILE} has no integer step"
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"{folder} has no safetensors weights")
    for shard in shards:
        try:
            with safe_open(shard, framework="pt"):
                pass
        except FileNotFoundError:
            raise
        except (OSError, SafetensorError) as error:
            return f"{shard.name} cannot be read ({error})"
    for tensors in folder.glob("*.pt"):
        # torch.save writes a zip archive; a truncated one has no central directory.
        if not zipfile.is_zipfile(tensors):
            return f"{tensors.name} is damaged (not a complete torch.save archive)"
    return None


def _set_aside_checkpoint(folder: Path, damage: str, problems: list[str] | None) -> None:
    try:
        kept = set_aside(folder)
    except OSError as error:
        log.error("checkpoint %s is unreadable (%s) and could not be moved aside: %s", folder, damage, error)
        return
    log.warning("checkpoint %s is unreadable (%s); moved to %s", folder, damage, kept)
    if problems is not None:
        problems.append(
            f"Checkpoint {folder.name} could not be read because {damage}. It was moved to {kept}; "
            "a resume continues from the checkpoint before it."
        )


def prune_checkpoints(checkpoints: Path, keep_last: int, keep_steps: set[int]) -> None:
    """Delete complete step checkpoints except the newest ``keep_last`` and those in ``keep_steps``."""
    complete = complete_checkpoints(checkpoints)
    newest = {step for step, _ in complete[-keep_last:]}
    for step, folder in complete:
        if step not in newest and step not in keep_steps:
            log.debug("pruning checkpoint %s", folder)
            shutil.rmtree(folder, ignore_errors=True)


def read_state(folder: Path) -> tuple[dict, dict]:
    """Return a checkpoint's trainer state and settings, both as parsed JSON."""
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
    return state, settings


def read_tensors(folder: Path, name: str, device: torch.device | str = "cpu"):
    """Return ``NAME.pt`` of a checkpoint, or None if absent. Only tensors and plain data are unpickled."""
    path = folder / f"{name}.pt"
    if not path.is_file():
        return None
    return torch.load(path, map_location=device, weights_only=True)


def load_model_weights(model: PreTrainedModel, folder: Path) -> None:
    """Load a checkpoint's safetensors weights into ``model`` in place.

    ``save_pretrained`` leaves tied copies out (BART's LM head and per-stack
    embeddings share ``model.shared.weight``), so a key may be missing only
    when its parameter shares storage with a loaded one.
    """
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    weights: dict[str, torch.Tensor] = {}
    for shard in shards:
        weights.update(load_file(folder / shard))

    result = model.load_state_dict(weights, strict=False)
    current = model.state_dict()
    loaded_storage = {current[key].data_ptr() for key in weights if key in current}
    untied = [key for key in result.missing_keys if current[key].data_ptr() not in loaded_storage]
    if result.unexpected_keys or untied:
        raise ModelError(
            f"The checkpoint {folder} does not match the model: missing {untied[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}. Resume with the base model the run started from."
        )

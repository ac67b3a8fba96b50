"""File writes that never leave half a file, and never replace what is not a plain file."""

from __future__ import annotations

import os
import stat
import tempfile
from datetime import datetime
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old content or the new, never half.

    The data goes to a temporary file beside the target, is flushed to disk
    and renamed over it. A symbolic link is followed and its target replaced,
    so the link survives. A named pipe or device is written directly, since
    renaming over it would replace it with a plain file. A new file gets the
    usual permissions (0666 less the umask); a replaced file keeps its own.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        with open(path, "wb") as stream:
            stream.write(data)
        return

    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_current_umask()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        # BaseException too: a Ctrl-C during the write must not leave the temporary file.
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


CORRUPT_INFIX = ".corrupt-"


def _aside_path(path: Path) -> Path:
    """Return a free ``NAME.corrupt-YYYYmmdd-HHMMSS`` path beside ``path``, with ``-2``, ``-3``… when taken."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}{CORRUPT_INFIX}{stamp}")
    number = 2
    while target.exists():
        target = path.with_name(f"{path.name}{CORRUPT_INFIX}{stamp}-{number}")
        number += 1
    return target


def set_aside(path: str | Path) -> Path:
    """Rename an unreadable file or folder to ``NAME.corrupt-YYYYmmdd-HHMMSS`` beside it, and return the new path.

    The data is kept for the user to inspect or repair; nothing is deleted. A
    second file set aside in the same second gets a ``-2``, ``-3``… suffix.
    Raises OSError when the rename fails.
    """
    path = Path(path)
    target = _aside_path(path)
    os.replace(path, target)
    return target


def copy_aside(path: str | Path) -> Path:
    """Copy a file that is about to be repaired to ``NAME.corrupt-YYYYmmdd-HHMMSS`` beside it, and return the copy.

    The copy is named as :func:`set_aside` names files, and is written
    atomically. Raises OSError when the file cannot be read or the copy
    cannot be written.
    """
    path = Path(path)
    target = _aside_path(path)
    write_bytes_atomic(target, path.read_bytes())
    return target

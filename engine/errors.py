"""Exception types the engine raises, with messages written for users.

Every message names the file or model involved, what is wrong and what to do
next, so both fronts can show ``str(error)`` as it is.
"""

from __future__ import annotations

from pathlib import Path


class SynopsisError(Exception):
    """Base class of every error the engine raises on purpose."""


class Cancelled(SynopsisError):
    """Raised when the user cancelled a long operation through its token."""

    def __init__(self, message: str = "Cancelled by the user.") -> None:
        super().__init__(message)


# Documents ------------------------------------------------------------------


class DocumentError(SynopsisError):
    """A document could not be read; ``path`` is the file involved."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path.name or self.path}: {message}")


class UnsupportedFormatError(DocumentError):
    """The file type is not one Synopsis reads (PDF, DOCX, TXT, MD)."""


class LegacyDocError(DocumentError):
    """A Word 97-2003 .doc file, which Synopsis does not read."""


class EmptyDocumentError(DocumentError):
    """The file has no bytes, or no text at all."""


class ContentMismatchError(DocumentError):
    """The file's content does not match its extension."""


class CorruptedDocumentError(DocumentError):
    """The file is truncated or damaged beyond what the reader recovers."""


class PasswordRequiredError(DocumentError):
    """An encrypted PDF was opened without a password."""


class WrongPasswordError(DocumentError):
    """An encrypted PDF was opened with a password that does not open it."""


class EncryptedDocxError(DocumentError):
    """A password-protected Word file (an OLE container, not a zip)."""


class NoTextLayerError(DocumentError):
    """A scanned PDF whose pages carry images but no text."""

    def __init__(self, path: str | Path, message: str, pages: list[int]) -> None:
        self.pages = pages
        super().__init__(path, message)


class DocumentTooLargeError(DocumentError):
    """The file exceeds a safety limit (archive size, member count, pages)."""


# Models ---------------------------------------------------------------------


class ModelError(SynopsisError):
    """A model could not be loaded or used."""


class ModelNotFoundError(ModelError):
    """No model at the given path, and not in the hub cache or reachable."""


class NotEncoderDecoderError(ModelError):
    """The model is decoder-only or encoder-only, so it cannot summarize here."""


class UnsafeWeightsError(ModelError):
    """The model's weights are only available in a format that runs code."""


class OutOfMemoryError(ModelError):
    """The device ran out of memory; the message carries advice."""


# Settings -------------------------------------------------------------------


class SettingsError(SynopsisError):
    """A setting has a value the engine cannot use (for example a window
    larger than the model's positions)."""

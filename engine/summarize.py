"""The summarization pipeline: document, windows, fused memory, summary."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from .documents.model import Document
from .attribution import attribute_sentences, window_attention
from .encoding import FusedMemory, encode_windows
from .errors import OutOfMemoryError
from .generation import GenerationSettings, generate_from_memory
from .models import LoadedModel
from .progress import CancellationToken, ProgressFn, ignore_progress
from .windows import Window, Windows, make_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentenceSource:
    """A summary sentence and the pages of the windows it drew on most.

    An indication from the decoder's cross-attention, not a citation.
    """

    text: str
    pages: tuple[int, int] | None  # first and last page of those windows, 1-based
    windows: tuple[int, ...]  # window indexes, most attended first

    def to_json(self) -> dict:
        return {"text": self.text, "pages": list(self.pages) if self.pages else None, "windows": list(self.windows)}


@dataclass
class Summary:
    """A finished summary of one document, with what it was made from."""

    file: Path
    text: str
    token_ids: list[int]
    windows: list[Window]
    total_tokens: int  # content tokens of the document, all of them encoded
    pages: int | None
    seconds: float
    model: str
    sentences: list[SentenceSource] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "file": str(self.file),
            "summary": self.text,
            "tokens": self.total_tokens,
            "windows": [
                {"index": w.index, "tokens": w.tokens, "pages": list(w.pages) if w.pages else None}
                for w in self.windows
            ],
            "pages": self.pages,
            "seconds": round(self.seconds, 3),
            "model": self.model,
            "sentences": [sentence.to_json() for sentence in self.sentences],
        }


# C0 and C1 control characters other than tab and newline. A model can emit
# them (an ESC byte, say), and XML, so .docx export, cannot hold them.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Return ``text`` without control characters other than tab and newline."""
    return _CONTROL_CHARACTERS.sub("", text)


def document_windows(document: Document, loaded: LoadedModel, window_tokens: int | None = None) -> Windows:
    """Cut ``document`` into windows sized for ``loaded``'s encoder."""
    return make_windows(
        document,
        loaded.tokenizer,
        loaded.window_tokens(window_tokens),
        loaded.special_prefix,
        loaded.special_suffix,
    )


@contextlib.contextmanager
def _memory_advice(loaded: LoadedModel, windows: int) -> Iterator[None]:
    """Convert an out-of-memory failure into an error whose message lists what to change."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        raise OutOfMemoryError(
            f"{loaded.device} ran out of memory on a {windows}-window document. Try fewer "
            "beams (--beams 1), fewer windows per batch (--batch-windows 1), a shorter "
            "summary, or --device cpu."
        ) from error
    except RuntimeError as error:
        if "can't allocate memory" not in str(error):
            raise
        raise OutOfMemoryError(
            f"Not enough memory for a {windows}-window document: close other programs, "
            "use fewer beams (--beams 1) or a smaller model."
        ) from error


def summarize_document(
    document: Document,
    loaded: LoadedModel,
    settings: GenerationSettings = GenerationSettings(),
    progress: ProgressFn = ignore_progress,
    cancel: CancellationToken | None = None,
    windows: Windows | None = None,
) -> Summary:
    """Summarize the whole of ``document``: every token is encoded and attended to.

    Progress comes in two stages, ``windows`` encoded and then ``tokens``
    generated; ``cancel`` is checked between windows and between decoding steps.
    ``windows`` skips tokenizing again when the caller has already cut them
    with ``document_windows`` and the same window length.
    """
    settings.validate()
    started = time.perf_counter()
    if windows is None:
        windows = document_windows(document, loaded, settings.window_tokens)
    log.info(
        "summarizing %s: %d tokens in %d windows", document.path.name, windows.total_tokens, len(windows)
    )

    with _memory_advice(loaded, len(windows)):
        memory = encode_windows(
            loaded.model, windows, settings.batch_windows, progress, cancel, settings.precision, settings.threads
        )
        token_ids = generate_from_memory(loaded.model, memory, settings, progress, cancel)
        if cancel is not None:
            cancel.raise_if_cancelled()
        sentences = sentence_sources(loaded, memory, token_ids, windows.windows)
    text = printable(loaded.tokenizer.decode(token_ids, skip_special_tokens=True)).strip()

    seconds = time.perf_counter() - started
    log.info("summarized %s in %.1f s", document.path.name, seconds)
    return Summary(
        file=document.path,
        text=text,
        token_ids=token_ids,
        windows=windows.windows,
        total_tokens=windows.total_tokens,
        pages=document.page_count,
        seconds=seconds,
        model=loaded.name,
        sentences=sentences,
    )


def sentence_sources(
    loaded: LoadedModel, memory: FusedMemory, token_ids: list[int], windows: list[Window]
) -> list[SentenceSource]:
    """Attribute each summary sentence to the windows, and so the pages, it attended to most."""
    frame = (len(loaded.special_prefix), len(loaded.special_suffix))
    shares = window_attention(loaded.model, memory, token_ids, frame)
    if shares is None:
        return []
    sources = []
    for text, chosen in attribute_sentences(loaded.tokenizer, token_ids, shares, windows):
        top = windows[chosen[0]].pages if chosen else None
        sources.append(SentenceSource(text=printable(text), pages=top, windows=chosen))
    return sources

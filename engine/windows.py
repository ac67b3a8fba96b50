"""Cutting a whole document into encoder windows.

The text is tokenized once and cut into consecutive, non-overlapping runs of
content tokens. Each run is framed with the tokenizer's own special tokens, so
every window is a valid encoder input on its own and positions restart at each
window. Nothing is dropped or duplicated: the windows' content tokens, joined
in order, are exactly the document's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from .documents.model import Document
from .errors import EmptyDocumentError


@dataclass(frozen=True)
class Window:
    """One encoder window: content tokens ``[token_start, token_end)`` of the document."""

    index: int
    token_start: int
    token_end: int
    char_start: int  # characters of Document.text the content tokens cover
    char_end: int
    pages: tuple[int, int] | None  # first and last page, 1-based; None without pages

    @property
    def tokens(self) -> int:
        return self.token_end - self.token_start


@dataclass
class Windows:
    """The encoder input of a whole document."""

    input_ids: torch.Tensor  # (windows, window_length), padded with pad_token_id
    attention_mask: torch.Tensor  # (windows, window_length), 0 on padding
    windows: list[Window]
    total_tokens: int  # content tokens of the whole document

    def __len__(self) -> int:
        return len(self.windows)

    def to_json(self) -> list[dict]:
        return [
            {"index": w.index, "tokens": w.tokens, "pages": list(w.pages) if w.pages else None}
            for w in self.windows
        ]


def tokenize_text(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Tokenize ``text`` once, returning token ids and each token's character span.

    Text that looks like a special token (``</s>`` typed into a document) is
    tokenized as plain text, so a document cannot end or restart a window.
    """
    encoding = tokenizer(
        text,
        add_special_tokens=False,
        split_special_tokens=True,
        return_offsets_mapping=True,
        return_attention_mask=False,
        verbose=False,  # the length warning is moot: the ids are cut into windows
    )
    return list(encoding["input_ids"]), [tuple(span) for span in encoding["offset_mapping"]]


def make_windows(
    document: Document,
    tokenizer: PreTrainedTokenizerBase,
    window_tokens: int,
    special_prefix: list[int],
    special_suffix: list[int],
) -> Windows:
    """Cut ``document`` into windows of at most ``window_tokens`` tokens, specials included."""
    ids, offsets = tokenize_text(tokenizer, document.text)
    if not ids:
        raise EmptyDocumentError(
            document.path, "the document has no text to summarize. Check that it is the right file."
        )

    content_per_window = window_tokens - len(special_prefix) - len(special_suffix)
    if content_per_window < 1:
        raise ValueError(f"window of {window_tokens} tokens leaves no room for content")

    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = special_suffix[-1] if special_suffix else 0

    rows: list[list[int]] = []
    windows: list[Window] = []
    for index, start in enumerate(range(0, len(ids), content_per_window)):
        end = min(start + content_per_window, len(ids))
        rows.append(special_prefix + ids[start:end] + special_suffix)
        char_start, char_end = offsets[start][0], offsets[end - 1][1]
        windows.append(
            Window(
                index=index,
                token_start=start,
                token_end=end,
                char_start=char_start,
                char_end=char_end,
                pages=document.page_range(char_start, char_end),
            )
        )

    # Only the last window can be short; pad it to the common length.
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for row_index, row in enumerate(rows):
        input_ids[row_index, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[row_index, : len(row)] = 1
    return Windows(input_ids, attention_mask, windows, total_tokens=len(ids))

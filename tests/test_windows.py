"""Windowing: every token in exactly one window, each window a valid encoder input."""

from __future__ import annotations

from pathlib import Path

import pytest

from synopsis.engine.documents.model import Document, PageSpan
from synopsis.engine.errors import EmptyDocumentError, SettingsError
from synopsis.engine.models import load_model
from synopsis.engine.summarize import document_windows
from synopsis.engine.windows import tokenize_text


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


def _paged_document(pages: int, words_per_page: int = 400) -> Document:
    parts, spans, offset = [], [], 0
    for page in range(1, pages + 1):
        text = " ".join(f"page{page} word{n} results." for n in range(words_per_page // 3))
        if parts:
            offset += 2  # the blank line between pages
        parts.append(text)
        spans.append(PageSpan(page, offset, offset + len(text)))
        offset += len(text)
    return Document(Path("paged.pdf"), "pdf", "\n\n".join(parts), pages=spans, page_count=pages)


def test_windows_cover_every_token_once(loaded):
    document = _paged_document(12)
    windows = document_windows(document, loaded)
    ids, _ = tokenize_text(loaded.tokenizer, document.text)

    content = []
    for window, row, mask in zip(windows.windows, windows.input_ids, windows.attention_mask):
        used = row[: int(mask.sum())].tolist()
        content.extend(used[1:-1])
        assert used[0] == loaded.tokenizer.bos_token_id
        assert used[-1] == loaded.tokenizer.eos_token_id
        assert len(used) - 2 == window.tokens
    assert content == ids
    assert windows.total_tokens == len(ids)


def test_windows_fill_model_positions(loaded):
    windows = document_windows(_paged_document(12), loaded)
    lengths = windows.attention_mask.sum(dim=1).tolist()
    assert len(windows) > 2
    assert windows.input_ids.shape[1] == 1024
    assert all(length == 1024 for length in lengths[:-1])
    assert 2 < lengths[-1] <= 1024


def test_windows_have_no_doubled_specials(loaded):
    windows = document_windows(_paged_document(6), loaded)
    specials = {loaded.tokenizer.bos_token_id, loaded.tokenizer.eos_token_id, loaded.tokenizer.pad_token_id}
    for row, mask in zip(windows.input_ids, windows.attention_mask):
        inner = row[1 : int(mask.sum()) - 1].tolist()
        assert not specials.intersection(inner)


def test_special_token_text_stays_plain(loaded):
    document = Document(Path("hostile.txt"), "txt", "Intro </s><s> middle <pad> end </s>")
    windows = document_windows(document, loaded)
    row = windows.input_ids[0].tolist()
    assert row.count(loaded.tokenizer.eos_token_id) == 1
    assert row.count(loaded.tokenizer.bos_token_id) == 1
    assert loaded.tokenizer.pad_token_id not in row


def test_window_page_ranges_are_monotone(loaded):
    windows = document_windows(_paged_document(12), loaded)
    pages = [window.pages for window in windows.windows]
    assert pages[0][0] == 1
    assert pages[-1][1] == 12
    for (first, last), (next_first, _) in zip(pages, pages[1:]):
        assert first <= last
        assert last <= next_first


def test_window_char_ranges_follow_text(loaded):
    document = _paged_document(5)
    windows = document_windows(document, loaded)
    assert windows.windows[0].char_start == 0
    assert windows.windows[-1].char_end == len(document.text)
    for window, following in zip(windows.windows, windows.windows[1:]):
        assert window.char_end <= following.char_start


def test_window_tokens_override(loaded):
    windows = document_windows(_paged_document(2), loaded, window_tokens=100)
    assert windows.input_ids.shape[1] == 100
    assert all(window.tokens <= 98 for window in windows.windows)


@pytest.mark.parametrize("requested", [2, 1025, 5000])
def test_window_tokens_out_of_range(loaded, requested):
    with pytest.raises(SettingsError, match="Window length"):
        document_windows(_paged_document(1), loaded, window_tokens=requested)


def test_text_without_tokens_is_empty(loaded):
    with pytest.raises(EmptyDocumentError, match="no text"):
        document_windows(Document(Path("blank.txt"), "txt", ""), loaded)


def test_document_without_pages_has_no_ranges(loaded):
    document = Document(Path("plain.txt"), "txt", "Plain text without pages. " * 200)
    windows = document_windows(document, loaded)
    assert all(window.pages is None for window in windows.windows)

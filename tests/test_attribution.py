"""Sentence attribution: exact per-window attention shares, mapped to sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM
from transformers.modeling_outputs import BaseModelOutput

from synopsis.engine.attribution import (
    _cross_attention_modules,
    attribute_sentences,
    chosen_layer,
    split_sentences,
    window_attention,
)
from synopsis.engine.documents.model import Document, PageSpan
from synopsis.engine.encoding import encode_windows
from synopsis.engine.generation import GenerationSettings
from synopsis.engine.models import load_model
from synopsis.engine.summarize import document_windows, summarize_document
from synopsis.engine.windows import Window
from tests.tiny import build_tiny_model


@pytest.fixture(scope="module")
def sharp_dir(tmp_path_factory):
    # Larger weights than BART's default init, so attention is far from uniform.
    return build_tiny_model(tmp_path_factory.mktemp("sharp-attribution"), init_std=0.5)


def _text(sentences: int = 700) -> str:
    return " ".join(f"Sentence {n} reports a finding about sample {n % 17}." for n in range(sentences))


def test_shares_match_eager_attention(sharp_dir):
    loaded = load_model(sharp_dir, device="cpu")
    windows = document_windows(Document(Path("t.txt"), "txt", _text()), loaded)
    memory = encode_windows(loaded.model, windows)
    token_ids = [loaded.model.config.decoder_start_token_id, 0, 57, 300, 1200, 9, 41]
    shares = window_attention(loaded.model, memory, token_ids, frame=(1, 1))

    eager = AutoModelForSeq2SeqLM.from_pretrained(sharp_dir, attn_implementation="eager").eval()
    with torch.inference_mode():
        output = eager(
            encoder_outputs=BaseModelOutput(last_hidden_state=memory.hidden_states),
            attention_mask=memory.attention_mask,
            decoder_input_ids=torch.tensor([token_ids[:-1]]),
            output_attentions=True,
        )
    layer = chosen_layer(len(_cross_attention_modules(eager)))
    weights = output.cross_attentions[layer][0].mean(dim=0)  # (T, N)
    expected, start = [], 0
    for length in memory.window_positions:
        expected.append(weights[:, start + 1 : start + length - 1].sum(dim=-1))
        start += length
    expected = torch.stack(expected, dim=-1)

    assert shares.shape == (len(token_ids) - 1, len(windows))
    torch.testing.assert_close(shares, expected, atol=1e-5, rtol=1e-4)


def test_shares_leave_out_special_positions(sharp_dir):
    loaded = load_model(sharp_dir, device="cpu")
    windows = document_windows(Document(Path("t.txt"), "txt", _text(300)), loaded)
    memory = encode_windows(loaded.model, windows)
    token_ids = [2, 0, 57, 300]
    content = window_attention(loaded.model, memory, token_ids, frame=(1, 1))
    everything = window_attention(loaded.model, memory, token_ids, frame=(0, 0))
    torch.testing.assert_close(everything.sum(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    assert bool((content <= everything + 1e-7).all())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three?", ["One.", "Two!", "Three?"]),
        ("No final stop", ["No final stop"]),
        ("会議は終わった。次は月曜日。", ["会議は終わった。", "次は月曜日。"]),
        ("Version 2.5 shipped. Done.", ["Version 2.5 shipped.", "Done."]),
        ("", []),
    ],
)
def test_split_sentences(text, expected):
    assert [text[a:b] for a, b in split_sentences(text)] == expected


def test_sentences_take_their_tokens_windows(tiny_model_dir):
    loaded = load_model(tiny_model_dir, device="cpu")
    tokenizer = loaded.tokenizer
    first = tokenizer("Alpha beta.", add_special_tokens=False)["input_ids"]
    second = tokenizer(" Gamma delta.", add_special_tokens=False)["input_ids"]
    token_ids = [2, 0] + first + second + [2]
    windows = [Window(i, 0, 1, 0, 1, (i + 1, i + 1)) for i in range(4)]

    shares = torch.zeros(len(token_ids) - 1, 4)
    shares[: 1 + len(first), 1] = 1.0  # tokens of the first sentence attend to window 1
    shares[1 + len(first) :, 3] = 1.0  # the rest to window 3
    result = attribute_sentences(tokenizer, token_ids, shares, windows)

    assert [text for text, _ in result] == ["Alpha beta.", "Gamma delta."]
    assert result[0][1][0] == 1
    assert result[1][1][0] == 3


def test_summary_carries_sentence_pages(sharp_dir):
    loaded = load_model(sharp_dir, device="cpu")
    text = _text()
    half = len(text) // 2
    document = Document(
        Path("t.pdf"), "pdf", text, pages=[PageSpan(1, 0, half), PageSpan(2, half, len(text))], page_count=2
    )
    summary = summarize_document(document, loaded, GenerationSettings(max_tokens=30, min_tokens=30))
    assert summary.sentences
    assert " ".join(s.text for s in summary.sentences).split() == summary.text.split()
    for sentence in summary.sentences:
        assert sentence.windows
        assert sentence.pages == summary.windows[sentence.windows[0]].pages
    assert summary.to_json()["sentences"][0]["pages"] in ([1, 1], [1, 2], [2, 2])

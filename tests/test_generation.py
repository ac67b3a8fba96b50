"""Fusion in the decoder: exact on one window, sensitive to every window."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

from synopsis.engine.documents.model import Document
from synopsis.engine.encoding import encode_windows
from synopsis.engine.errors import Cancelled, SettingsError
from synopsis.engine.generation import GenerationSettings, generate_from_memory
from synopsis.engine.models import load_model
from synopsis.engine.progress import CancellationToken
from synopsis.engine.summarize import document_windows, summarize_document
from tests.tiny import build_tiny_model

SHORT_TEXT = (
    "The committee reviewed the annual budget and approved new funding for rural clinics. "
    "Members asked for quarterly reports on spending and patient outcomes."
)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


def _document(text: str) -> Document:
    return Document(Path("test.txt"), "txt", text)


def _long_text(sentences: int = 900) -> str:
    return " ".join(f"Sentence {n} reports a finding about sample {n % 17}." for n in range(sentences))


@pytest.mark.parametrize("beams", [1, 3])
def test_one_window_equals_model_generate(loaded, beams):
    windows = document_windows(_document(SHORT_TEXT), loaded)
    assert len(windows) == 1
    memory = encode_windows(loaded.model, windows)
    ours = generate_from_memory(loaded.model, memory, GenerationSettings(beams=beams, max_tokens=20))

    with torch.inference_mode():
        reference = loaded.model.generate(
            input_ids=windows.input_ids,
            attention_mask=windows.attention_mask,
            num_beams=beams,
            max_new_tokens=20,
        )
    assert ours == reference[0].tolist()


def test_fused_memory_keeps_each_window_alone(loaded):
    windows = document_windows(_document(_long_text()), loaded)
    assert len(windows) >= 3
    memory = encode_windows(loaded.model, windows, batch_windows=2)
    assert memory.positions == int(windows.attention_mask.sum())

    # The last window, encoded on its own, appears unchanged at the end of the memory.
    length = int(windows.attention_mask[-1].sum())
    with torch.inference_mode():
        alone = loaded.model.get_encoder()(
            input_ids=windows.input_ids[-1:, :length], attention_mask=windows.attention_mask[-1:, :length]
        ).last_hidden_state
    torch.testing.assert_close(memory.hidden_states[0, -length:], alone[0], atol=1e-5, rtol=1e-5)


def test_batching_does_not_change_memory(loaded):
    windows = document_windows(_document(_long_text()), loaded)
    one = encode_windows(loaded.model, windows, batch_windows=1)
    several = encode_windows(loaded.model, windows, batch_windows=3)
    torch.testing.assert_close(one.hidden_states, several.hidden_states, atol=1e-5, rtol=1e-5)


def _next_token_logits(loaded, text: str) -> torch.Tensor:
    windows = document_windows(_document(text), loaded)
    memory = encode_windows(loaded.model, windows)
    decoder_input = torch.tensor([[loaded.model.config.decoder_start_token_id, 0, 100, 200]])
    with torch.inference_mode():
        output = loaded.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=memory.hidden_states),
            attention_mask=memory.attention_mask,
            decoder_input_ids=decoder_input,
        )
    return output.logits[0]


@pytest.fixture(scope="module")
def sharp(tmp_path_factory):
    # BART's default init (std 0.02) makes cross-attention almost uniform, so a
    # one-word change moves logits by ~1e-6; larger weights make the effect
    # stand far above float32 noise without changing what is tested.
    return load_model(build_tiny_model(tmp_path_factory.mktemp("sharp"), init_std=0.5), device="cpu")


def test_decoder_sees_last_window(sharp):
    base = _long_text()
    changed = base[: -len("sample 3.")] + "volcano 3."
    assert len(document_windows(_document(base), sharp)) >= 3

    same = _next_token_logits(sharp, base)
    again = _next_token_logits(sharp, base)
    different = _next_token_logits(sharp, changed)
    assert torch.equal(same, again)
    assert (same - different).abs().max().item() > 1e-2


def test_progress_counts_windows_and_tokens(loaded):
    reports = []
    summary = summarize_document(
        _document(_long_text()),
        loaded,
        GenerationSettings(max_tokens=12, min_tokens=12, beams=1),
        progress=lambda done, total, unit: reports.append((done, total, unit)),
    )
    windows = [r for r in reports if r[2] == "windows"]
    tokens = [r for r in reports if r[2] == "tokens"]
    assert windows[-1] == (len(summary.windows), len(summary.windows), "windows")
    assert tokens[-1] == (12, 12, "tokens")
    assert [done for done, _, _ in tokens] == sorted(done for done, _, _ in tokens)


def test_cancel_during_generation(loaded):
    token = CancellationToken()

    def cancel_after_three(done, total, unit):
        if unit == "tokens" and done >= 3:
            token.cancel()

    with pytest.raises(Cancelled):
        summarize_document(
            _document(SHORT_TEXT),
            loaded,
            GenerationSettings(max_tokens=20, min_tokens=20),
            progress=cancel_after_three,
            cancel=token,
        )


def test_cancel_between_windows(loaded):
    token = CancellationToken()
    seen = []

    def cancel_after_first(done, total, unit):
        seen.append(done)
        if unit == "windows" and done == 1:
            token.cancel()

    windows = document_windows(_document(_long_text()), loaded)
    with pytest.raises(Cancelled):
        encode_windows(loaded.model, windows, batch_windows=1, progress=cancel_after_first, cancel=token)
    assert max(seen) == 1


def test_length_bounds_are_kept(loaded):
    summary = summarize_document(
        _document(_long_text(300)), loaded, GenerationSettings(max_tokens=8, min_tokens=8, beams=2)
    )
    # decoder start token + 8 generated
    assert len(summary.token_ids) == 9


@pytest.mark.parametrize(
    "settings",
    [
        GenerationSettings(max_tokens=0),
        GenerationSettings(min_tokens=10, max_tokens=5),
        GenerationSettings(beams=0),
        GenerationSettings(min_tokens=-1),
    ],
)
def test_invalid_settings_raise(loaded, settings):
    with pytest.raises(SettingsError):
        summarize_document(_document(SHORT_TEXT), loaded, settings)


def test_max_tokens_beyond_decoder_positions(loaded):
    with pytest.raises(SettingsError, match="at most 1023"):
        summarize_document(_document(SHORT_TEXT), loaded, GenerationSettings(max_tokens=5000))


@pytest.mark.parametrize("beams", [1, 4])
@pytest.mark.parametrize("sentences", [8, 900])
def test_shared_attention_matches_generate(sharp, beams, sentences):
    windows = document_windows(_document(_long_text(sentences)), sharp)
    memory = encode_windows(sharp.model, windows)
    settings = GenerationSettings(beams=beams, max_tokens=24, min_tokens=5)
    shared = generate_from_memory(sharp.model, memory, settings)
    plain = generate_from_memory(sharp.model, memory, dataclasses.replace(settings, shared_attention=False))
    assert shared == plain


def test_shared_attention_restores_modules(sharp):
    before = [layer.encoder_attn for layer in sharp.model.get_decoder().layers]
    windows = document_windows(_document(SHORT_TEXT), sharp)
    generate_from_memory(sharp.model, encode_windows(sharp.model, windows), GenerationSettings(max_tokens=4))
    after = [layer.encoder_attn for layer in sharp.model.get_decoder().layers]
    assert after == before


def test_shared_attention_uses_flash_kernel(loaded):
    """Shared cross-attention runs torch's blocked flash kernel, which never holds the whole weight matrix."""
    windows = document_windows(_document(_long_text(300)), loaded)
    memory = encode_windows(loaded.model, windows)
    with torch.profiler.profile(record_shapes=True) as profile:
        generate_from_memory(loaded.model, memory, GenerationSettings(max_tokens=3, beams=2))
    # Keys shaped (1, heads, positions, head_dim): the calls that attend to the whole memory.
    over_memory = [
        event.name
        for event in profile.events()
        if event.name.startswith("aten::_scaled_dot_product")
        and len(event.input_shapes) > 1
        and event.input_shapes[1][2:3] == [memory.positions]
    ]
    assert over_memory
    assert set(over_memory) == {"aten::_scaled_dot_product_flash_attention_for_cpu"}

"""The gradient-cached step equals plain backpropagation through the whole graph."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM
from transformers.modeling_outputs import BaseModelOutput

from synopsis.engine.documents.model import Document
from synopsis.engine.errors import SettingsError
from synopsis.engine.models import load_model
from synopsis.engine.summarize import document_windows
from synopsis.engine.training import cached_backward, choose_precision
from synopsis.engine.training import step as step_module

WINDOW_TOKENS = 32
SEED = 1234
WORDS = (
    "The trial enrolled patients across four regions and measured outcomes at six and twelve months "
    "while the steering group reviewed safety data every quarter and adjusted the protocol twice"
).split()



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    # A model of its own: the tests change its dtype and gradients.
    return AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir)


_DOCUMENTS: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def document_tensors(loaded, windows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (windows, window_length) ids and mask of a text cut into exactly ``windows`` windows, the last short."""
    if windows not in _DOCUMENTS:
        _DOCUMENTS[windows] = _cut_document(loaded, windows)
    return _DOCUMENTS[windows]


def _cut_document(loaded, windows: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Grow the text a word at a time: the first count that reaches the window
    # count leaves the last window short. Start at one word because a tokenizer
    # trained on other text may split the words into many tokens.
    for count in range(1, 4000):
        text = " ".join(WORDS[i % len(WORDS)] for i in range(count))
        cut = document_windows(Document(Path("doc.txt"), "txt", text), loaded, WINDOW_TOKENS)
        lengths = cut.attention_mask.sum(dim=1)
        if len(cut) == windows and lengths[-1] < WINDOW_TOKENS - 4:
            return cut.input_ids, cut.attention_mask
    raise AssertionError(f"no text gives {windows} windows")


def summary_labels(tokenizer) -> torch.Tensor:
    return tokenizer(text_target="Outcomes improved at twelve months.", return_tensors="pt")["input_ids"]


def plain_backward(model, input_ids, attention_mask, labels, chunk_windows) -> torch.Tensor:
    """Backpropagate through one graph: the same chunks encoded in the same order, with grad."""
    encoder = model.get_encoder()
    pieces = []
    for start in range(0, input_ids.shape[0], chunk_windows):
        ids = input_ids[start : start + chunk_windows]
        mask = attention_mask[start : start + chunk_windows]
        lengths = mask.sum(dim=1).tolist()
        width = max(lengths)
        states = encoder(input_ids=ids[:, :width], attention_mask=mask[:, :width]).last_hidden_state
        pieces.extend(states[row, :length] for row, length in enumerate(lengths))
    memory = torch.cat(pieces).unsqueeze(0)
    ones = torch.ones(memory.shape[:2], dtype=torch.long)
    loss = model(encoder_outputs=BaseModelOutput(last_hidden_state=memory), attention_mask=ones, labels=labels).loss
    loss.backward()
    return loss.detach()


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: parameter.grad.detach().clone() for name, parameter in model.named_parameters()}


def run_both(model, input_ids, attention_mask, labels, chunk_windows, **options):
    """Return (plain loss, plain grads, plain RNG after, cached loss, cached grads, cached RNG after)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    plain_loss = plain_backward(model, input_ids, attention_mask, labels, chunk_windows)
    plain = gradients(model)
    plain_rng = torch.get_rng_state()

    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    cached_loss = cached_backward(model, input_ids, attention_mask, labels, chunk_windows, **options)
    cached = gradients(model)
    cached_rng = torch.get_rng_state()
    return plain_loss, plain, plain_rng, cached_loss, cached, cached_rng


def relative_error(cached: torch.Tensor, plain: torch.Tensor) -> float:
    return float((cached - plain).norm() / plain.norm())


def assert_gradients_match(cached: dict, plain: dict, tolerance: float) -> None:
    assert set(cached) == set(plain)
    for name in plain:
        if name.endswith("k_proj.bias"):
            # Zero up to rounding, because softmax ignores a constant added to
            # every score, so only an absolute bound means anything.
            assert (cached[name] - plain[name]).abs().max() < 1e-8, name
            continue
        assert plain[name].norm() > 0, f"{name} got no gradient, so the comparison would be empty"
        assert relative_error(cached[name], plain[name]) < tolerance, name
        assert (cached[name] - plain[name]).abs().max() < tolerance * plain[name].abs().max(), name


@pytest.mark.parametrize(
    "windows, chunk_windows",
    [(1, 1), (2, 1), (7, 1), (7, 2), (7, 3)],
)
def test_cached_equals_plain_float32(loaded, model, windows, chunk_windows):
    model.float().train()
    input_ids, attention_mask = document_tensors(loaded, windows)
    labels = summary_labels(loaded.tokenizer)
    plain_loss, plain, plain_rng, cached_loss, cached, cached_rng = run_both(
        model, input_ids, attention_mask, labels, chunk_windows
    )

    assert torch.equal(cached_loss, plain_loss)
    assert torch.equal(cached_rng, plain_rng)
    assert_gradients_match(cached, plain, 1e-5)


def test_shared_embedding_gets_both_halves(loaded, model):
    # BART ties the encoder and decoder embeddings and the LM head to one matrix.
    model.float().train()
    input_ids, attention_mask = document_tensors(loaded, 7)
    labels = summary_labels(loaded.tokenizer)
    _, plain, _, _, cached, _ = run_both(model, input_ids, attention_mask, labels, 1)

    shared = "model.shared.weight"
    assert model.model.shared.weight is model.lm_head.weight
    assert model.model.shared.weight is model.model.encoder.embed_tokens.weight
    assert relative_error(cached[shared], plain[shared]) < 1e-5
    # Rows of tokens that occur only in the document get gradient from the encoder alone.
    document_only = sorted(set(input_ids.flatten().tolist()) - set(labels.flatten().tolist()))
    assert plain[shared][document_only].norm() > 0
    assert relative_error(cached[shared][document_only], plain[shared][document_only]) < 1e-5


def test_cached_equals_plain_float64(loaded, model):
    model.double().train()
    try:
        input_ids, attention_mask = document_tensors(loaded, 7)
        labels = summary_labels(loaded.tokenizer)
        _, plain, _, _, cached, _ = run_both(model, input_ids, attention_mask, labels, 2)
        assert_gradients_match(cached, plain, 1e-12)
    finally:
        model.float()


def test_without_rng_restore_gradients_differ(loaded, model, monkeypatch):
    model.float().train()
    input_ids, attention_mask = document_tensors(loaded, 7)
    labels = summary_labels(loaded.tokenizer)
    monkeypatch.setattr(step_module.RngState, "restore", lambda self: None)
    _, plain, _, _, cached, _ = run_both(model, input_ids, attention_mask, labels, 1)

    encoder_errors = [relative_error(cached[n], plain[n]) for n in plain if n.startswith("model.encoder.layers.")]
    assert max(encoder_errors) > 1e-2


def test_eval_mode_needs_no_dropout_masks(loaded, model):
    model.float().eval()
    input_ids, attention_mask = document_tensors(loaded, 2)
    labels = summary_labels(loaded.tokenizer)
    _, plain, _, _, cached, _ = run_both(model, input_ids, attention_mask, labels, 1)
    assert_gradients_match(cached, plain, 1e-5)


def test_loss_scale_and_accumulation(loaded, model):
    # Two documents at loss_scale 1/2 accumulate the gradient of their mean loss.
    model.float().eval()
    first = document_tensors(loaded, 2)
    second = document_tensors(loaded, 3)
    labels = summary_labels(loaded.tokenizer)

    model.zero_grad(set_to_none=True)
    loss_a = cached_backward(model, *first, labels, loss_scale=0.5)
    loss_b = cached_backward(model, *second, labels, loss_scale=0.5)
    accumulated = gradients(model)

    model.zero_grad(set_to_none=True)
    plain_a = plain_backward(model, *first, labels, 1)
    plain_b = plain_backward(model, *second, labels, 1)
    summed = gradients(model)

    assert torch.allclose(loss_a, plain_a)
    assert torch.allclose(loss_b, plain_b)
    assert_gradients_match({name: grad * 2 for name, grad in accumulated.items()}, summed, 1e-5)


def test_only_last_backward_syncs(loaded, model):
    model.float().train()
    input_ids, attention_mask = document_tensors(loaded, 7)
    labels = summary_labels(loaded.tokenizer)
    inside = {"now": False}
    seen: dict[str, list[bool]] = {"decoder": [], "encoder": []}

    @contextlib.contextmanager
    def no_sync():
        inside["now"] = True
        try:
            yield
        finally:
            inside["now"] = False

    hooks = [
        model.model.decoder.layers[-1].fc2.weight.register_hook(lambda g: seen["decoder"].append(inside["now"])),
        model.model.encoder.layers[-1].fc2.weight.register_hook(lambda g: seen["encoder"].append(inside["now"])),
    ]
    try:
        model.zero_grad(set_to_none=True)
        cached_backward(model, input_ids, attention_mask, labels, 1, sync_context=no_sync)
    finally:
        for hook in hooks:
            hook.remove()

    assert seen["decoder"] == [True]
    assert seen["encoder"] == [True] * 6 + [False]


def test_non_finite_loss_leaves_gradients_alone(tiny_model_dir, loaded):
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir)
    model.train()
    with torch.no_grad():
        model.final_logits_bias[0, 0] = float("nan")
    input_ids, attention_mask = document_tensors(loaded, 2)
    loss = cached_backward(model, input_ids, attention_mask, summary_labels(loaded.tokenizer))
    assert torch.isnan(loss)
    assert all(parameter.grad is None for parameter in model.parameters())


def test_bf16_autocast_matches_plain_under_same_autocast(loaded, model):
    model.float().train()
    input_ids, attention_mask = document_tensors(loaded, 3)
    labels = summary_labels(loaded.tokenizer)

    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_backward(model, input_ids, attention_mask, labels, 1)
    plain = gradients(model)

    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    cached_backward(model, input_ids, attention_mask, labels, 1, autocast_dtype=torch.bfloat16)
    cached = gradients(model)

    for name in plain:
        assert cached[name].dtype == torch.float32
        if name.endswith("k_proj.bias"):
            continue  # zero up to rounding: softmax ignores a constant added to every score
        assert relative_error(cached[name], plain[name]) < 2e-2, name


def test_chunk_windows_must_be_positive(loaded, model):
    input_ids, attention_mask = document_tensors(loaded, 1)
    with pytest.raises(ValueError, match="chunk_windows"):
        cached_backward(model, input_ids, attention_mask, summary_labels(loaded.tokenizer), 0)


@pytest.mark.parametrize(
    "requested, device_type, bf16_supported, expected",
    [
        ("auto", "cuda", True, "bf16"),
        ("auto", "cuda", False, "fp16"),
        ("auto", "cpu", False, "fp32"),
        ("auto", "mps", False, "fp32"),
        ("fp32", "cuda", True, "fp32"),
        ("bf16", "cpu", False, "bf16"),
        ("bf16", "cuda", True, "bf16"),
        ("fp16", "cuda", True, "fp16"),
    ],
)
def test_precision_choice(requested, device_type, bf16_supported, expected):
    precision = choose_precision(requested, device_type, bf16_supported)
    assert precision.name == expected
    assert precision.grad_scaler == (expected == "fp16")
    assert (precision.autocast_dtype is None) == (expected == "fp32")


@pytest.mark.parametrize(
    "requested, device_type, bf16_supported",
    [("fp16", "cpu", False), ("bf16", "cuda", False), ("bf16", "mps", False), ("fp8", "cuda", True)],
)
def test_precision_rejects_unsupported(requested, device_type, bf16_supported):
    with pytest.raises(SettingsError, match=requested):
        choose_precision(requested, device_type, bf16_supported)


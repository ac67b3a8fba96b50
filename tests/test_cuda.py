"""The accelerator paths: cached step, mixed precision, training and generation on a CUDA device.

Skipped where no CUDA device is present. ``SYNOPSIS_TEST_DEVICE=cpu`` runs
the device-independent parts on the CPU, to check the tests themselves on a
machine without a GPU. ``bench/gpu.sh`` runs this file first on a GPU machine.
"""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from synopsis.engine.encoding import encode_windows
from synopsis.engine.generation import GenerationSettings, generate_from_memory
from synopsis.engine.models import load_model
from synopsis.engine.summarize import document_windows
from synopsis.engine.training import StepEvent, Trainer, cached_backward
from tests.test_cached_backward import (
    SEED,
    assert_gradients_match,
    document_tensors,
    gradients,
    plain_backward,
    relative_error,
    summary_labels,
)
from tests.test_generation import _document, _long_text
from tests.test_trainer import make_pairs, settings


def _test_device() -> str | None:
    requested = os.environ.get("SYNOPSIS_TEST_DEVICE")
    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else None


DEVICE = _test_device()
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no CUDA device (set SYNOPSIS_TEST_DEVICE=cpu to check on the CPU)")
needs_cuda = pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA device")


def rng_state() -> torch.Tensor:
    if DEVICE == "cuda":
        return torch.cuda.get_rng_state()
    return torch.get_rng_state()


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def device_model(tiny_model_dir):
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir).to(DEVICE)
    if DEVICE == "cuda":
        # TF32 matmuls would round the plain and cached passes differently.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return model


def run_both_on_device(model, input_ids, attention_mask, labels, chunk_windows, autocast_dtype=None):
    """Return (plain grads, plain RNG after, cached grads, cached RNG after) with dropout on."""
    input_ids = input_ids.to(DEVICE)
    attention_mask = attention_mask.to(DEVICE)
    labels = labels.to(DEVICE)

    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    if autocast_dtype is None:
        plain_backward_on_device(model, input_ids, attention_mask, labels, chunk_windows)
    else:
        with torch.autocast(DEVICE, dtype=autocast_dtype):
            plain_backward_on_device(model, input_ids, attention_mask, labels, chunk_windows)
    plain = gradients(model)
    plain_rng = rng_state()

    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    cached_backward(model, input_ids, attention_mask, labels, chunk_windows, autocast_dtype=autocast_dtype)
    cached = gradients(model)
    cached_rng = rng_state()
    return plain, plain_rng, cached, cached_rng


def plain_backward_on_device(model, input_ids, attention_mask, labels, chunk_windows):
    # plain_backward builds its decoder mask on the CPU, so hand it a memory-sized
    # mask on the right device through a thin wrapper around the model's forward.
    original = model.forward

    def forward(*args, **kwargs):
        if "attention_mask" in kwargs and kwargs["attention_mask"] is not None:
            kwargs["attention_mask"] = kwargs["attention_mask"].to(DEVICE)
        return original(*args, **kwargs)

    model.forward = forward
    try:
        return plain_backward(model, input_ids, attention_mask, labels, chunk_windows)
    finally:
        del model.forward


def test_cached_equals_plain_on_device(loaded, device_model):
    device_model.float().train()
    input_ids, attention_mask = document_tensors(loaded, 7)
    labels = summary_labels(loaded.tokenizer)
    plain, plain_rng, cached, cached_rng = run_both_on_device(device_model, input_ids, attention_mask, labels, 2)

    # The device RNG must end where the plain forward left it, and the dropout
    # masks must match, or the encoder gradients would differ by about 50%.
    assert torch.equal(cached_rng, plain_rng)
    # Tolerance 1e-4: GPU reductions may sum in a different order between passes.
    assert_gradients_match(cached, plain, 1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_matches_plain_on_device(loaded, device_model, dtype):
    if DEVICE != "cuda" and dtype is torch.float16:
        pytest.skip("float16 autocast is a CUDA path")
    if DEVICE == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    device_model.float().train()
    input_ids, attention_mask = document_tensors(loaded, 3)
    labels = summary_labels(loaded.tokenizer)
    plain, _, cached, _ = run_both_on_device(device_model, input_ids, attention_mask, labels, 1, dtype)

    for name in plain:
        assert cached[name].dtype == torch.float32
        if name.endswith("k_proj.bias"):
            continue  # zero up to rounding: softmax ignores a constant added to every score
        # 2e-2: both passes round to 8 (bf16) or 11 (fp16) mantissa bits, in different orders.
        assert relative_error(cached[name], plain[name]) < 2e-2, name


@pytest.mark.parametrize("precision", ["auto", "fp32", "fp16"])
def test_training_steps_on_device(tiny_model_dir, tmp_path, precision):
    if DEVICE != "cuda" and precision == "fp16":
        pytest.skip("float16 training with a loss scaler is a CUDA path")
    model = load_model(tiny_model_dir, device=DEVICE)
    steps: list[float] = []
    trainer = Trainer(
        model,
        make_pairs(4),
        make_pairs(2, offset=10),
        settings(epochs=1, precision=precision),
        tmp_path / "run",
        on_event=lambda event: steps.append(event.loss) if isinstance(event, StepEvent) else None,
    )
    result = trainer.run()

    assert result.steps == 2
    assert len(steps) == 2
    assert all(math.isfinite(loss) for loss in steps)
    assert (tmp_path / "run" / "last" / "model.safetensors").is_file()
    reloaded = load_model(tmp_path / "run" / "last", device=DEVICE)
    assert reloaded.model.device.type == DEVICE


@pytest.mark.parametrize("beams", [1, 4])
def test_shared_attention_matches_generate_on_device(tiny_model_dir, beams):
    loaded = load_model(tiny_model_dir, device=DEVICE)
    windows = document_windows(_document(_long_text(400)), loaded)
    memory = encode_windows(loaded.model, windows)
    options = GenerationSettings(beams=beams, max_tokens=24, min_tokens=5)
    shared = generate_from_memory(loaded.model, memory, options)
    plain = generate_from_memory(loaded.model, memory, dataclasses.replace(options, shared_attention=False))
    assert shared == plain

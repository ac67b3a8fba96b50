"""Blockwise cross-attention returns the model's own cross-attention output and gradients."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, BartConfig, T5Config, T5ForConditionalGeneration
from transformers.models.bart.modeling_bart import BartAttention

from synopsis.engine.training import cached_backward
from synopsis.engine.training.memory_attention import (
    BlockwiseCrossAttention,
    BlockwiseCrossAttentionModule,
    MemoryAttentionSettings,
    blockwise_attention,
    blockwise_cross_attention,
    dropout_keep_mask,
)

from .test_cached_backward import (
    SEED,
    assert_gradients_match,
    document_tensors,
    gradients,
    plain_backward,
    relative_error,
    summary_labels,
)

pytestmark = pytest.mark.usefixtures("one_thread")


POSITIONS = 37  # memory length; a prime, so most block sizes leave a short last block
TARGETS = 5
BLOCKWISE = MemoryAttentionSettings(mode="blockwise", block_positions=5)


def attention_module(dtype: torch.dtype, dropout: float = 0.0) -> BartAttention:
    config = BartConfig(d_model=48, decoder_attention_heads=4, attention_dropout=dropout)
    torch.manual_seed(0)
    module = BartAttention(48, 4, dropout=dropout, is_decoder=True, config=config, layer_idx=0)
    # Non-zero biases, so their gradients are compared too.
    with torch.no_grad():
        for linear in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
            linear.bias.normal_()
    return module.to(dtype)


def inputs(dtype: torch.dtype, batch: int = 2, memory_batch: int = 1):
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(batch, TARGETS, 48, generator=generator, dtype=dtype).requires_grad_(True)
    memory = torch.randn(memory_batch, POSITIONS, 48, generator=generator, dtype=dtype).requires_grad_(True)
    upstream = torch.randn(batch, TARGETS, 48, generator=generator, dtype=dtype)
    return hidden, memory, upstream


def output_and_gradients(module: torch.nn.Module, hidden, memory, upstream) -> dict[str, torch.Tensor]:
    """Run ``module`` as a decoder layer would and backpropagate ``upstream``; return output and gradients."""
    for tensor in (hidden, memory):
        tensor.grad = None
    module.zero_grad(set_to_none=True)
    output, _ = module(hidden, key_value_states=memory)
    output.backward(upstream)
    results = {"output": output.detach().clone(), "hidden": hidden.grad.clone(), "memory": memory.grad.clone()}
    for name, parameter in module.named_parameters():
        results[name.removeprefix("original.")] = parameter.grad.clone()
    return results


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("block_positions", [1, 5, 16, 37, 64])
@pytest.mark.parametrize("memory_batch", [1, 2])
def test_blockwise_equals_standard(dtype, tolerance, block_positions, memory_batch):
    module = attention_module(dtype)
    hidden, memory, upstream = inputs(dtype, memory_batch=memory_batch)
    standard = output_and_gradients(module, hidden, memory, upstream)
    blockwise = output_and_gradients(BlockwiseCrossAttentionModule(module, block_positions), hidden, memory, upstream)

    assert set(blockwise) == set(standard)
    for name, expected in standard.items():
        if name == "k_proj.bias":
            # Softmax ignores a constant added to every score, so this gradient is zero up to rounding.
            assert blockwise[name].abs().max() < 100 * tolerance, name
            continue
        assert expected.norm() > 0, f"{name} is zero, so the comparison would be empty"
        assert relative_error(blockwise[name], expected) < tolerance, name


def test_gradcheck_float64():
    generator = torch.Generator().manual_seed(2)
    queries = torch.randn(1, 2, 3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(1, 11, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    weights = [torch.randn(8, 8, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    biases = [torch.randn(8, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2)]

    def attend(queries, memory, key_weight, key_bias, value_weight, value_bias):
        return BlockwiseCrossAttention.apply(
            queries, memory, key_weight, key_bias, value_weight, value_bias, 0.5, 4, 0.0, 0, torch.float64
        )

    assert torch.autograd.gradcheck(attend, (queries, memory, weights[0], biases[0], weights[1], biases[1]))


@pytest.mark.parametrize("block_positions", [4, 37])
def test_dropout_masks_agree_in_backward(block_positions):
    # Reference: the model's eager attention with the blockwise masks applied explicitly.
    dropout = 0.3
    module = attention_module(torch.float64, dropout)
    hidden, memory, upstream = inputs(torch.float64, batch=1)
    queries = module.q_proj(hidden).view(1, TARGETS, 4, 12).transpose(1, 2)

    torch.manual_seed(SEED)
    attended = blockwise_attention(queries, memory, module.k_proj, module.v_proj, module.scaling, block_positions, dropout)
    attended.backward(upstream.view(1, TARGETS, 4, 12).transpose(1, 2))
    blockwise = {"memory": memory.grad.clone(), "k": module.k_proj.weight.grad.clone(), "v": module.v_proj.weight.grad.clone()}

    torch.manual_seed(SEED)
    seed = int(torch.randint(0, 2**62, (1,)).item())
    for tensor in (memory, module.k_proj.weight, module.v_proj.weight):
        tensor.grad = None
    queries = module.q_proj(hidden).view(1, TARGETS, 4, 12).transpose(1, 2)
    keys = module.k_proj(memory).view(1, POSITIONS, 4, 12).transpose(1, 2)
    values = module.v_proj(memory).view(1, POSITIONS, 4, 12).transpose(1, 2)
    probabilities = torch.softmax(queries @ keys.transpose(-1, -2) * module.scaling, dim=-1)
    masks = [
        dropout_keep_mask((1, 4, TARGETS, min(block_positions, POSITIONS - start)), dropout, seed, block, memory.device)
        for block, start in enumerate(range(0, POSITIONS, block_positions))
    ]
    keep = torch.cat(masks, dim=-1)
    assert 0 < keep.float().mean() < 1
    reference = (probabilities * keep / (1 - dropout)) @ values
    reference.backward(upstream.view(1, TARGETS, 4, 12).transpose(1, 2))

    assert relative_error(attended.detach(), reference.detach()) < 1e-12
    assert relative_error(blockwise["memory"], memory.grad) < 1e-12
    assert relative_error(blockwise["k"], module.k_proj.weight.grad) < 1e-12
    assert relative_error(blockwise["v"], module.v_proj.weight.grad) < 1e-12


def test_bf16_autocast_close_to_standard():
    module = attention_module(torch.float32)
    hidden, memory, upstream = inputs(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        standard = output_and_gradients(module, hidden, memory, upstream)
        blockwise = output_and_gradients(BlockwiseCrossAttentionModule(module, 8), hidden, memory, upstream)
    for name, expected in standard.items():
        if name == "k_proj.bias":
            continue
        assert blockwise[name].dtype == expected.dtype, name
        assert relative_error(blockwise[name].float(), expected.float()) < 3e-2, name


# The swap in a whole model and in the cached step --------------------------------------


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from synopsis.engine.models import load_model

    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture()
def model(tiny_model_dir):
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir)
    # Exact comparison needs the same attention masks on both sides, and the
    # blockwise path draws its own, so cross-attention dropout is off here.
    # Every other dropout stays on.
    for layer in model.model.decoder.layers:
        layer.encoder_attn.dropout = 0.0
    return model


def run_cached_and_plain(model, input_ids, attention_mask, labels, settings):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    plain_loss = plain_backward(model, input_ids, attention_mask, labels, 1)
    plain = gradients(model)

    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    cached_loss = cached_backward(model, input_ids, attention_mask, labels, 1, memory_attention=settings)
    cached = gradients(model)
    return plain_loss, plain, cached_loss, cached


@pytest.mark.parametrize("block_positions", [5, 64, 4096])
def test_cached_blockwise_equals_plain_float32(loaded, model, block_positions):
    model.float().train()
    input_ids, attention_mask = document_tensors(loaded, 7)
    labels = summary_labels(loaded.tokenizer)
    settings = MemoryAttentionSettings(mode="blockwise", block_positions=block_positions)
    plain_loss, plain, cached_loss, cached = run_cached_and_plain(model, input_ids, attention_mask, labels, settings)

    assert torch.allclose(cached_loss, plain_loss, rtol=1e-6)
    assert_gradients_match(cached, plain, 1e-5)


def test_cached_blockwise_equals_plain_float64(loaded, model):
    model.double().train()
    input_ids, attention_mask = document_tensors(loaded, 7)
    labels = summary_labels(loaded.tokenizer)
    plain_loss, plain, cached_loss, cached = run_cached_and_plain(model, input_ids, attention_mask, labels, BLOCKWISE)

    assert torch.allclose(cached_loss, plain_loss, rtol=1e-12)
    assert_gradients_match(cached, plain, 1e-12)


def test_swap_restores_modules(model):
    originals = [layer.encoder_attn for layer in model.model.decoder.layers]
    with blockwise_cross_attention(model, 100, BLOCKWISE) as swapped:
        assert swapped
        assert all(isinstance(layer.encoder_attn, BlockwiseCrossAttentionModule) for layer in model.model.decoder.layers)
    assert [layer.encoder_attn for layer in model.model.decoder.layers] == originals


@pytest.mark.parametrize(
    "settings, positions, expected",
    [
        (MemoryAttentionSettings(), 8191, False),
        (MemoryAttentionSettings(), 8192, True),
        (MemoryAttentionSettings(mode="standard"), 10**6, False),
        (MemoryAttentionSettings(mode="blockwise"), 1, True),
    ],
)
def test_mode_decides_swap(model, settings, positions, expected):
    with blockwise_cross_attention(model, positions, settings) as swapped:
        assert swapped == expected


def test_padded_memory_rejected(model):
    model.eval()
    memory = torch.randn(1, 9, model.config.d_model)
    mask = torch.ones(1, 9, dtype=torch.long)
    mask[0, -2:] = 0
    decoder_ids = torch.tensor([[model.config.decoder_start_token_id, 5]])
    with blockwise_cross_attention(model, 9, BLOCKWISE), pytest.raises(ValueError, match="padding"):
        model(encoder_outputs=(memory,), attention_mask=mask, decoder_input_ids=decoder_ids, use_cache=False)


def test_other_families_keep_their_attention():
    config = T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    model = T5ForConditionalGeneration(config)
    with blockwise_cross_attention(model, 10**6, BLOCKWISE) as swapped:
        assert not swapped


@pytest.mark.parametrize("field, value", [("mode", "flash"), ("block_positions", 0), ("auto_min_positions", -1)])
def test_invalid_settings_rejected(field, value):
    with pytest.raises(ValueError, match=field.replace("_", " ")):
        MemoryAttentionSettings(**{field: value}).validate()


def test_cached_blockwise_dropout_repeats_with_seed(loaded, tiny_model_dir):
    # With attention dropout the masks differ from the model's own, so the
    # check is that one seed gives one result and that another seed changes
    # it. Only cross-attention is in training mode, so its dropout is the
    # only random draw.
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir).eval()
    for layer in model.model.decoder.layers:
        assert layer.encoder_attn.dropout > 0
        layer.encoder_attn.train()
    input_ids, attention_mask = document_tensors(loaded, 3)
    labels = summary_labels(loaded.tokenizer)
    runs = []
    for seed in (SEED, SEED, SEED + 1):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        loss = cached_backward(model, input_ids, attention_mask, labels, 1, memory_attention=BLOCKWISE)
        runs.append((loss, gradients(model)))

    assert torch.isfinite(runs[0][0])
    assert torch.equal(runs[0][0], runs[1][0])
    for name, grad in runs[0][1].items():
        assert torch.equal(grad, runs[1][1][name]), name
    value_weight = "model.decoder.layers.0.encoder_attn.v_proj.weight"
    assert relative_error(runs[2][1][value_weight], runs[0][1][value_weight]) > 1e-3

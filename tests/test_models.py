"""Model loading: safe formats only, encoder-decoders only, clear errors."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, T5Config

from synopsis.engine.errors import (
    ModelError,
    ModelNotFoundError,
    NotEncoderDecoderError,
    SettingsError,
    UnsafeWeightsError,
)
from synopsis.engine.models import (
    RELATIVE_POSITION_WINDOW,
    encoder_position_limit,
    load_model,
    resolve_device,
)


def test_tiny_model_loads(tiny_model_dir):
    loaded = load_model(tiny_model_dir, device="cpu")
    assert loaded.max_window_tokens == 1024
    assert loaded.special_prefix == [loaded.tokenizer.bos_token_id]
    assert loaded.special_suffix == [loaded.tokenizer.eos_token_id]
    assert not loaded.model.training


def test_missing_folder(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_model(tmp_path / "no-such-model")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(tmp_path)


def test_pickled_weights_rejected(tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeWeightsError, match="pytorch_model.bin"):
        load_model(folder)


def test_decoder_only_rejected(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=100)).save_pretrained(tmp_path)
    with pytest.raises(NotEncoderDecoderError, match="not an encoder-decoder"):
        load_model(tmp_path)


def test_encoder_only_rejected(tmp_path):
    config = BertConfig(num_hidden_layers=1, num_attention_heads=2, hidden_size=16, intermediate_size=32, vocab_size=100)
    BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(NotEncoderDecoderError, match="not an encoder-decoder"):
        load_model(tmp_path)


def test_uncached_hub_model_offline():
    # The test session runs with HF_HUB_OFFLINE=1 and an empty cache.
    with pytest.raises(ModelNotFoundError, match="--model PATH"):
        load_model("facebook/bart-large-cnn")


def test_relative_position_window(tiny_model_dir):
    tokenizer = load_model(tiny_model_dir).tokenizer
    assert encoder_position_limit(T5Config(), tokenizer) == RELATIVE_POSITION_WINDOW


def test_auto_device_is_cpu_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert resolve_device(None).type == "cpu"
    assert resolve_device("auto").type == "cpu"


def test_unavailable_cuda_is_model_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(ModelError, match="--device cpu"):
        resolve_device("cuda")


def test_unknown_device_is_settings_error():
    with pytest.raises(SettingsError, match="Unknown device"):
        resolve_device("quantum")


def test_t5_summarization_defaults(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_ff=32,
        d_kv=8,
        num_layers=1,
        num_heads=2,
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        task_specific_params={"summarization": {"prefix": "summarize: ", "num_beams": 3, "min_length": 7}},
    )
    T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    loaded = load_model(tmp_path)
    prefix_ids = tokenizer("summarize: ", add_special_tokens=False)["input_ids"]
    assert loaded.max_window_tokens == RELATIVE_POSITION_WINDOW
    assert loaded.special_prefix[-len(prefix_ids):] == prefix_ids
    assert loaded.model.generation_config.num_beams == 3
    assert loaded.model.generation_config.min_length == 7


def test_folder_without_tokenizer(tiny_model_dir, tmp_path):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_model_dir, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(ModelNotFoundError, match="no tokenizer files"):
        load_model(folder)


def test_damaged_weights_are_model_error(tiny_model_dir, tmp_path):
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="damaged"):
        load_model(folder)

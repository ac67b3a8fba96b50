"""A tiny random BART and a byte-level BPE tokenizer, built offline for tests.

The model has BART's real architecture and a 1024-position encoder, so
windowing, fusion and generation run exactly as they would on bart-large-cnn,
only with random weights and a few small layers.
"""

from __future__ import annotations

import json
import pydoc
import sys
import tempfile
from pathlib import Path

from tokenizers import ByteLevelBPETokenizer
from transformers import BartConfig, BartForConditionalGeneration, BartTokenizerFast, GenerationConfig

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def training_text() -> list[str]:
    """Return local text to train the tokenizer on: the corpus pairs, else stdlib docs."""
    pairs = CORPUS / "pairs" / "pmc_articles.jsonl"
    if pairs.is_file():
        with pairs.open(encoding="utf-8") as lines:
            return [json.loads(line)["document"] for line in lines]
    names = sorted(sys.stdlib_module_names)[:200]
    texts = []
    for name in names:
        try:
            texts.append(pydoc.render_doc(name, renderer=pydoc.plaintext))
        except Exception:  # noqa: BLE001 - some modules do not import everywhere
            continue
    return texts


def build_tokenizer(vocab_size: int = 2000) -> BartTokenizerFast:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(training_text(), vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS)
    with tempfile.TemporaryDirectory() as folder:
        bpe.save_model(folder)
        # from_pretrained on the folder, not vocab_file=/merges_file=, which
        # build a 5-token vocabulary in transformers 5.
        return BartTokenizerFast.from_pretrained(folder, model_max_length=1024)


def build_tiny_model(folder: Path, dropout: float = 0.1, **overrides) -> Path:
    """Save a tiny random BART with its tokenizer in save_pretrained layout; return ``folder``."""
    tokenizer = build_tokenizer()
    settings = dict(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=1024,
        dropout=dropout,
        attention_dropout=dropout,
        activation_dropout=dropout,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
    )
    settings.update(overrides)
    config = BartConfig(**settings)
    model = BartForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        forced_bos_token_id=config.bos_token_id,
        forced_eos_token_id=config.eos_token_id,
        num_beams=2,
        max_length=24,
        min_length=4,
        length_penalty=1.0,
        no_repeat_ngram_size=3,
        early_stopping=True,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build the tiny random test model into a folder.")
    parser.add_argument("folder", type=Path)
    print(build_tiny_model(parser.parse_args().folder))

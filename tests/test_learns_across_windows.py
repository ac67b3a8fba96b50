"""End to end: fine-tuning learns a summary that needs a fact from every window.

Each document has three windows. Window k repeats one key word drawn
uniformly from its own list of K words, and the summary is the three key
words in order. A model that reads only the first window can predict the first
key word but not the other two, so its expected loss is at least
(windows - 1) * ln(K) nats spread over the summary's label tokens. Training
through the gradient-cached step must take the loss well below that bound.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from synopsis.engine.documents.model import Document
from synopsis.engine.encoding import encode_windows
from synopsis.engine.generation import GenerationSettings
from synopsis.engine.models import load_model
from synopsis.engine.pairs import Pair
from synopsis.engine.summarize import document_windows
from synopsis.engine.training import Trainer, TrainingSettings
from synopsis.engine.training.examples import summary_labels
from synopsis.engine.training.step import decoder_loss
from tests.tiny import build_tiny_model

WINDOWS = 3
WORDS_PER_WINDOW = 4  # K
WINDOW_TOKENS = 16  # 14 content tokens between <s> and </s>
TRAIN_PAIRS = 1200
VALIDATION_PAIRS = 32
MARGIN = 0.25  # the trained loss must be below a quarter of the first-window bound


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, one_thread):
    # Dropout off and a fixed initialization, so the run takes the same path
    # every time. At d_model 32, two of three initializations kept the loss at
    # the marginal entropy through 1,500 steps. At 64, four of four were below
    # 0.06 nats per token by step 500.
    torch.manual_seed(0)
    folder = build_tiny_model(
        tmp_path_factory.mktemp("tiny-bart-no-dropout"),
        dropout=0.0,
        d_model=64,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
    )
    return load_model(folder, device="cpu")


def key_word_lists(tokenizer) -> list[list[str]]:
    """Return disjoint lists of words that are each one token after a space, one list per window."""
    vocabulary = tokenizer.get_vocab()
    words = sorted(
        token[1:]
        for token in vocabulary
        if token.startswith("Ġ") and token[1:].isalpha() and token[1:].islower() and len(token) >= 5
    )
    random.Random(0).shuffle(words)
    return [words[k * WORDS_PER_WINDOW : (k + 1) * WORDS_PER_WINDOW] for k in range(WINDOWS)]


def make_pair(keys: list[list[str]], rng: random.Random, index: int) -> Pair:
    chosen = [rng.choice(words) for words in keys]
    content = WINDOW_TOKENS - 2
    # The leading space makes every word the single "Ġword" token, so each
    # window contains exactly one word repeated and the windows align with the words.
    document = " " + " ".join(word for word in chosen for _ in range(content))
    return Pair(f"synthetic {index}", document, " " + " ".join(chosen))


def mean_loss(loaded, pairs: list[Pair], first_window_only: bool) -> float:
    model = loaded.model
    model.eval()
    losses = []
    for pair in pairs:
        windows = document_windows(Document(Path(pair.source), "txt", pair.document), loaded, WINDOW_TOKENS)
        if first_window_only:
            windows.input_ids = windows.input_ids[:1]
            windows.attention_mask = windows.attention_mask[:1]
            windows.windows = windows.windows[:1]
        memory = encode_windows(model, windows)
        with torch.inference_mode():
            losses.append(float(decoder_loss(model, memory.hidden_states, summary_labels(loaded, pair))))
    return sum(losses) / len(losses)


def exact_match(predictions: list[str], references: list[str]) -> dict[str, float]:
    return {"exact": sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / len(predictions)}


def test_loss_falls_below_first_window_bound(loaded, tmp_path):
    keys = key_word_lists(loaded.tokenizer)
    rng = random.Random(1)
    train = [make_pair(keys, rng, i) for i in range(TRAIN_PAIRS)]
    validation = [make_pair(keys, rng, TRAIN_PAIRS + i) for i in range(VALIDATION_PAIRS)]

    # The task is what it claims: three windows, each starting with its key word.
    sample = document_windows(Document(Path("sample"), "txt", train[0].document), loaded, WINDOW_TOKENS)
    assert len(sample) == WINDOWS
    first_words = [loaded.tokenizer.decode(sample.input_ids[k, 1]).strip() for k in range(WINDOWS)]
    assert first_words == train[0].summary.split()
    label_tokens = summary_labels(loaded, train[0]).shape[1]
    assert label_tokens == WINDOWS + 2  # <s>, one token per key word, </s>
    bound = (WINDOWS - 1) * math.log(WORDS_PER_WINDOW) / label_tokens  # nats per label token

    settings = TrainingSettings(
        epochs=1,
        accumulate=1,
        learning_rate=1e-3,
        warmup_fraction=0.05,
        eval_every=TRAIN_PAIRS,
        best_metric="loss",
        window_tokens=WINDOW_TOKENS,
        eval_generation=GenerationSettings(max_tokens=6, beams=1),
        seed=0,
    )
    result = Trainer(loaded, train, validation, settings, tmp_path, metric_fn=exact_match).run()
    assert result.steps == TRAIN_PAIRS

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    validation_loss = [row["eval"]["loss"] for row in rows if "eval" in row][-1]
    assert validation_loss < MARGIN * bound, f"validation loss {validation_loss:.3f}, bound {bound:.3f}"

    # The trained model leans on the later windows: without them it does worse than the bound.
    assert mean_loss(loaded, validation, first_window_only=True) > bound
    assert mean_loss(loaded, validation, first_window_only=False) == pytest.approx(validation_loss, rel=1e-4)

"""Evaluating the model being trained: teacher-forced loss and a summary metric on validation pairs."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..encoding import encode_windows
from ..generation import GenerationSettings, generate_from_memory
from ..models import LoadedModel
from ..pairs import Pair
from ..progress import CancellationToken
from .events import EvaluationExample
from .examples import prepare_example
from .step import autocast_context, decoder_loss

log = logging.getLogger(__name__)

MetricFn = Callable[[list[str], list[str]], dict[str, float]]
EXCERPT_CHARACTERS = 300
SHOWN_EXAMPLES = 3


def default_metric(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Return ROUGE-1/2/L/Lsum F1; imported on first use so the trainer loads without the scorer."""
    from ..evaluation import rouge_scores

    return rouge_scores(predictions, references)


@dataclass
class Evaluation:
    """Metrics over the validation pairs, and the pairs that scored best and worst."""

    metrics: dict[str, float]  # "loss" plus the metric function's keys, each a mean over pairs
    best_examples: list[EvaluationExample]
    worst_examples: list[EvaluationExample]


def evaluate(
    loaded: LoadedModel,
    pairs: list[Pair],
    window_tokens: int | None,
    generation: GenerationSettings,
    metric_fn: MetricFn,
    ranking_metric: str,
    higher_is_better: bool,
    autocast_dtype: torch.dtype | None,
    cancel: CancellationToken | None = None,
) -> Evaluation:
    """Score ``loaded.model`` on ``pairs`` in eval mode, restoring its previous mode afterwards.

    Each pair's summary is generated from the fused memory of the whole
    document, as the summarize path does. ``ranking_metric`` picks which value
    ranks pairs into best and worst examples.
    """
    model = loaded.model
    was_training = model.training
    model.eval()
    losses, generated, references, rows = [], [], [], []
    try:
        for pair in pairs:
            if cancel is not None:
                cancel.raise_if_cancelled()
            example = prepare_example(pair, loaded, window_tokens)
            with autocast_context(model.device, autocast_dtype):
                memory = encode_windows(model, example.windows, generation.batch_windows)
                with torch.inference_mode():
                    loss = decoder_loss(model, memory.hidden_states, example.labels.to(model.device))
                token_ids = generate_from_memory(model, memory, generation)
            losses.append(float(loss))
            generated.append(loaded.tokenizer.decode(token_ids, skip_special_tokens=True).strip())
            references.append(pair.summary)
    finally:
        model.train(was_training)

    metrics = {"loss": sum(losses) / len(losses)}
    metrics.update(metric_fn(generated, references))

    # Rank the pairs by their own score to show what the model does well and badly.
    for pair, loss, text in zip(pairs, losses, generated):
        score = loss if ranking_metric == "loss" else metric_fn([text], [pair.summary]).get(ranking_metric, math.nan)
        rows.append(
            EvaluationExample(
                source=pair.source,
                document_excerpt=pair.document[:EXCERPT_CHARACTERS],
                reference=pair.summary,
                generated=text,
                score=float(score),
            )
        )
    rows.sort(key=lambda row: row.score, reverse=higher_is_better)
    best = rows[:SHOWN_EXAMPLES]
    worst = list(reversed(rows[-SHOWN_EXAMPLES:]))
    log.info("evaluation on %d pairs: %s", len(pairs), ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return Evaluation(metrics, best, worst)

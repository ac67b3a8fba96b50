"""Generating a summary from the fused memory of all windows.

The decoder cross-attends to every window's encoder states at once, so the
whole document shapes every summary token. Decoding runs through the model's
own ``generate`` with the model's generation config as the default, which
keeps the output identical to ``model.generate`` on a one-window document.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedModel, StoppingCriteria, StoppingCriteriaList
from transformers.modeling_outputs import BaseModelOutput

from .encoding import FusedMemory
from .errors import SettingsError
from .progress import CancellationToken, ProgressFn, ignore_progress
from .shared_attention import shared_cross_attention, supports_shared_attention
from .speed import PRECISIONS, decoding_threads, torch_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """Overrides of the model's generation config; None keeps the model's value."""

    max_tokens: int | None = None  # maximum summary tokens to generate
    min_tokens: int | None = None  # minimum summary tokens before the end token is allowed
    beams: int | None = None
    length_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    window_tokens: int | None = None  # window length, special tokens included
    batch_windows: int | None = None  # windows encoded per batch
    # Project cross-attention keys and values once for all beams (BART-style
    # models); False runs model.generate's own per-beam attention.
    shared_attention: bool = True
    # Number format of the encoder, one of speed.PRECISIONS; the decoder runs in float32.
    precision: str = "auto"
    threads: int | None = None  # torch CPU threads; None: speed.encoding_threads() and decoding_threads()

    def validate(self) -> None:
        for name in ("max_tokens", "beams", "window_tokens", "batch_windows", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SettingsError(f"{name.replace('_', ' ')} must be at least 1, got {value}.")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision '{self.precision}' is unknown: use one of {', '.join(PRECISIONS)}.")
        if self.min_tokens is not None and self.min_tokens < 0:
            raise SettingsError(f"min tokens must be 0 or more, got {self.min_tokens}.")
        if self.no_repeat_ngram_size is not None and self.no_repeat_ngram_size < 0:
            raise SettingsError(f"no-repeat n-gram size must be 0 or more, got {self.no_repeat_ngram_size}.")
        if (
            self.min_tokens is not None
            and self.max_tokens is not None
            and self.min_tokens > self.max_tokens
        ):
            raise SettingsError(
                f"min tokens ({self.min_tokens}) is larger than max tokens ({self.max_tokens})."
            )


def decoder_position_limit(model: PreTrainedModel) -> int | None:
    """Return the decoder's position count, or None when it uses relative positions as T5 does."""
    config = model.config
    limit = getattr(config, "max_decoder_position_embeddings", None)
    return limit if limit is not None else getattr(config, "max_position_embeddings", None)


def build_generation_config(model: PreTrainedModel, settings: GenerationSettings) -> GenerationConfig:
    """Return the model's generation config with ``settings`` applied on top."""
    settings.validate()
    limit = decoder_position_limit(model)
    # The decoder start token takes one position.
    if settings.max_tokens is not None and limit is not None and settings.max_tokens > limit - 1:
        raise SettingsError(
            f"max tokens {settings.max_tokens} is more than this model's decoder can produce: "
            f"use at most {limit - 1}."
        )
    config = copy.deepcopy(model.generation_config)
    # An encoder-decoder's max_length and min_length count the decoder start
    # token, so N summary tokens are a length of N + 1.
    if settings.max_tokens is not None:
        config.max_new_tokens = None
        config.max_length = settings.max_tokens + 1
        # A model default minimum above the requested maximum would win over it.
        if settings.min_tokens is None and (config.min_length or 0) > config.max_length:
            config.min_length = config.max_length
    if settings.min_tokens is not None:
        config.min_new_tokens = None
        config.min_length = settings.min_tokens + 1
    if settings.beams is not None:
        config.num_beams = settings.beams
    if settings.length_penalty is not None:
        config.length_penalty = settings.length_penalty
    if settings.no_repeat_ngram_size is not None:
        config.no_repeat_ngram_size = settings.no_repeat_ngram_size
    return config


def max_new_tokens(config: GenerationConfig) -> int:
    """Return the most tokens ``config`` lets generate produce (the decoder start excluded)."""
    if config.max_new_tokens is not None:
        return int(config.max_new_tokens)
    return max(int(config.max_length or 20) - 1, 1)


class _ProgressAndCancel(StoppingCriteria):
    """Reports tokens generated after every decoding step and raises on cancel."""

    def __init__(self, start_length: int, total: int, progress: ProgressFn, cancel: CancellationToken | None):
        self.start_length = start_length
        self.total = total
        self.progress = progress
        self.cancel = cancel

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        done = min(input_ids.shape[-1] - self.start_length, self.total)
        self.progress(done, self.total, "tokens")
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def generate_from_memory(
    model: PreTrainedModel,
    memory: FusedMemory,
    settings: GenerationSettings = GenerationSettings(),
    progress: ProgressFn = ignore_progress,
    cancel: CancellationToken | None = None,
) -> list[int]:
    """Decode a summary that cross-attends to the whole fused memory; return its token ids.

    Progress is reported in tokens generated; ``cancel`` is checked before every
    decoding step. On a CPU, torch uses ``settings.threads`` threads, by
    default ``speed.decoding_threads()``.
    """
    config = build_generation_config(model, settings)
    total = max_new_tokens(config)
    criteria = StoppingCriteriaList([_ProgressAndCancel(1, total, progress, cancel)])

    progress(0, total, "tokens")
    shared = settings.shared_attention and supports_shared_attention(model, memory)
    with contextlib.ExitStack() as stack:
        if memory.hidden_states.device.type == "cpu":
            stack.enter_context(torch_threads(settings.threads or decoding_threads()))
        states = memory.hidden_states
        if shared:
            states = stack.enter_context(shared_cross_attention(model, memory))
        stack.enter_context(torch.inference_mode())
        # generate() expands the encoder outputs per beam in place, so each
        # call gets a fresh wrapper.
        output = model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=states),
            attention_mask=memory.attention_mask,
            generation_config=config,
            stopping_criteria=criteria,
        )
    tokens = output[0].tolist()
    log.debug("generated %d tokens with %d beams", len(tokens), config.num_beams)
    progress(total, total, "tokens")
    return tokens

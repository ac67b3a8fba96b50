"""A quick check of pairs and settings before fine-tuning, with memory and time estimates.

It validates the settings, tokenizes every pair with the model's tokenizer
and counts windows. It rejects pairs the model cannot train on (a summary
longer than the decoder's positions, a document with no tokens), then
estimates the peak memory and the time of one epoch. It runs in seconds, so
mistakes surface before hours of training rather than during them.

The memory estimate comes from the analytic model in ``cost_model``. The
time estimate scales one measured forward and backward pass on the model by
the step's floating-point operation count. Neither accounts for evaluation,
which generates a summary per validation pair, and both are estimates, not
promises.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import asdict, dataclass

import torch

from .cost_model import (
    GIB,
    MemoryEstimate,
    ModelShape,
    activation_bytes,
    available_memory,
    estimate_step_memory,
    process_runtime_bytes,
)
from .counts import count
from .documents.limits import input_tokens_reason
from .errors import SettingsError
from .generation import build_generation_config, decoder_position_limit, max_new_tokens
from .models import LoadedModel
from .pairs import Pair, RejectedPair, document_fingerprint
from .progress import CancellationToken, ProgressFn, ignore_progress
from .training.memory_attention import MemoryAttentionSettings, supports_blockwise
from .training.plan import planned_total_steps, steps_per_epoch
from .training.precision import precision_for
from .training.settings import TrainingSettings
from .training.step import autocast_context

log = logging.getLogger(__name__)

TOKENIZE_BATCH = 16  # documents tokenized per call: enough for the fast tokenizer's threads, little memory
PROBE_WINDOW_TOKENS = 256  # encoder tokens of the speed probe, kept small so the probe takes about a second
PROBE_SUMMARY_TOKENS = 32
_PROBE_TEXT = "The committee reviewed the annual report, discussed the budget and agreed on three next steps. "

# Floating-point operations per second assumed when the speed is not measured.
# They are deliberately low: a 2-core laptop CPU, a mid-range GPU.
ASSUMED_FLOPS = {"cpu": 5e10, "cuda": 2e13, "mps": 3e12}


# Pair lengths -----------------------------------------------------------------


@dataclass(frozen=True)
class PairLengths:
    """Token counts of one pair as the trainer will see it."""

    source: str
    split: str  # "train" or "validation"
    document_tokens: int  # content tokens, without special tokens
    windows: int
    memory_positions: int  # fused memory length: content plus each window's special tokens
    summary_tokens: int  # label length, special tokens included
    problem: str | None = None  # why the model cannot train on the pair; None when it can


def _document_token_counts(loaded: LoadedModel, texts: list[str]) -> list[int]:
    # The same call as windows.tokenize_text, in batches, keeping only the counts.
    encoded = loaded.tokenizer(
        texts,
        add_special_tokens=False,
        split_special_tokens=True,
        return_attention_mask=False,
        verbose=False,
    )
    return [len(ids) for ids in encoded["input_ids"]]


def _summary_token_counts(loaded: LoadedModel, texts: list[str]) -> list[int]:
    encoded = loaded.tokenizer(text_target=texts, return_attention_mask=False, verbose=False)
    return [len(ids) for ids in encoded["input_ids"]]


def measure_lengths(
    loaded: LoadedModel,
    pairs: list[Pair],
    split: str,
    window_tokens: int,
    progress: ProgressFn = ignore_progress,
    cancel: CancellationToken | None = None,
    done_before: int = 0,
    total: int | None = None,
) -> list[PairLengths]:
    """Tokenize every pair and count its windows; progress is in pairs tokenized."""
    specials = len(loaded.special_prefix) + len(loaded.special_suffix)
    content_per_window = window_tokens - specials
    total = total if total is not None else len(pairs)
    lengths: list[PairLengths] = []
    for start in range(0, len(pairs), TOKENIZE_BATCH):
        if cancel is not None:
            cancel.raise_if_cancelled()
        batch = pairs[start : start + TOKENIZE_BATCH]
        documents = _document_token_counts(loaded, [pair.document for pair in batch])
        summaries = _summary_token_counts(loaded, [pair.summary for pair in batch])
        for pair, document_tokens, summary_tokens in zip(batch, documents, summaries):
            windows = math.ceil(document_tokens / content_per_window)
            lengths.append(
                PairLengths(
                    source=pair.source,
                    split=split,
                    document_tokens=document_tokens,
                    windows=windows,
                    memory_positions=document_tokens + windows * specials,
                    summary_tokens=summary_tokens,
                )
            )
        progress(done_before + start + len(batch), total, "pairs")
    return lengths


# Speed ------------------------------------------------------------------------


def measure_flops_per_second(
    loaded: LoadedModel, shape: ModelShape, autocast_dtype: torch.dtype | None, window_tokens: int
) -> float:
    """Time one forward and backward pass on a short input and return the FLOP/s it reached.

    The first pass warms up and is not timed, and the fastest of the next
    three counts, because one pass on a busy machine can stall many times
    over. The model's training flag, its gradients and the torch RNG are left
    as they were. A short probe runs less efficiently than full windows, so
    the result errs low.
    """
    model = loaded.model
    device = loaded.device
    tokens = min(PROBE_WINDOW_TOKENS, window_tokens)
    # Ids of ordinary text, because some tokenizers (T5's) put special tokens at the top of the vocabulary.
    text_ids = loaded.tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"]
    repeated = text_ids * (tokens // len(text_ids) + 1)
    input_ids = torch.tensor([repeated[:tokens]], device=device)
    labels = torch.tensor([repeated[:PROBE_SUMMARY_TOKENS]], device=device)
    flops = 3 * (shape.encoder_flops(1, tokens) + shape.decoder_flops(tokens, PROBE_SUMMARY_TOKENS))

    was_training = model.training
    saved_grads = {
        name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None
    }
    rng_state = torch.get_rng_state()
    model.train()
    try:
        seconds = math.inf
        for attempt in range(4):
            _synchronize(device)
            started = time.perf_counter()
            with autocast_context(device, autocast_dtype):
                loss = model(input_ids=input_ids, labels=labels, use_cache=False).loss
            loss.backward()
            _synchronize(device)
            if attempt > 0:
                seconds = min(seconds, time.perf_counter() - started)
    finally:
        model.train(was_training)
        torch.set_rng_state(rng_state)
        for name, parameter in model.named_parameters():
            parameter.grad = saved_grads.get(name)
    return flops / max(seconds, 1e-6)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# The check --------------------------------------------------------------------


@dataclass
class PreflightReport:
    """Findings of the pre-flight check: per-pair lengths, rejected pairs, warnings and estimates."""

    model: str
    device: str
    precision: str
    window_tokens: int
    decoder_positions: int | None  # labels the decoder takes, special tokens included; None: no limit
    lengths: list[PairLengths]
    rejected: list[RejectedPair]
    warnings: list[str]
    memory: MemoryEstimate | None  # the largest training pair's step; None without training pairs
    memory_pair: str | None  # that pair's source
    evaluation_memory: int | None  # estimated peak while generating for the largest validation pair
    available_memory: int | None
    flops_per_second: float | None  # None when the model's sizes are unknown
    speed_measured: bool
    steps_per_epoch: int
    total_steps: int
    seconds_per_epoch: float | None  # training steps only, evaluation excluded; None when not estimated
    seconds_total: float | None  # all steps of the run, evaluation excluded; None when not estimated

    @property
    def train(self) -> list[PairLengths]:
        return [pair for pair in self.lengths if pair.split == "train"]

    @property
    def validation(self) -> list[PairLengths]:
        return [pair for pair in self.lengths if pair.split == "validation"]

    @property
    def problems(self) -> list[str | None]:
        """Each pair's problem, or None, training pairs first, in the order they were given."""
        return [pair.problem for pair in self.lengths]

    @property
    def peak_memory(self) -> int | None:
        candidates = [value for value in (self.memory.total if self.memory else None, self.evaluation_memory) if value]
        return max(candidates) if candidates else None

    def to_json(self) -> dict:
        data = asdict(self)
        data["memory"] = self.memory.to_json() if self.memory else None
        data["rejected"] = [{"source": r.source, "reason": r.reason} for r in self.rejected]
        data["peak_memory"] = self.peak_memory
        return data


def _split_totals(pairs: list[PairLengths]) -> str:
    tokens = sum(pair.document_tokens for pair in pairs)
    windows = sum(pair.windows for pair in pairs)
    longest = max((pair.document_tokens for pair in pairs), default=0)
    summary = max((pair.summary_tokens for pair in pairs), default=0)
    return (
        f"{count(len(pairs), 'pair')}, {tokens:,} document tokens in {count(windows, 'window')} "
        f"(longest {count(longest, 'token')}), summaries up to {count(summary, 'token')}"
    )


def format_report(report: PreflightReport) -> list[str]:
    """Return the report as lines for a terminal."""
    lines = [
        f"Model:       {report.model} on {report.device}, {report.precision}, windows of {report.window_tokens} tokens",
        f"Training:    {_split_totals(report.train)}",
    ]
    if report.validation:
        lines.append(f"Validation:  {_split_totals(report.validation)}")
    if report.memory is not None:
        memory = report.memory
        lines.append(
            f"Memory:      about {_size(report.peak_memory)} at peak (estimate: weights, gradients and "
            f"optimizer {_size(memory.weights + memory.gradients + memory.optimizer)}, "
            f"decoder over the longest document {_size(memory.decoder)})"
        )
        if report.available_memory is not None:
            lines.append(f"             {_size(report.available_memory)} available")
    speed = "measured" if report.speed_measured else "assumed"
    if report.seconds_per_epoch is None:
        lines.append(f"Time:        not estimated; {count(report.total_steps, 'step')}")
    else:
        lines.append(
            f"Time:        about {_duration(report.seconds_per_epoch)} per epoch, {_duration(report.seconds_total)} "
            f"for {count(report.total_steps, 'step')} (estimate from {speed} speed, {report.flops_per_second / 1e9:.3g} "
            "GFLOP/s; evaluation not included)"
        )
    lines.extend(f"Warning:     {warning}" for warning in report.warnings)
    return lines


def _size(size: int) -> str:
    if size < GIB:
        return f"{size / 1024**2:.0f} MiB"
    return f"{size / GIB:.1f} GiB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def count_steps(train_pairs: int, settings: TrainingSettings, world_size: int = 1) -> tuple[int, int]:
    """Return optimizer steps per epoch and in the whole run of ``world_size`` processes, as ``--max-steps`` caps them."""
    if not train_pairs:
        return 0, settings.max_steps or 0
    return steps_per_epoch(train_pairs, settings.accumulate, world_size), planned_total_steps(
        train_pairs, settings, world_size
    )


def preflight(
    loaded: LoadedModel,
    train_pairs: list[Pair],
    validation_pairs: list[Pair],
    settings: TrainingSettings,
    rejected: list[RejectedPair] | None = None,
    measure_speed: bool = True,
    progress: ProgressFn = ignore_progress,
    cancel: CancellationToken | None = None,
    max_input_tokens: int | None = None,
    world_size: int = 1,
) -> PreflightReport:
    """Check ``settings`` and every pair against ``loaded``, and estimate memory and time.

    Settings that cannot work raise SettingsError before any pair is read.
    Pairs the model cannot train on are added to ``rejected`` (pairs already
    rejected while loading are passed in and kept), and the caller decides
    whether to stop or to train without them. ``measure_speed`` runs one
    short forward and backward pass (about a second) to time the device;
    without it a conservative constant is used. Progress is in pairs
    tokenized. A document longer than ``max_input_tokens`` (None: no limit)
    is rejected like any other unusable pair. ``world_size`` is the number of
    DDP processes: each step takes ``accumulate`` documents on each of them,
    and the time estimate is that of one process.
    """
    settings.validate()
    window_tokens = loaded.window_tokens(settings.window_tokens)
    generation = build_generation_config(loaded.model, settings.eval_generation)
    precision = precision_for(settings.precision, loaded.device)
    decoder_positions = decoder_position_limit(loaded.model)
    rejected = list(rejected or [])
    warnings: list[str] = []

    # Token counts of every pair.
    total = len(train_pairs) + len(validation_pairs)
    progress(0, total, "pairs")
    lengths = measure_lengths(loaded, train_pairs, "train", window_tokens, progress, cancel, 0, total)
    lengths += measure_lengths(
        loaded, validation_pairs, "validation", window_tokens, progress, cancel, len(train_pairs), total
    )
    lengths = [
        dataclasses.replace(pair, problem=_pair_problem(pair, decoder_positions, max_input_tokens)) for pair in lengths
    ]
    rejected += [RejectedPair(pair.source, pair.problem) for pair in lengths if pair.problem is not None]
    usable = [pair for pair in lengths if pair.problem is None]

    # Warnings that do not stop training.
    eval_tokens = max_new_tokens(generation)
    longer = [pair for pair in usable if pair.split == "validation" and pair.summary_tokens > eval_tokens]
    if longer:
        warnings.append(
            f"{count(len(longer), 'validation summary', 'validation summaries')} "
            f"{'is' if len(longer) == 1 else 'are'} longer than the {count(eval_tokens, 'token')} evaluation generates, "
            "so their ROUGE recall is capped: raise the evaluation's max tokens."
        )
    duplicates = _duplicates(train_pairs, validation_pairs)
    if duplicates:
        warnings.append(
            f"{count(len(duplicates), 'validation document')} also "
            f"{'appears' if len(duplicates) == 1 else 'appear'} in the training pairs "
            f"({', '.join(duplicates[:3])}{', ...' if len(duplicates) > 3 else ''}), so validation scores will "
            "be optimistic."
        )

    # Estimates.
    train = [pair for pair in usable if pair.split == "train"]
    validation = [pair for pair in usable if pair.split == "validation"]
    try:
        shape = ModelShape.of(loaded.model, loaded.device)
    except SettingsError as error:
        # An unusual config must not block training, which needs no estimate.
        log.warning("preflight: %s", error)
        warnings.append(str(error))
        return _report(
            loaded, precision.name, window_tokens, decoder_positions, lengths, rejected, warnings, settings, train,
            world_size,
        )
    activation_size = activation_bytes(precision.autocast_dtype)
    runtime = process_runtime_bytes(loaded.device, shape.parameter_bytes)
    blockwise = supports_blockwise(loaded.model)
    memory, memory_pair = _largest_step_memory(
        shape, train, window_tokens, settings, activation_size, runtime, blockwise
    )
    evaluation_memory = _evaluation_memory(
        shape, validation, window_tokens, generation.num_beams or 1, eval_tokens, activation_size, runtime
    )
    available = available_memory(loaded.device)
    peak = max(memory.total if memory else 0, evaluation_memory or 0)
    if available is not None and peak > available:
        warnings.append(
            f"The estimated peak memory, {peak / GIB:.1f} GiB (largest pair: {memory_pair}), is more than the "
            f"{available / GIB:.1f} GiB available: use --chunk-windows 1, bf16 precision, fewer evaluation "
            "beams or shorter summaries, or remove the longest documents."
        )

    if measure_speed and train:
        flops_per_second = measure_flops_per_second(loaded, shape, precision.autocast_dtype, window_tokens)
    else:
        flops_per_second = ASSUMED_FLOPS.get(loaded.device.type, ASSUMED_FLOPS["cpu"])
    # The processes train their shares of each step in parallel, so one
    # process's epoch takes about 1 / world size of the work. The estimate
    # leaves out DDP's all-reduce and the filler documents of an uneven last step.
    epoch_flops = sum(_cached_step_flops(shape, pair, window_tokens) for pair in train)
    seconds_per_epoch = epoch_flops / world_size / flops_per_second
    epoch_steps, total_steps = count_steps(len(train), settings, world_size)
    seconds_total = seconds_per_epoch * total_steps / epoch_steps if epoch_steps else 0.0

    report = PreflightReport(
        model=loaded.name,
        device=str(loaded.device),
        precision=precision.name,
        window_tokens=window_tokens,
        decoder_positions=decoder_positions,
        lengths=lengths,
        rejected=rejected,
        warnings=warnings,
        memory=memory,
        memory_pair=memory_pair,
        evaluation_memory=evaluation_memory,
        available_memory=available,
        flops_per_second=flops_per_second,
        speed_measured=measure_speed and bool(train),
        steps_per_epoch=epoch_steps,
        total_steps=total_steps,
        seconds_per_epoch=seconds_per_epoch,
        seconds_total=seconds_total,
    )
    for line in format_report(report):
        log.info("preflight: %s", line)
    return report


def _report(
    loaded: LoadedModel,
    precision: str,
    window_tokens: int,
    decoder_positions: int | None,
    lengths: list[PairLengths],
    rejected: list[RejectedPair],
    warnings: list[str],
    settings: TrainingSettings,
    train: list[PairLengths],
    world_size: int,
) -> PreflightReport:
    """Return a report without memory and time estimates."""
    epoch_steps, total_steps = count_steps(len(train), settings, world_size)
    return PreflightReport(
        model=loaded.name,
        device=str(loaded.device),
        precision=precision,
        window_tokens=window_tokens,
        decoder_positions=decoder_positions,
        lengths=lengths,
        rejected=rejected,
        warnings=warnings,
        memory=None,
        memory_pair=None,
        evaluation_memory=None,
        available_memory=available_memory(loaded.device),
        flops_per_second=None,
        speed_measured=False,
        steps_per_epoch=epoch_steps,
        total_steps=total_steps,
        seconds_per_epoch=None,
        seconds_total=None,
    )


def _pair_problem(pair: PairLengths, decoder_positions: int | None, max_input_tokens: int | None) -> str | None:
    if pair.document_tokens == 0:
        return "the document has no tokens once tokenized"
    if max_input_tokens is not None and pair.document_tokens > max_input_tokens:
        return input_tokens_reason(pair.document_tokens, max_input_tokens)
    if decoder_positions is not None and pair.summary_tokens > decoder_positions:
        return (
            f"the summary has {pair.summary_tokens:,} tokens but the decoder takes at most "
            f"{decoder_positions:,}: shorten it"
        )
    return None


def _duplicates(train_pairs: list[Pair], validation_pairs: list[Pair]) -> list[str]:
    seen = {document_fingerprint(pair) for pair in train_pairs}
    return [pair.source for pair in validation_pairs if document_fingerprint(pair) in seen]


def _largest_step_memory(
    shape: ModelShape,
    train: list[PairLengths],
    window_tokens: int,
    settings: TrainingSettings,
    activation_size: float,
    runtime: int,
    blockwise: bool,
) -> tuple[MemoryEstimate | None, str | None]:
    """Return the estimate of the pair whose step needs the most memory, and the pair's source."""
    attention = MemoryAttentionSettings()
    best: tuple[MemoryEstimate | None, str | None] = (None, None)
    for pair in train:
        windows = _full_windows(pair, window_tokens)
        # The cached step attends block by block from this length on (training.memory_attention).
        long_memory = blockwise and attention.applies(windows * window_tokens)
        estimate = estimate_step_memory(
            shape,
            window_tokens,
            windows,
            pair.summary_tokens,
            settings.chunk_windows,
            activation_size,
            runtime,
            blockwise_block=attention.block_positions if long_memory else None,
        )
        if best[0] is None or estimate.total > best[0].total:
            best = (estimate, pair.source)
    return best


def _evaluation_memory(
    shape: ModelShape,
    validation: list[PairLengths],
    window_tokens: int,
    beams: int,
    summary_tokens: int,
    activation_size: float,
    runtime: int,
) -> int | None:
    """Estimate the peak while generating for the longest validation pair, with the optimizer's state still in memory.

    generate() copies the memory once per beam, and each decoder layer caches
    the cross-attention keys and values of every copy.
    """
    if not validation:
        return None
    positions = max(pair.memory_positions for pair in validation)
    per_beam = positions * shape.d_model * (1 + 2 * shape.decoder_layers) * activation_size
    logits = beams * summary_tokens * shape.vocab * 4
    return int(4 * shape.parameter_bytes + runtime + beams * per_beam + logits)


def _full_windows(pair: PairLengths, window_tokens: int) -> int:
    """Return the pair's memory positions in whole windows, rounded up, so estimates err high."""
    return max(math.ceil(pair.memory_positions / window_tokens), 1)


def _cached_step_flops(shape: ModelShape, pair: PairLengths, window_tokens: int) -> float:
    # The cached step runs the encoder forward twice (without and with a
    # graph) and backward once, and the decoder forward and backward once.
    encoder = shape.encoder_flops(_full_windows(pair, window_tokens), window_tokens)
    decoder = shape.decoder_flops(pair.memory_positions, pair.summary_tokens)
    return 4 * encoder + 3 * decoder


def usable_pairs(report: PreflightReport, train: list[Pair], validation: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    """Drop the pairs the pre-flight check rejected; its lengths are in train-then-validation order."""
    usable = [problem is None for problem in report.problems]
    return (
        [pair for pair, ok in zip(train, usable[: len(train)]) if ok],
        [pair for pair, ok in zip(validation, usable[len(train) :]) if ok],
    )

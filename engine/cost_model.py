"""Rough cost model of a gradient-cached training step: model sizes, memory and compute.

The memory model is analytic and calibrated on BART-base in float32 on a CPU,
where it came within 20% of the measured peak from 4K to 128K input tokens,
mostly on the low side (docs/benchmarks.md, bench/train_memory.py). It is an
estimate: allocator fragmentation, other model families and GPU kernels can
move the real peak either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedModel

from .errors import SettingsError

GIB = 1024**3

# Memory taken by the Python interpreter, torch and the CUDA context, beside
# the tensors, when it cannot be read from the running process.
RUNTIME_BYTES = {"cpu": int(0.5 * GIB), "cuda": int(0.6 * GIB), "mps": int(0.5 * GIB)}


# Model shape ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """The sizes of an encoder-decoder that its memory and compute costs depend on."""

    parameters: int
    parameter_bytes: int  # bytes of all parameters as stored
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_ffn: int
    decoder_ffn: int
    encoder_heads: int
    decoder_heads: int
    vocab: int
    # Whether training stores attention probabilities for backward: with eager
    # attention, and with SDPA when attention dropout is on and the device is
    # not CUDA, because torch (2.13) then falls back from its fused CPU kernel
    # to the math kernel.
    stores_attention: bool

    @classmethod
    def of(cls, model: PreTrainedModel, device: torch.device | None = None) -> "ModelShape":
        config = model.config
        device = device or model.device
        attention_dropout = float(getattr(config, "attention_dropout", 0.0) or 0.0)
        implementation = getattr(config, "_attn_implementation", "eager")

        def first(*names: str, default: int | None = None) -> int:
            for name in names:
                value = getattr(config, name, None)
                if value is not None:
                    return int(value)
            if default is None:
                raise SettingsError(
                    f"The {config.model_type} config has no {' or '.join(names)}, so the memory and time "
                    "estimates are left out."
                )
            return default

        d_model = first("d_model", "hidden_size")
        encoder_layers = first("encoder_layers", "num_layers")
        encoder_heads = first("encoder_attention_heads", "num_heads")
        encoder_ffn = first("encoder_ffn_dim", "d_ff", "intermediate_size", default=4 * d_model)
        return cls(
            parameters=sum(p.numel() for p in model.parameters()),
            parameter_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
            d_model=d_model,
            encoder_layers=encoder_layers,
            decoder_layers=first("decoder_layers", "num_decoder_layers", default=encoder_layers),
            encoder_ffn=encoder_ffn,
            decoder_ffn=first("decoder_ffn_dim", "d_ff", default=encoder_ffn),
            encoder_heads=encoder_heads,
            decoder_heads=first("decoder_attention_heads", "num_heads", default=encoder_heads),
            vocab=first("vocab_size"),
            stores_attention=implementation == "eager" or (attention_dropout > 0 and device.type != "cuda"),
        )

    # Forward-pass floating-point operations, two per multiply-add. A backward
    # pass costs about twice its forward.

    def encoder_flops(self, windows: int, window_tokens: int) -> float:
        tokens = windows * window_tokens
        per_token = 2 * (4 * self.d_model**2 + 2 * self.d_model * self.encoder_ffn)  # projections and FFN
        attention = 4 * window_tokens * self.d_model  # scores and weighted sum, within one window
        return self.encoder_layers * tokens * (per_token + attention)

    def decoder_flops(self, memory_positions: int, summary_tokens: int) -> float:
        d = self.d_model
        per_token = 2 * (6 * d**2 + 2 * d * self.decoder_ffn)  # self and cross projections, FFN
        attention = 4 * (summary_tokens + memory_positions) * d
        memory_projection = 4 * d**2 * memory_positions  # cross-attention keys and values of the memory
        layers = self.decoder_layers * (summary_tokens * (per_token + attention) + memory_projection)
        return layers + 2 * summary_tokens * d * self.vocab  # LM head


# Memory -----------------------------------------------------------------------

# Values stored per attention score when the probabilities are kept for
# backward: the scores, the probabilities, the dropped-out probabilities, and
# the dropout mask at a quarter (one byte against four).
STORED_ATTENTION = 2.75


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of a training step, in bytes, split by what uses it."""

    weights: int
    gradients: int
    optimizer: int  # AdamW's two moments per parameter
    encoder_activations: int  # one chunk re-encoded with a graph (all windows for plain backprop)
    fused_memory: int  # the memory of all windows and its gradient
    decoder: int  # decoder activations, cross-attention keys and values over the memory, logits
    runtime: int  # interpreter, libraries, CUDA context
    cached: bool = True  # gradient caching: the decoder's graph is freed before the encoder's is built

    @property
    def total(self) -> int:
        fixed = self.weights + self.gradients + self.optimizer + self.fused_memory + self.runtime
        if self.cached:
            return fixed + max(self.encoder_activations, self.decoder)
        return fixed + self.encoder_activations + self.decoder

    def to_json(self) -> dict:
        return {**asdict(self), "total": self.total}


def activation_bytes(autocast_dtype: torch.dtype | None) -> float:
    """Bytes per stored activation: 4 in float32, 3 under half-precision autocast.

    Autocast stores matrix-multiply inputs in half precision but keeps layer
    norms, softmax and the residual stream in float32, so 3 is a middle value.
    """
    return 4.0 if autocast_dtype is None else 3.0


def estimate_step_memory(
    shape: ModelShape,
    window_tokens: int,
    windows: int,
    summary_tokens: int,
    chunk_windows: int = 1,
    activation_size: float = 4.0,
    runtime: int = RUNTIME_BYTES["cpu"],
    cached: bool = True,
    blockwise_block: int | None = None,
) -> MemoryEstimate:
    """Estimate the peak memory of one training step on a document of ``windows`` full windows.

    With ``cached`` (gradient caching) the encoder keeps the graph of
    ``chunk_windows`` windows at a time, and only after the decoder's graph
    is freed. Without it, the graphs of every window and of the decoder
    coexist.
    Per encoder or decoder layer and token the stored activations are taken
    as ``10 * d_model + 2 * ffn`` values (attention inputs and outputs, layer
    norms, the FFN's hidden layer, dropout masks), plus ``2.75 * heads *
    keys`` for the attention scores, probabilities and dropout mask when
    ``shape.stores_attention``.
    Each decoder layer also keeps the cross-attention keys and values of the
    whole memory, ``2 * d_model`` values per memory position, which dominates
    for long documents. With ``blockwise_block`` (the cached step's blockwise
    cross-attention, training.memory_attention) a layer keeps only its
    queries and output, and one block of ``blockwise_block`` positions has
    keys, values and scores at a time.
    """
    d = shape.d_model
    positions = windows * window_tokens
    encoder_tokens = min(chunk_windows, windows) * window_tokens if cached else positions

    encoder_per_token = 10 * d + 2 * shape.encoder_ffn
    if shape.stores_attention:
        encoder_per_token += STORED_ATTENTION * shape.encoder_heads * window_tokens
    encoder = shape.encoder_layers * encoder_tokens * encoder_per_token * activation_size

    decoder_per_token = 10 * d + 2 * shape.decoder_ffn
    if shape.stores_attention:
        decoder_per_token += STORED_ATTENTION * shape.decoder_heads * summary_tokens
    # NOTE: fitted on 16K to 128K tokens; at 512K (bench/train_memory.py, bf16
    # autocast) it came out 40% under the measured 8.43 GiB peak.
    if cached and blockwise_block is not None:
        kept = 2 * d * summary_tokens  # each layer's queries and output; the log-sum-exp is negligible
        block = min(blockwise_block, positions)
        # In the backward pass a block has its keys, values, their gradients, and
        # the scores and probabilities with their gradients.
        one_block = 4 * d * block + 2 * STORED_ATTENTION * shape.decoder_heads * summary_tokens * block
        decoder = (shape.decoder_layers * (summary_tokens * decoder_per_token + kept) + one_block) * activation_size
    else:
        cross_attention = 2 * d * positions
        if shape.stores_attention:
            cross_attention += STORED_ATTENTION * shape.decoder_heads * summary_tokens * positions
        decoder = shape.decoder_layers * (summary_tokens * decoder_per_token + cross_attention) * activation_size
    logits = 3 * summary_tokens * shape.vocab * 4  # logits, log-probabilities and their gradient, float32

    return MemoryEstimate(
        weights=shape.parameter_bytes,
        gradients=shape.parameter_bytes,
        optimizer=2 * shape.parameter_bytes,
        encoder_activations=int(encoder),
        fused_memory=int(positions * d * (4 + 4)) if cached else int(positions * d * 4),
        decoder=int(decoder + logits),
        runtime=runtime,
        cached=cached,
    )


def process_runtime_bytes(device: torch.device, weights: int) -> int:
    """Return the memory this process uses beside the model's weights, or a typical value."""
    if device.type == "cpu":
        resident = _proc_status_bytes("VmRSS")
        if resident is not None:
            return max(resident - weights, 0)
    return RUNTIME_BYTES.get(device.type, RUNTIME_BYTES["cpu"])


def _proc_status_bytes(key: str) -> int | None:
    """Read a ``kB`` line of ``/proc/self/status`` (Linux only); None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def available_memory(device: torch.device) -> int | None:
    """Return the bytes this process could use on ``device``, counting what it already uses; None if unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 + (_proc_status_bytes("VmRSS") or 0)
    except OSError:
        return None
    return None

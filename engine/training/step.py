"""The gradient-cached training step over one whole document.

A document is too long to backpropagate through in one graph, so the step
splits the work (gradient caching, as in Saxena, Tang and Keller, "End-to-End
Long Document Summarization using Gradient Caching", TACL 2025):

1. Encode every chunk of windows without a graph, saving the RNG state that
   each chunk starts from, and fuse the states into one memory.
2. Run the decoder with teacher forcing on that memory, made a leaf.
3. Backpropagate the loss: the decoder's parameters get their gradients and
   the memory's gradient becomes the cache.
4. Re-encode each chunk with a graph under its saved RNG state, so dropout
   draws the same masks, and backpropagate its slice of the cache.

Gradients from step 4 add to those of step 3 and nothing is cleared in
between, because BART ties the encoder and decoder embeddings and the LM head
to one matrix that takes gradient from both halves. The result equals plain
backpropagation through the whole graph, up to float rounding.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Callable, ContextManager, Protocol

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .memory_attention import MemoryAttentionSettings, blockwise_cross_attention

SyncContext = Callable[[], ContextManager]


class StepForwards(Protocol):
    """The forwards with a graph that ``cached_backward`` routes through a DDP wrapper (``distributed.SyncedStep``)."""

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...

    def decoder_loss(self, memory: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    def no_sync(self) -> ContextManager: ...


@dataclass
class RngState:
    """The generator states a chunk of dropout draws from: CPU, plus the model's CUDA device if any."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None
    cuda_device: torch.device | None

    @classmethod
    def capture(cls, device: torch.device) -> "RngState":
        if device.type == "cuda":
            return cls(torch.get_rng_state(), torch.cuda.get_rng_state(device), device)
        return cls(torch.get_rng_state(), None, None)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.cuda_device)


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """Return autocast to ``dtype`` on ``device``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def encode_chunk(encoder: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Encode a chunk of windows and return the states of its non-padding positions, in order.

    ``input_ids`` and ``attention_mask`` are (chunk, window_length). The chunk is
    trimmed to its longest window first, as the generation path does, so a
    short last window costs no padding. Returns (positions, d_model).
    """
    lengths = attention_mask.sum(dim=1).tolist()
    width = max(lengths)
    states = encoder(
        input_ids=input_ids[:, :width], attention_mask=attention_mask[:, :width]
    ).last_hidden_state  # (chunk, width, d_model)
    return torch.cat([states[row, :length] for row, length in enumerate(lengths)], dim=0)


def decoder_loss(model: PreTrainedModel, memory: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return the model's own teacher-forced loss for ``labels`` given the fused ``memory``.

    The model builds its decoder input by shifting ``labels`` right after the
    decoder start token and averages cross-entropy over every label position,
    exactly as a plain ``model(input_ids=..., labels=...)`` call would.
    ``memory`` is (1, positions, d_model) and ``labels`` (1, summary_length).
    """
    mask = torch.ones(memory.shape[:2], dtype=torch.long, device=memory.device)
    outputs = model(
        encoder_outputs=BaseModelOutput(last_hidden_state=memory),
        attention_mask=mask,
        labels=labels,
        use_cache=False,
    )
    return outputs.loss


def cached_backward(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    chunk_windows: int = 1,
    *,
    loss_scale: float = 1.0,
    grad_scaler: torch.amp.GradScaler | None = None,
    autocast_dtype: torch.dtype | None = None,
    sync_context: SyncContext | None = None,
    forwards: StepForwards | None = None,
    synced: bool = True,
    agree_finite: Callable[[bool], bool] | None = None,
    memory_attention: MemoryAttentionSettings | None = None,
) -> torch.Tensor:
    """Accumulate the gradient of one document's summary loss into every parameter's ``.grad``.

    ``input_ids`` and ``attention_mask`` are the document's (windows,
    window_length) tensors as the generation path builds them, and ``labels``
    is (1, summary_length). Forward passes run in the model's current mode.
    The loss is multiplied by ``loss_scale`` (1 / examples per optimizer step
    when accumulating) and then by ``grad_scaler`` if given, before any
    backward. Every forward runs under autocast to ``autocast_dtype`` (None:
    no autocast). Every forward and backward with a graph, except the last
    chunk's, runs inside ``sync_context()``; with ``synced=False`` the last
    chunk's does too.

    Under DistributedDataParallel, ``forwards`` is the DDP-wrapped step
    (``distributed.SyncedStep``): the decoder and the re-encoding forwards go
    through it, and ``sync_context`` defaults to its ``no_sync``. So the last
    chunk's backward is the only one that all-reduces. Pass ``synced=False``
    for every document of an optimizer step but the last. ``agree_finite``
    receives whether this rank's loss is finite and returns whether every
    rank's is, so all ranks skip a document together.

    ``memory_attention`` decides when the decoder attends to the memory
    block by block (None: the defaults of ``MemoryAttentionSettings``).

    The torch RNG advances exactly as in a plain forward over the same chunks,
    in order, followed by the decoder. Returns the unscaled loss, detached.
    A non-finite loss is returned before any backward, so no ``.grad`` changes.
    When another rank's loss was not finite, NaN is returned likewise.
    """
    if chunk_windows < 1:
        raise ValueError(f"chunk_windows must be at least 1, got {chunk_windows}")
    device = model.device
    input_ids = input_ids.to(device)
    attention_mask = attention_mask.to(device)
    labels = labels.to(device)
    encoder = model.get_encoder()
    windows = input_ids.shape[0]
    chunks = [(start, min(start + chunk_windows, windows)) for start in range(0, windows, chunk_windows)]
    if forwards is not None:
        encode_with_graph = forwards.encode
        loss_with_graph = forwards.decoder_loss
        sync_context = sync_context or forwards.no_sync
    else:
        encode_with_graph = functools.partial(encode_chunk, encoder)
        loss_with_graph = functools.partial(decoder_loss, model)
    no_sync = sync_context or contextlib.nullcontext

    # Stage 1: encode every chunk without a graph, noting the RNG state each starts from.
    chunk_rng: list[RngState] = []
    pieces: list[torch.Tensor] = []
    with torch.no_grad(), autocast_context(device, autocast_dtype):
        for start, stop in chunks:
            chunk_rng.append(RngState.capture(device))
            pieces.append(encode_chunk(encoder, input_ids[start:stop], attention_mask[start:stop]))
    chunk_positions = [piece.shape[0] for piece in pieces]
    memory = torch.cat(pieces, dim=0).unsqueeze(0).requires_grad_(True)  # (1, positions, d_model), a leaf
    del pieces  # a second copy of the memory otherwise

    # Stage 2: decoder with teacher forcing on the fused memory. Under DDP the
    # forward must run inside no_sync too, or the reducer would expect this
    # backward to be the synced one. A long memory is attended to block by
    # block, so no layer keeps its keys and values.
    blockwise = blockwise_cross_attention(model, memory.shape[1], memory_attention)
    with no_sync(), autocast_context(device, autocast_dtype), blockwise:
        loss = loss_with_graph(memory, labels)
    after_decoder = RngState.capture(device)
    finite = bool(torch.isfinite(loss).item())
    if agree_finite is not None and agree_finite(finite) != finite:
        return torch.full_like(loss.detach(), math.nan)
    if not finite:
        return loss.detach()

    # Stage 3: backward through the decoder; the memory's gradient is the cache.
    scaled = loss * loss_scale
    if grad_scaler is not None:
        scaled = grad_scaler.scale(scaled)
    with no_sync():
        scaled.backward()
    cache = memory.grad[0]  # (positions, d_model)

    # Stage 4: re-encode chunk by chunk with the same dropout masks and push
    # each chunk's slice of the cache into the encoder.
    offset = 0
    for index, (start, stop) in enumerate(chunks):
        syncs = synced and index == len(chunks) - 1
        chunk_rng[index].restore()
        grad = cache[offset : offset + chunk_positions[index]]
        offset += chunk_positions[index]
        with contextlib.nullcontext() if syncs else no_sync():
            with autocast_context(device, autocast_dtype):
                states = encode_with_graph(input_ids[start:stop], attention_mask[start:stop])  # (n, d_model)
            torch.autograd.backward(states, grad_tensors=grad)

    # Leave the RNG where the plain forward would have left it.
    after_decoder.restore()
    return loss.detach()

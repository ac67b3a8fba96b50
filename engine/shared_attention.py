"""Cross-attention over the fused memory, computed once and shared by all beams.

``model.generate`` copies the encoder states once per beam and keeps every
decoder layer's cross-attention keys and values per beam, reordering them at
every step, although they are identical across beams. For a long document
that multiplies the largest tensors of generation by the beam count.

Here each layer's keys and values are projected once from the fused memory,
batch 1, and the layer's cross-attention module is swapped for one that
attends to them. Beams and decoding positions are stacked along the query
axis of a single scaled-dot-product attention call: cross-attention has no
causal mask, so every query attends to the same keys independently and the
result equals per-beam attention. On the CPU, torch 2.13 runs that call with
its flash-attention kernel, which works block by block, so no attention-weight
matrix over the whole memory is materialized. The placeholder encoder states
handed to ``generate`` are one number wide, so expanding them per beam costs
almost nothing.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional

from .encoding import FusedMemory

log = logging.getLogger(__name__)

_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _cross_attention_slots(model: nn.Module) -> list[tuple[nn.Module, str]] | None:
    """Return (parent, attribute) for every decoder cross-attention module, or None if unsupported."""
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        return None
    slots = []
    for layer in layers:
        module = getattr(layer, "encoder_attn", None)
        if module is None or not all(hasattr(module, name) for name in _PROJECTIONS):
            return None
        if not hasattr(module, "head_dim") or not hasattr(module, "scaling"):
            return None
        slots.append((layer, "encoder_attn"))
    return slots or None


def supports_shared_attention(model: nn.Module, memory: FusedMemory) -> bool:
    """Return whether ``model``'s decoder can attend to a shared memory (BART, mBART, PEGASUS, Marian)."""
    return _cross_attention_slots(model) is not None and bool(memory.attention_mask.all())


class SharedCrossAttention(nn.Module):
    """Cross-attention to keys and values computed once, for any number of beams."""

    def __init__(self, original: nn.Module, memory: torch.Tensor) -> None:
        super().__init__()
        self.original = original
        self.head_dim = original.head_dim
        self.scaling = original.scaling
        positions = memory.shape[1]
        # (1, heads, positions, head_dim), projected once per document.
        self.keys = original.k_proj(memory).view(1, positions, -1, self.head_dim).transpose(1, 2)
        self.values = original.v_proj(memory).view(1, positions, -1, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        batch, length, _ = hidden_states.shape  # (beams, new positions, d_model)
        heads = self.keys.shape[1]
        queries = self.original.q_proj(hidden_states).view(batch, length, heads, self.head_dim)
        # Stack beams along the query axis: (1, heads, beams * length, head_dim).
        queries = queries.permute(2, 0, 1, 3).reshape(1, heads, batch * length, self.head_dim)
        attended = functional.scaled_dot_product_attention(queries, self.keys, self.values, scale=self.scaling)
        attended = attended.reshape(heads, batch, length, self.head_dim).permute(1, 2, 0, 3)
        return self.original.out_proj(attended.reshape(batch, length, heads * self.head_dim)), None


@contextlib.contextmanager
def shared_cross_attention(model: nn.Module, memory: FusedMemory) -> Iterator[torch.Tensor]:
    """Swap in shared cross-attention for the duration; yield the placeholder encoder states.

    The placeholder has the memory's length and one feature, so ``generate``
    can build masks and expand it per beam while the real states stay unique.
    """
    slots = _cross_attention_slots(model)
    if slots is None:
        raise ValueError(f"{type(model).__name__} has no BART-style cross-attention to share")

    originals = [getattr(parent, name) for parent, name in slots]
    with torch.inference_mode():
        shared = [SharedCrossAttention(module, memory.hidden_states) for module in originals]
    try:
        for (parent, name), module in zip(slots, shared):
            setattr(parent, name, module)
        yield memory.hidden_states.new_zeros((1, memory.positions, 1))
    finally:
        for (parent, name), module in zip(slots, originals):
            setattr(parent, name, module)

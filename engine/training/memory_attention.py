"""Blockwise cross-attention over a long fused memory, for the training decoder pass.

In a plain decoder pass every layer's cross-attention projects the whole
memory to keys and values and keeps both for backward, 2 x d_model x layers
values per memory position. With attention dropout on a CPU it keeps the
attention probabilities too. On BART-base these tensors dominate a cached
training step beyond about 128K input tokens.

``BlockwiseCrossAttention`` computes the same attention over blocks of memory
positions with an online softmax, as flash attention does. The forward keeps
only the queries, the output and the log-sum-exp of every query's scores.
The backward projects each block's keys and values again and returns exact
gradients for the queries, the memory and the key/value projection weights
and biases. Attention dropout draws its mask per block from a generator
seeded once per forward, so the backward sees the same masks.

``blockwise_cross_attention`` swaps BART-family decoders' cross-attention
modules (the same family as ``shared_attention``) for the duration of a
``with`` block. Other models keep their own attention.

NOTE: with attention dropout above 0 the blockwise path draws one seed from
torch's global generator where the model's own attention draws full masks,
so the masks, and the generator state after the decoder, differ from a plain
forward's. Gradients equal plain backpropagation only without that dropout.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional

from ..shared_attention import _cross_attention_slots

log = logging.getLogger(__name__)

MODES = ("auto", "blockwise", "standard")


@dataclass(frozen=True)
class MemoryAttentionSettings:
    """When and how the training decoder attends to the fused memory block by block."""

    mode: str = "auto"  # "auto": blockwise from auto_min_positions on; "blockwise": always; "standard": never
    # NOTE: not tuned for speed. At 16K positions the cached step took 1.2-1.7x as long blockwise
    # as with the model's own attention (BART-base, float32, loaded 2-core CPU), so a higher
    # threshold may train short documents faster where their keys and values fit in memory.
    auto_min_positions: int = 8192  # memory positions (input tokens) from which "auto" goes blockwise
    block_positions: int = 4096  # memory positions projected and attended to at once

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        if self.mode not in MODES:
            raise ValueError(f"memory attention mode '{self.mode}' is unknown: use one of {', '.join(MODES)}.")
        for name in ("auto_min_positions", "block_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be a whole number of at least 1, got {value!r}.")

    def applies(self, positions: int) -> bool:
        """Return whether a memory of ``positions`` positions is attended to block by block."""
        if self.mode == "auto":
            return positions >= self.auto_min_positions
        return self.mode == "blockwise"


def dropout_keep_mask(
    shape: tuple[int, ...], probability: float, seed: int, block: int, device: torch.device
) -> torch.Tensor:
    """Return the boolean keep mask of memory block ``block`` for a forward seeded with ``seed``.

    The forward and the backward both call this, so they agree on every mask.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(seed + block)
    return torch.rand(shape, generator=generator, device=device) >= probability


def _project(memory: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, heads: int) -> torch.Tensor:
    """Project (batch, n, d_model) memory rows to (batch, heads, n, head_dim)."""
    batch, positions, _ = memory.shape
    projected = functional.linear(memory, weight, None if bias is None else bias.to(weight.dtype))
    return projected.view(batch, positions, heads, -1).transpose(1, 2)


class BlockwiseCrossAttention(torch.autograd.Function):
    """softmax(scaling * Q K^T) V, with K and V projected from the memory block by block.

    ``queries`` is (batch, heads, targets, head_dim), already projected, and
    ``memory`` (batch or 1, positions, d_model). The key and value projections
    have (d_model, d_model) weights and (d_model,) biases, or None for no bias.
    Matrix products run in ``compute_dtype``, while the softmax statistics and
    the output accumulate in float32 or wider. Returns (batch, heads, targets,
    head_dim) in ``compute_dtype``.
    """

    @staticmethod
    def forward(
        ctx,
        queries: torch.Tensor,
        memory: torch.Tensor,
        key_weight: torch.Tensor,
        key_bias: torch.Tensor | None,
        value_weight: torch.Tensor,
        value_bias: torch.Tensor | None,
        scaling: float,
        block_positions: int,
        dropout: float,
        seed: int,
        compute_dtype: torch.dtype,
    ) -> torch.Tensor:
        heads = queries.shape[1]
        accumulate_dtype = torch.promote_types(compute_dtype, torch.float32)
        query = queries.to(compute_dtype) * scaling  # scaling the queries costs less than scaling every score
        key_w = key_weight.to(compute_dtype)
        value_w = value_weight.to(compute_dtype)
        stats_shape = query.shape[:-1]  # (batch, heads, targets)
        running_max = torch.full(stats_shape, float("-inf"), dtype=accumulate_dtype, device=query.device)
        running_sum = torch.zeros(stats_shape, dtype=accumulate_dtype, device=query.device)
        output = torch.zeros(query.shape, dtype=accumulate_dtype, device=query.device)

        with torch.autocast(query.device.type, enabled=False):
            for block, start in enumerate(range(0, memory.shape[1], block_positions)):
                rows = memory[:, start : start + block_positions].to(compute_dtype)
                keys = _project(rows, key_w, key_bias, heads)  # (batch, heads, n, head_dim)
                values = _project(rows, value_w, value_bias, heads)
                scores = torch.matmul(query, keys.transpose(-1, -2)).to(accumulate_dtype)  # (b, h, t, n)

                # Online softmax: rescale what was summed so far to the new running maximum.
                # The (b, h, t, n) tensors are the largest here, so they are updated in place.
                new_max = torch.maximum(running_max, scores.amax(dim=-1))
                correction = torch.exp(running_max - new_max)
                weights = scores.sub_(new_max.unsqueeze(-1)).exp_()
                running_sum = running_sum * correction + weights.sum(dim=-1)
                if dropout > 0:
                    keep = dropout_keep_mask(weights.shape, dropout, seed, block, weights.device)
                    weights.masked_fill_(~keep, 0).mul_(1 / (1 - dropout))
                block_output = torch.matmul(weights.to(compute_dtype), values).to(accumulate_dtype)
                output.mul_(correction.unsqueeze(-1)).add_(block_output)
                running_max = new_max

        output = output / running_sum.unsqueeze(-1)
        log_sum_exp = running_max + torch.log(running_sum)  # (batch, heads, targets)
        ctx.save_for_backward(queries, memory, key_weight, key_bias, value_weight, value_bias, output, log_sum_exp)
        ctx.options = (scaling, block_positions, dropout, seed, compute_dtype)
        return output.to(compute_dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        queries, memory, key_weight, key_bias, value_weight, value_bias, output, log_sum_exp = ctx.saved_tensors
        scaling, block_positions, dropout, seed, compute_dtype = ctx.options
        batch, heads, _, head_dim = queries.shape
        d_model = heads * head_dim
        accumulate_dtype = output.dtype
        query = queries.to(compute_dtype) * scaling
        key_w = key_weight.to(compute_dtype)
        value_w = value_weight.to(compute_dtype)
        grad_out = grad_output.to(accumulate_dtype)
        grad_out_c = grad_output.to(compute_dtype)
        # rowsum(dP * P) of the softmax backward equals rowsum(dO * O), also with dropout.
        delta = (grad_out * output).sum(dim=-1, keepdim=True)  # (batch, heads, targets, 1)

        grad_query = torch.zeros(query.shape, dtype=accumulate_dtype, device=query.device)
        grad_memory = torch.empty_like(memory) if ctx.needs_input_grad[1] else None
        grad_key_w = torch.zeros(key_weight.shape, dtype=accumulate_dtype, device=query.device)
        grad_value_w = torch.zeros_like(grad_key_w)
        grad_key_b = torch.zeros(d_model, dtype=accumulate_dtype, device=query.device)
        grad_value_b = torch.zeros_like(grad_key_b)

        with torch.autocast(query.device.type, enabled=False):
            for block, start in enumerate(range(0, memory.shape[1], block_positions)):
                rows = memory[:, start : start + block_positions].to(compute_dtype)
                positions = rows.shape[1]
                keys = _project(rows, key_w, key_bias, heads)  # (memory batch, heads, n, head_dim)
                values = _project(rows, value_w, value_bias, heads)
                scores = torch.matmul(query, keys.transpose(-1, -2)).to(accumulate_dtype)
                probabilities = scores.sub_(log_sum_exp.unsqueeze(-1)).exp_()  # (batch, heads, targets, n)
                dropped = probabilities
                if dropout > 0:
                    keep = dropout_keep_mask(probabilities.shape, dropout, seed, block, probabilities.device)
                    dropped = probabilities.masked_fill(~keep, 0).mul_(1 / (1 - dropout))

                grad_values = torch.matmul(dropped.to(compute_dtype).transpose(-1, -2), grad_out_c)  # (b, h, n, hd)
                grad_dropped = torch.matmul(grad_out_c, values.transpose(-1, -2)).to(accumulate_dtype)  # (b, h, t, n)
                if dropout > 0:
                    grad_dropped.masked_fill_(~keep, 0).mul_(1 / (1 - dropout))
                # Gradient of the scores, before the scaling that the queries carry.
                grad_scores = grad_dropped.sub_(delta).mul_(probabilities).to(compute_dtype)
                grad_query += torch.matmul(grad_scores, keys).to(accumulate_dtype)
                grad_keys = torch.matmul(grad_scores.transpose(-1, -2), query)  # (batch, heads, n, head_dim)

                # Back to (memory batch, n, d_model); a batch-1 memory shared by every query sums over the batch.
                grad_keys = grad_keys.transpose(1, 2).reshape(batch, positions, d_model)
                grad_values = grad_values.transpose(1, 2).reshape(batch, positions, d_model)
                if rows.shape[0] != batch:
                    grad_keys = grad_keys.sum(dim=0, keepdim=True)
                    grad_values = grad_values.sum(dim=0, keepdim=True)
                if grad_memory is not None:
                    grad_rows = torch.matmul(grad_keys, key_w) + torch.matmul(grad_values, value_w)
                    grad_memory[:, start : start + positions] = grad_rows.to(memory.dtype)
                flat_rows = rows.reshape(-1, d_model)
                grad_key_w += torch.matmul(grad_keys.reshape(-1, d_model).t(), flat_rows).to(accumulate_dtype)
                grad_value_w += torch.matmul(grad_values.reshape(-1, d_model).t(), flat_rows).to(accumulate_dtype)
                grad_key_b += grad_keys.sum(dim=(0, 1)).to(accumulate_dtype)
                grad_value_b += grad_values.sum(dim=(0, 1)).to(accumulate_dtype)

        return (
            (grad_query * scaling).to(queries.dtype),
            grad_memory,
            grad_key_w.to(key_weight.dtype),
            None if key_bias is None else grad_key_b.to(key_bias.dtype),
            grad_value_w.to(value_weight.dtype),
            None if value_bias is None else grad_value_b.to(value_bias.dtype),
            None,
            None,
            None,
            None,
            None,
        )


def blockwise_attention(
    queries: torch.Tensor,
    memory: torch.Tensor,
    key_projection: nn.Linear,
    value_projection: nn.Linear,
    scaling: float,
    block_positions: int,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Attend from projected ``queries`` (batch, heads, targets, head_dim) to ``memory`` block by block.

    Matrix products run in the autocast dtype when autocast is on for the
    queries' device, else in the queries' dtype. A dropout above 0 draws one
    seed from torch's global generator.
    """
    device_type = queries.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = queries.dtype
    seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout > 0 else 0
    return BlockwiseCrossAttention.apply(
        queries,
        memory,
        key_projection.weight,
        key_projection.bias,
        value_projection.weight,
        value_projection.bias,
        scaling,
        block_positions,
        dropout,
        seed,
        compute_dtype,
    )


def _masks_nothing(mask: torch.Tensor) -> bool:
    if mask.dtype == torch.bool:
        return bool(mask.all())
    return bool((mask == 0).all())  # additive mask: 0 keeps a position, a large negative value drops it


class BlockwiseCrossAttentionModule(nn.Module):
    """Stands in for a BART-family cross-attention module; keeps its parameters and training mode."""

    def __init__(self, original: nn.Module, block_positions: int) -> None:
        super().__init__()
        self.original = original
        self.block_positions = block_positions

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        cache: object | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        if key_value_states is None or cache is not None:
            # Not a plain cross-attention call (for instance one that fills a generation cache).
            return self.original(hidden_states, key_value_states, cache, attention_mask, **kwargs)
        if attention_mask is not None and not _masks_nothing(attention_mask):
            raise ValueError(
                "blockwise cross-attention supports a memory without padding only, but the decoder got a "
                "memory mask that drops positions; use memory attention mode 'standard' for padded memories."
            )
        original = self.original
        batch, targets, _ = hidden_states.shape
        queries = original.q_proj(hidden_states).view(batch, targets, -1, original.head_dim).transpose(1, 2)
        dropout = original.dropout if original.training else 0.0
        attended = blockwise_attention(
            queries, key_value_states, original.k_proj, original.v_proj, original.scaling, self.block_positions, dropout
        )  # (batch, heads, targets, head_dim)
        attended = attended.transpose(1, 2).reshape(batch, targets, -1)
        return original.out_proj(attended), None


def supports_blockwise(model: nn.Module) -> bool:
    """Return whether ``model``'s decoder has the BART-style cross-attention this module can replace."""
    slots = _cross_attention_slots(model)
    return slots is not None and all(hasattr(getattr(parent, name), "dropout") for parent, name in slots)


@contextlib.contextmanager
def blockwise_cross_attention(
    model: nn.Module, positions: int, settings: MemoryAttentionSettings | None = None
) -> Iterator[bool]:
    """Swap in blockwise cross-attention while the ``with`` block runs, if ``settings`` call for it.

    ``positions`` is the fused memory's length. Yields whether the modules
    were swapped. They are not when the settings keep the standard path at
    this length, nor for a model without BART-style cross-attention.
    """
    settings = settings or MemoryAttentionSettings()
    settings.validate()
    if not settings.applies(positions):
        yield False
        return
    if not supports_blockwise(model):
        log.info(
            "%s has no BART-style cross-attention, so its decoder attends to the %d-position memory "
            "with its own attention",
            type(model).__name__,
            positions,
        )
        yield False
        return

    slots = _cross_attention_slots(model)
    originals = [getattr(parent, name) for parent, name in slots]
    log.debug("blockwise cross-attention over %d positions, blocks of %d", positions, settings.block_positions)
    try:
        for (parent, name), module in zip(slots, originals):
            setattr(parent, name, BlockwiseCrossAttentionModule(module, settings.block_positions))
        yield True
    finally:
        for (parent, name), module in zip(slots, originals):
            setattr(parent, name, module)

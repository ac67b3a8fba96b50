"""Attribution of summary sentences to windows, from the decoder's cross-attention.

After generation, one teacher-forced decoder pass over the finished summary
records the input to one cross-attention layer. That layer's attention
probabilities are then recomputed window by window. Each window's share of the
softmax comes from its log-sum-exp, so no attention matrix over the whole
memory is ever built. The shares, averaged over heads and summed over a
sentence's tokens, rank the windows the sentence attended to most.

This is an indication of where a sentence came from, not a citation.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .encoding import FusedMemory
from .windows import Window

log = logging.getLogger(__name__)

# A sentence ends at ., ! or ? followed by space, or at CJK full stops.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")

# Windows listed per sentence, most attended first.
MAX_WINDOWS_PER_SENTENCE = 3


@dataclass(frozen=True)
class _Projection:
    """The query and key projections of one cross-attention module."""

    query: nn.Linear
    key: nn.Linear
    heads: int
    head_dim: int
    scaling: float


def _cross_attention_modules(model: PreTrainedModel) -> list[nn.Module]:
    """Return the decoder's cross-attention modules in layer order (BART family and T5)."""
    decoder = model.get_decoder()
    modules = []
    for name, module in decoder.named_modules():
        if name.endswith("encoder_attn") or name.endswith("EncDecAttention"):
            modules.append(module)
    return modules


def _projection(module: nn.Module) -> _Projection | None:
    if hasattr(module, "q_proj") and hasattr(module, "k_proj"):  # BART, mBART, PEGASUS, Marian
        return _Projection(module.q_proj, module.k_proj, module.num_heads, module.head_dim, module.scaling)
    if hasattr(module, "q") and hasattr(module, "k"):  # T5 attends without scaling
        return _Projection(module.q, module.k, module.n_heads, module.key_value_proj_dim, 1.0)
    return None


def chosen_layer(count: int) -> int:
    # Late-middle decoder layers tend to align best with the source; the last
    # layer is more concerned with predicting the next word.
    return max(count - 2, 0) if count > 2 else count - 1


def window_attention(
    model: PreTrainedModel,
    memory: FusedMemory,
    token_ids: list[int],
    frame: tuple[int, int],
) -> torch.Tensor | None:
    """Return each generated token's attention share per window, shape (tokens, windows).

    Row ``i`` belongs to ``token_ids[i + 1]``: the decoder's query at position
    ``i`` is the one that produced it. ``frame`` gives how many special tokens
    open and close each window. Their positions are left out of the shares,
    because they draw attention regardless of content. Returns None for
    models whose cross-attention this module does not know.
    """
    modules = _cross_attention_modules(model)
    if not modules or len(token_ids) < 2:
        return None
    module = modules[chosen_layer(len(modules))]
    projection = _projection(module)
    if projection is None:
        log.info("attribution unavailable for %s", type(model).__name__)
        return None

    captured: dict[str, torch.Tensor] = {}

    def keep_query_input(_module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]

    handle = module.register_forward_pre_hook(keep_query_input, with_kwargs=True)
    try:
        with torch.inference_mode():
            model.get_decoder()(
                input_ids=torch.tensor([token_ids[:-1]], device=memory.hidden_states.device),
                encoder_hidden_states=memory.hidden_states,
                encoder_attention_mask=memory.attention_mask,
            )
    finally:
        handle.remove()

    with torch.inference_mode():
        hidden = captured["hidden"][0]  # (T, d)
        queries = projection.query(hidden).view(hidden.shape[0], projection.heads, projection.head_dim)
        queries = queries.transpose(0, 1) * projection.scaling  # (H, T, dh)

        opening, closing = frame
        whole, content = [], []
        start = 0
        for length in memory.window_positions:
            states = memory.hidden_states[0, start : start + length]  # (n, d)
            keys = projection.key(states).view(length, projection.heads, projection.head_dim)
            logits = queries @ keys.permute(1, 2, 0)  # (H, T, n)
            whole.append(torch.logsumexp(logits, dim=-1))
            inner = logits[:, :, opening : length - closing]
            content.append(torch.logsumexp(inner, dim=-1) if inner.shape[-1] else torch.full_like(whole[-1], -torch.inf))
            start += length

        total = torch.logsumexp(torch.stack(whole, dim=-1), dim=-1, keepdim=True)  # (H, T, 1)
        shares = torch.exp(torch.stack(content, dim=-1) - total)  # (H, T, W)
    return shares.mean(dim=0).float().cpu()


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Return the character spans of the sentences in ``text``."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.start() > start:
            spans.append((start, match.start()))
        start = match.end()
    if start < len(text) and text[start:].strip():
        spans.append((start, len(text)))
    return spans


def token_end_offsets(tokenizer: PreTrainedTokenizerBase, token_ids: list[int]) -> tuple[str, list[int]]:
    """Decode ``token_ids[1:]`` and return the text with the character offset where each token ends."""
    ends = []
    for count in range(2, len(token_ids) + 1):
        ends.append(len(tokenizer.decode(token_ids[1:count], skip_special_tokens=True)))
    text = tokenizer.decode(token_ids[1:], skip_special_tokens=True)
    return text, ends


def attribute_sentences(
    tokenizer: PreTrainedTokenizerBase,
    token_ids: list[int],
    shares: torch.Tensor,
    windows: list[Window],
) -> list[tuple[str, tuple[int, ...]]]:
    """Return each summary sentence with its most attended windows, most first."""
    raw_text, ends = token_end_offsets(tokenizer, token_ids)
    starts = [0] + ends[:-1]
    lead = len(raw_text) - len(raw_text.lstrip())
    text = raw_text.strip()

    results = []
    for start, end in split_sentences(text):
        # Spans in the stripped text; token offsets are in the decoded text.
        first, last = start + lead, end + lead
        rows = [i for i in range(len(ends)) if starts[i] < last and ends[i] > first]
        sentence = text[start:end].strip()
        if not rows:
            results.append((sentence, ()))
            continue
        weight = shares[rows].sum(dim=0)  # (W,)
        order = torch.argsort(weight, descending=True).tolist()
        chosen = tuple(i for i in order[:MAX_WINDOWS_PER_SENTENCE] if weight[i] > 0)
        results.append((sentence, tuple(windows[i].index for i in chosen)))
    return results

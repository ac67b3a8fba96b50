"""Encoding windows independently and fusing them into one decoder memory."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from .progress import CancellationToken, ProgressFn, ignore_progress
from .speed import encoder_for, encoding_threads, resolve_precision, torch_threads
from .windows import Windows

log = logging.getLogger(__name__)


@dataclass
class FusedMemory:
    """The encoder states of every window, concatenated for the decoder to attend to."""

    hidden_states: torch.Tensor  # (1, positions, d_model): non-padding positions of all windows, in order
    attention_mask: torch.Tensor  # (1, positions), all ones
    window_positions: list[int]  # positions each window contributes, special tokens included

    @property
    def positions(self) -> int:
        return self.hidden_states.shape[1]


def default_batch_windows(device: torch.device) -> int:
    """Return how many windows to encode at once on ``device``.

    On 2 CPU cores, ``bench/encode.py`` measured 4 windows per batch 1.35 (fp32)
    to 1.8 (int8) times faster than 1. Batches of 8 gained little more, and lost for int8.
    A GPU needs several windows at once to be kept busy.
    """
    return 4 if device.type == "cpu" else 8


def encode_windows(
    model: PreTrainedModel,
    windows: Windows,
    batch_windows: int | None = None,
    progress: ProgressFn = ignore_progress,
    cancel: CancellationToken | None = None,
    precision: str = "fp32",
    threads: int | None = None,
) -> FusedMemory:
    """Encode ``windows`` in batches without gradients and fuse them into one memory.

    ``precision`` is one of ``speed.PRECISIONS``; the fused memory is float32
    whatever it is. ``threads`` sets torch's CPU threads while encoding (None:
    ``speed.encoding_threads()``). Progress is reported in windows encoded;
    ``cancel`` is checked between batches.
    """
    device = model.device
    batch_windows = batch_windows or default_batch_windows(device)
    requested, precision = precision, resolve_precision(precision, device)
    total = len(windows)
    pieces: list[torch.Tensor] = []
    lengths = windows.attention_mask.sum(dim=1).tolist()

    progress(0, total, "windows")
    cpu_threads = (threads or encoding_threads()) if device.type == "cpu" else None
    with torch_threads(cpu_threads), torch.inference_mode(), encoder_for(model, precision) as encoder:
        for start in range(0, total, batch_windows):
            if cancel is not None:
                cancel.raise_if_cancelled()
            stop = min(start + batch_windows, total)
            # Trim the batch to its longest window so a short last window
            # does not make every batch pay for padding.
            width = max(lengths[start:stop])
            ids = windows.input_ids[start:stop, :width].to(device)
            mask = windows.attention_mask[start:stop, :width].to(device)
            states = encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, d)
            for row, length in enumerate(lengths[start:stop]):
                pieces.append(states[row, :length].float())
            progress(stop, total, "windows")

    hidden = torch.cat(pieces, dim=0).unsqueeze(0)
    mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=device)
    log.info(
        "encoded %d windows (%d positions) in %s (requested %s), %d per batch",
        total, hidden.shape[1], precision, requested, batch_windows,
    )
    return FusedMemory(hidden, mask, [int(n) for n in lengths])

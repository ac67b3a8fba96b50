"""Turning pairs into model inputs, and the order documents are visited in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..documents.model import Document
from ..errors import SettingsError
from ..generation import decoder_position_limit
from ..models import LoadedModel
from ..pairs import Pair
from ..summarize import document_windows
from ..windows import Windows


@dataclass
class Example:
    """One pair as tensors: the whole document's windows and the summary's label ids."""

    pair: Pair
    windows: Windows  # built exactly as the generation path builds them
    labels: torch.Tensor  # (1, summary_length), the tokenizer's special tokens included, no padding

    @property
    def input_ids(self) -> torch.Tensor:
        return self.windows.input_ids  # (windows, window_length)

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.windows.attention_mask  # (windows, window_length), 0 on padding

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def summary_tokens(self) -> int:
        return self.labels.shape[1]


def summary_labels(loaded: LoadedModel, pair: Pair) -> torch.Tensor:
    """Tokenize ``pair``'s summary as a target; raise SettingsError if the decoder has too few positions."""
    ids = loaded.tokenizer(text_target=pair.summary, add_special_tokens=True, verbose=False)["input_ids"]
    limit = decoder_position_limit(loaded.model)
    if limit is not None and len(ids) > limit:
        raise SettingsError(
            f"{pair.source}: the summary is {len(ids)} tokens but {loaded.name}'s decoder has "
            f"{limit} positions. Shorten the summary or leave the pair out."
        )
    return torch.tensor([ids], dtype=torch.long)


def prepare_example(pair: Pair, loaded: LoadedModel, window_tokens: int | None) -> Example:
    """Cut ``pair``'s document into windows exactly as summarizing it would, and tokenize its summary."""
    document = Document(Path(pair.source), "txt", pair.document)
    windows = document_windows(document, loaded, window_tokens)
    return Example(pair, windows, summary_labels(loaded, pair))


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """Return the shuffled order of ``count`` pairs for ``epoch``, the same for the same seed and epoch.

    The shuffle draws from its own generator, so it neither depends on nor
    moves the global RNG that dropout uses.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(count, generator=generator).tolist()

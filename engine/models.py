"""Loading encoder-decoder models safely, and choosing the device.

Weights load from safetensors only and ``trust_remote_code`` is never set, so
opening a model cannot run code shipped with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .errors import (
    ModelError,
    ModelNotFoundError,
    NotEncoderDecoderError,
    SettingsError,
    UnsafeWeightsError,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/bart-large-cnn"

# Relative-position models (T5 and its kin) have no position table; 512 tokens
# is the input length they were pre-trained on.
RELATIVE_POSITION_WINDOW = 512

# Tokenizers without a real limit report a huge sentinel (about 1e30).
_UNSET_TOKENIZER_LIMIT = 1_000_000


@dataclass
class LoadedModel:
    """A model ready for inference, with what windowing needs to know about it."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    max_window_tokens: int  # the encoder's position limit, special tokens included
    special_prefix: list[int]  # ids the tokenizer puts before a sequence (BART: <s>)
    special_suffix: list[int]  # ids it puts after one (BART and T5: </s>)

    def window_tokens(self, requested: int | None = None) -> int:
        """Return the window length to use: ``requested`` if given and allowed."""
        if requested is None:
            return self.max_window_tokens
        minimum = len(self.special_prefix) + len(self.special_suffix) + 1
        if not minimum <= requested <= self.max_window_tokens:
            raise SettingsError(
                f"Window length {requested} is invalid for {self.name}: "
                f"use {minimum} to {self.max_window_tokens} tokens."
            )
        return requested


def resolve_device(requested: str | None = None) -> torch.device:
    """Return the device to run on: CUDA, then MPS, then CPU, unless one is requested."""
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise SettingsError(
            f"Unknown device '{requested}': use auto, cpu, cuda, cuda:N or mps."
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("CUDA was requested but no CUDA GPU is available: use --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError("MPS was requested but is not available here: use --device cpu.")
    return device


def encoder_position_limit(config, tokenizer: PreTrainedTokenizerBase) -> int:
    """Return how many tokens, special tokens included, one encoder input may hold."""
    limit = getattr(config, "max_encoder_position_embeddings", None)
    if limit is None:
        limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        limit = RELATIVE_POSITION_WINDOW

    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if tokenizer_limit and tokenizer_limit < _UNSET_TOKENIZER_LIMIT:
        limit = min(limit, tokenizer_limit)
    return int(limit)


def special_token_frame(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """Return the ids the tokenizer adds before and after a single sequence.

    Found by comparing one probe word with and without special tokens, which
    works for every tokenizer family (BART adds ``<s>`` and ``</s>``, T5 and
    PEGASUS only ``</s>``, mBART ``</s>`` and a language code).
    """
    probe = "summary"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    framed = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(framed) - len(bare) + 1):
        if framed[start : start + len(bare)] == bare:
            return list(framed[:start]), list(framed[start + len(bare) :])
    raise ModelError(
        f"The tokenizer {type(tokenizer).__name__} changes text when it adds special "
        "tokens, so windows cannot be framed: use another model."
    )


# Keys of a config's task_specific_params["summarization"] that are generation settings.
_TASK_GENERATION_KEYS = (
    "max_length",
    "min_length",
    "num_beams",
    "length_penalty",
    "no_repeat_ngram_size",
    "early_stopping",
)


def apply_summarization_defaults(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Apply the model's own summarization settings, if its config has them.

    T5 checkpoints keep them in ``task_specific_params["summarization"]``: an
    input prefix ("summarize: ") and generation defaults, which go into the
    model's generation config. Returns the prefix's token ids (empty without one).
    """
    task = (getattr(model.config, "task_specific_params", None) or {}).get("summarization") or {}
    for key in _TASK_GENERATION_KEYS:
        if key in task:
            setattr(model.generation_config, key, task[key])
    text = task.get("prefix") or ""
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or "\\" in source or Path(source).exists()


def check_model_folder(folder: Path, tokenizer: bool = True) -> None:
    """Raise a ModelError unless ``folder`` has a config, safetensors weights and (if asked) tokenizer files."""
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"Model folder not found: {folder}. Pass --model with a folder that contains "
            "config.json, the tokenizer files and model.safetensors."
        )
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"{folder} has no config.json, so it is not a model folder in "
            "save_pretrained layout."
        )
    has_safetensors = any(folder.glob("*.safetensors")) or (
        folder / "model.safetensors.index.json"
    ).is_file()
    if not has_safetensors:
        pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        detail = f" It has {', '.join(sorted(pickled))}, which can run code when loaded." if pickled else ""
        raise UnsafeWeightsError(
            f"{folder} has no .safetensors weights.{detail} Synopsis loads safetensors "
            "only: convert the weights with save_pretrained(safe_serialization=True)."
        )
    if tokenizer:
        _check_tokenizer_files(folder)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def _check_tokenizer_files(folder: Path) -> None:
    # transformers 5 builds an empty tokenizer from a folder without these files, silently.
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelNotFoundError(
            f"{folder} has no tokenizer files (tokenizer.json or tokenizer_config.json): "
            "save the tokenizer into the folder with tokenizer.save_pretrained."
        )


def load_model(
    source: str | Path | None = None,
    device: str | None = None,
    cache_dir: str | Path | None = None,
) -> LoadedModel:
    """Load an encoder-decoder model and its tokenizer from a folder or a hub id.

    A hub id is read from the Hugging Face cache (``cache_dir`` if given),
    downloading into it when the hub is reachable.
    """
    source = str(source or DEFAULT_MODEL)
    local = _looks_like_path(source)
    if local:
        folder = Path(source).expanduser()
        # Tokenizer files are checked after the config, so an unsuitable model is named as such first.
        check_model_folder(folder, tokenizer=False)
        source = str(folder)
    common = {"cache_dir": str(cache_dir) if cache_dir else None, "trust_remote_code": False}

    try:
        config = AutoConfig.from_pretrained(source, **common)
    except (OSError, ValueError) as error:
        log.warning("config of %s could not be loaded: %s", source, error)
        if local:
            raise ModelError(f"{source}: config.json could not be read ({error}).") from error
        raise ModelNotFoundError(
            f"Model '{source}' is not in the local Hugging Face cache and could not be "
            "downloaded (no connection, or no such model on the hub). Connect and try "
            "again, or pass --model PATH with a model folder in save_pretrained layout."
        ) from error

    if not getattr(config, "is_encoder_decoder", False):
        raise NotEncoderDecoderError(
            f"'{source}' is not an encoder-decoder model ({config.model_type}): Synopsis "
            "needs one such as BART, PEGASUS, mBART or T5."
        )

    if local:
        _check_tokenizer_files(Path(source))
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(source, use_safetensors=True, **common)
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
    except ValueError as error:
        raise ModelError(f"'{source}' could not be loaded as a summarization model: {error}") from error
    except OSError as error:
        if "safetensors" in str(error).lower() and "no file named" in str(error).lower():
            raise UnsafeWeightsError(
                f"'{source}' has no safetensors weights; Synopsis does not load pickled "
                "weights because they can run code."
            ) from error
        raise ModelError(f"'{source}' could not be loaded: {error}") from error
    except Exception as error:  # noqa: BLE001 - safetensors and tokenizers raise their own types
        log.exception("loading %s failed", source)
        raise ModelError(
            f"'{source}' could not be loaded ({type(error).__name__}: {error}). Its files may be "
            "damaged or incomplete: download or copy the model again."
        ) from error
    if len(tokenizer) < 2 or not tokenizer("summary", add_special_tokens=False)["input_ids"]:
        raise ModelError(f"'{source}' has an empty tokenizer: its tokenizer files are missing or damaged.")

    target = resolve_device(device)
    model.eval()
    model.to(target)
    prefix, suffix = special_token_frame(tokenizer)
    task_prefix = apply_summarization_defaults(model, tokenizer)
    # The task prefix opens every window, because each window is encoded as
    # an input of its own.
    prefix = prefix + task_prefix
    limit = encoder_position_limit(config, tokenizer)
    log.info("loaded %s (%s) on %s, window %d tokens", source, config.model_type, target, limit)
    return LoadedModel(
        name=source,
        model=model,
        tokenizer=tokenizer,
        device=target,
        max_window_tokens=limit,
        special_prefix=prefix,
        special_suffix=suffix,
    )

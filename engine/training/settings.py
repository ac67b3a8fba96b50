"""Training settings: one frozen dataclass the CLI and the GUI build and the trainer reads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import SettingsError
from ..generation import GenerationSettings

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ROUGE_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
LOWER_IS_BETTER = ("loss",)


@dataclass(frozen=True)
class TrainingSettings:
    """How to fine-tune: data passes, optimizer, evaluation, checkpoints and precision."""

    epochs: int = 3  # passes over the training pairs
    max_steps: int | None = None  # optimizer steps over the whole run, resumed or not; None: epochs decide
    learning_rate: float = 3e-5  # peak AdamW learning rate, reached at the end of warmup
    warmup_fraction: float = 0.05  # share of all steps spent warming up linearly from 0
    weight_decay: float = 0.01  # AdamW decoupled weight decay; biases and LayerNorm weights get none
    accumulate: int = 8  # documents per optimizer step
    max_grad_norm: float | None = 1.0  # clip the global gradient L2 norm to this; None: no clipping
    chunk_windows: int = 1  # windows re-encoded with a graph at once; more is faster and uses more memory
    eval_every: int = 100  # optimizer steps between evaluations and checkpoints
    patience: int | None = None  # evaluations without improvement before stopping; None: never stop early
    best_metric: str = "rougeLsum"  # "rouge1", "rouge2", "rougeL", "rougeLsum" (higher is better) or "loss"
    keep_last: int = 2  # step checkpoints kept besides the best one
    seed: int = 0
    precision: str = "auto"  # "auto", "fp32", "bf16" or "fp16"
    window_tokens: int | None = None  # window length, special tokens included; None: the encoder's limit
    eval_generation: GenerationSettings = field(default_factory=GenerationSettings)
    max_eval_pairs: int | None = None  # validation pairs used per evaluation; None: all of them
    max_skipped_steps: int = 10  # steps with a non-finite loss or gradient before training stops

    def validate(self) -> None:
        """Raise SettingsError naming the first invalid setting and its allowed range."""
        for name in ("epochs", "accumulate", "chunk_windows", "eval_every", "keep_last", "max_skipped_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SettingsError(f"{name.replace('_', ' ')} must be a whole number of at least 1, got {value!r}.")
        for name in ("max_steps", "patience", "max_eval_pairs", "window_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise SettingsError(
                    f"{name.replace('_', ' ')} must be a whole number of at least 1 or unset, got {value!r}."
                )
        if not self.learning_rate > 0:
            raise SettingsError(f"learning rate must be greater than 0, got {self.learning_rate!r}.")
        if not 0 <= self.warmup_fraction < 1:
            raise SettingsError(f"warmup fraction must be at least 0 and below 1, got {self.warmup_fraction!r}.")
        if not self.weight_decay >= 0:
            raise SettingsError(f"weight decay must be 0 or more, got {self.weight_decay!r}.")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise SettingsError(f"max grad norm must be greater than 0 or unset, got {self.max_grad_norm!r}.")
        if self.best_metric not in ROUGE_METRICS + LOWER_IS_BETTER:
            choices = ", ".join(ROUGE_METRICS + LOWER_IS_BETTER)
            raise SettingsError(f"best metric '{self.best_metric}' is unknown: use one of {choices}.")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision '{self.precision}' is unknown: use one of {', '.join(PRECISIONS)}.")
        self.eval_generation.validate()

    @property
    def higher_is_better(self) -> bool:
        return self.best_metric not in LOWER_IS_BETTER

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "TrainingSettings":
        """Build settings from ``to_json`` output; unknown keys raise SettingsError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"Unknown training settings: {', '.join(unknown)}.")
        values = dict(data)
        if isinstance(values.get("eval_generation"), dict):
            values["eval_generation"] = GenerationSettings(**values["eval_generation"])
        return cls(**values)

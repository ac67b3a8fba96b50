"""Fine-tuning encoder-decoders on whole documents with gradient caching.

``cached_backward`` is one document's training step; ``Trainer`` is the
recipe around it (data order, accumulation, evaluation, checkpoints, resume).
"""

from .events import (
    CheckpointEvent,
    EvaluationEvent,
    EvaluationExample,
    FinishedEvent,
    StepEvent,
    TrainingEvent,
    TrainingResult,
)
from .precision import Precision, choose_precision
from .settings import TrainingSettings
from .step import cached_backward
from .trainer import Trainer, TrainingDivergedError

__all__ = [
    "CheckpointEvent",
    "EvaluationEvent",
    "EvaluationExample",
    "FinishedEvent",
    "Precision",
    "StepEvent",
    "Trainer",
    "TrainingDivergedError",
    "TrainingEvent",
    "TrainingResult",
    "TrainingSettings",
    "cached_backward",
    "choose_precision",
]

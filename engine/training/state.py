"""Run progress: the counters a checkpoint stores so a resumed run continues exactly."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field


@dataclass
class RunState:
    """Progress of a run between optimizer steps, stored as ``trainer_state.json``."""

    step: int = 0  # optimizer steps completed, skipped ones included
    epoch: int = 0  # 0-based pass over the training pairs in progress
    order: list[int] = field(default_factory=list)  # this epoch's shuffled pair indices
    position: int = 0  # next index into ``order``
    best_step: int | None = None
    best_value: float | None = None
    evaluations_without_improvement: int = 0
    skipped_steps: int = 0  # steps dropped for a non-finite loss or gradient
    base_model: str = ""
    pairs_fingerprint: str = ""  # SHA-256 over the training pairs' texts; empty in older checkpoints

    @staticmethod
    def fingerprint(pairs) -> str:
        """Return a SHA-256 over the pairs' documents and summaries, in order."""
        digest = hashlib.sha256()
        for pair in pairs:
            for text in (pair.document, pair.summary):
                data = text.encode("utf-8")
                digest.update(len(data).to_bytes(8, "little"))
                digest.update(data)
        return digest.hexdigest()

    def improves(self, value: float, higher_is_better: bool) -> bool:
        if self.best_value is None:
            return True
        return value > self.best_value if higher_is_better else value < self.best_value

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "RunState":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

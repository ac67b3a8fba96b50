"""Optimizer-step counts of a run, and what resuming it with another world size changes.

A step takes ``accumulate`` documents on each of ``world_size`` processes, and
an epoch's last step takes whatever is left, so an epoch has
ceil(pairs / (accumulate x world size)) steps. A checkpoint stores its
position in the epoch's order in documents, not in steps. So a run resumed
with another world size continues at the right document, but the steps left
in the run, and the learning-rate schedule spread over them, change.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from ..counts import count
from . import checkpoint
from .settings import TrainingSettings

log = logging.getLogger(__name__)


def steps_per_epoch(train_pairs: int, accumulate: int, world_size: int = 1) -> int:
    return math.ceil(train_pairs / (accumulate * world_size))


def planned_total_steps(train_pairs: int, settings: TrainingSettings, world_size: int = 1) -> int:
    """Return the optimizer steps of a new run: every epoch, capped by ``max_steps``."""
    total = settings.epochs * steps_per_epoch(train_pairs, settings.accumulate, world_size)
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    return total


def resumed_total_steps(
    train_pairs: int, settings: TrainingSettings, world_size: int, step: int, epoch: int, position: int
) -> int:
    """Return the optimizer steps of a run resumed after ``step``, at document ``position`` of epoch ``epoch``.

    The steps already taken count as they were, whatever their size. The
    documents left in the epoch and the epochs after it are counted in steps
    of the new world size. With the world size of the saved run this equals
    ``planned_total_steps``.
    """
    per_epoch = steps_per_epoch(train_pairs, settings.accumulate, world_size)
    left_in_epoch = math.ceil(max(train_pairs - position, 0) / (settings.accumulate * world_size))
    later_epochs = max(settings.epochs - 1 - epoch, 0)
    total = step + left_in_epoch + later_epochs * per_epoch
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    return total


@dataclass(frozen=True)
class ResumePoint:
    """The newest complete checkpoint of a run folder, and the plan that ``run.json`` records."""

    folder: Path
    step: int
    epoch: int
    position: int
    world_size: int  # processes the run was trained with; 1 when run.json does not say
    total_steps: int | None  # the total that run.json records; None when it cannot be read
    world_size_changes: list[dict]  # run.json's earlier resumes with another world size


def read_resume_point(output_dir: Path) -> ResumePoint | None:
    """Return where a ``--resume`` of ``output_dir`` continues, or None when it has no complete checkpoint."""
    complete = checkpoint.complete_checkpoints(output_dir / "checkpoints")
    if not complete:
        return None
    step, folder = complete[-1]
    state, _ = checkpoint.read_state(folder)
    return resume_point(output_dir, folder, step, int(state.get("epoch", 0)), int(state.get("position", 0)))


def resume_point(output_dir: Path, folder: Path, step: int, epoch: int, position: int) -> ResumePoint:
    """Return the checkpoint ``folder`` of ``output_dir`` at ``step``, with the plan that ``run.json`` records."""
    run = read_run_file(output_dir)
    total = run.get("total_steps")
    return ResumePoint(
        folder=folder,
        step=step,
        epoch=epoch,
        position=position,
        world_size=int(run.get("world_size", 1)),
        total_steps=int(total) if total is not None else None,
        world_size_changes=list(run.get("world_size_changes", [])),
    )


def read_run_file(output_dir: Path) -> dict:
    """Return ``run.json`` of ``output_dir`` as a dict, or an empty dict when it is missing or unreadable."""
    path = output_dir / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log.warning("%s could not be read (%s), so the run is taken to have used one process", path, error)
        return {}
    return data if isinstance(data, dict) else {}


def world_size_warning(point: ResumePoint, world_size: int, accumulate: int, total_steps: int) -> str | None:
    """Return the warning for resuming ``point`` in ``world_size`` processes, or None when the world size is the same."""
    if point.world_size == world_size:
        return None
    old_total = f"{count(point.total_steps, 'step')} in all" if point.total_steps is not None else "an unknown total"
    return (
        f"the run was trained in {count(point.world_size, 'process', 'processes')} "
        f"({count(accumulate * point.world_size, 'document')} per step, {old_total}) and resumes in "
        f"{count(world_size, 'process', 'processes')} ({count(accumulate * world_size, 'document')} per step). "
        f"It continues at the next document after step {point.step}, but now takes "
        f"{count(total_steps, 'step')} in all, and the learning-rate schedule is spread over that new total, "
        f"so the rate changes at the resume. To keep the original plan, resume with --nproc {point.world_size} "
        f"(or torchrun with {count(point.world_size, 'process', 'processes')} in all)."
    )


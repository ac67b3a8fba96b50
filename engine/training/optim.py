"""AdamW with linear warmup then linear decay to zero."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """Return AdamW over the trainable parameters, with no weight decay on biases and norm weights.

    Decaying a bias or a LayerNorm gain pulls it toward zero for no benefit,
    which is why BERT-style fine-tuning leaves 1-D parameters undecayed.
    ``named_parameters`` lists a tied matrix once, so BART's shared embedding
    is stepped once.
    """
    decayed, undecayed = [], []
    for _, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (undecayed if parameter.ndim < 2 else decayed).append(parameter)
    groups = [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": undecayed, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate)


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    return math.ceil(total_steps * warmup_fraction)


def build_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float) -> LambdaLR:
    """Return a schedule rising linearly from 0 over the warmup, then falling linearly to 0 at ``total_steps``.

    Step ``s`` (0-based) trains at ``lr * (s + 1) / warmup`` during the warmup,
    so the first step already moves the weights.
    """
    warmup = warmup_steps(total_steps, warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        remaining = total_steps - step
        return max(remaining, 0) / max(total_steps - warmup, 1)

    return LambdaLR(optimizer, factor)


def reapply_schedule(schedule: LambdaLR) -> None:
    """Set each group's rate from the schedule's own factor at its current step.

    A restored optimizer keeps the rate the saved run computed, which is wrong
    when the run is resumed with another total (a larger ``--max-steps``).
    """
    for group, base, factor in zip(schedule.optimizer.param_groups, schedule.base_lrs, schedule.lr_lambdas):
        group["lr"] = base * factor(schedule.last_epoch)
    schedule._last_lr = [group["lr"] for group in schedule.optimizer.param_groups]

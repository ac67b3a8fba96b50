"""Seeding every random generator, and saving their states in a form ``torch.load(weights_only=True)`` reads."""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import torch

try:
    import numpy
except ImportError:  # numpy is optional for torch; nothing here needs it
    numpy = None


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's (when installed) and torch's generators, CUDA included."""
    random.seed(seed)
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


def capture_rng_state() -> dict:
    """Return every generator's state as tensors, lists and numbers only, so no pickled object is stored."""
    version, internal, gauss = random.getstate()
    state = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if numpy is not None:
        kind, keys, position, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype("int64")),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    return state


def restore_rng_state(state: dict) -> None:
    """Restore what ``capture_rng_state`` returned; CUDA states are skipped when the device count differs."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    torch.set_rng_state(state["torch_cpu"])
    cuda_states = state.get("torch_cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    saved_numpy = state.get("numpy")
    if numpy is not None and saved_numpy is not None:
        numpy.random.set_state(
            (
                saved_numpy["kind"],
                saved_numpy["keys"].numpy().astype("uint32"),
                saved_numpy["position"],
                saved_numpy["has_gauss"],
                saved_numpy["cached_gaussian"],
            )
        )


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Run the body without moving any generator, so evaluation leaves training's random stream intact."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)

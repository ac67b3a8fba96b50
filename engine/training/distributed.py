"""Data-parallel training over several processes with DistributedDataParallel (DDP).

Every process (rank) keeps a full copy of the model and trains on its own
share of each optimizer step's documents. The processes are started by
PyTorch's elastic launcher: ``launch`` here for ``synopsis train --nproc N``,
or a user's own ``torchrun``. Either way the launcher sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``, and
``from_environment`` joins the process group they describe.

Gradient caching runs one document as several forward and backward passes
(decoder, then each chunk of windows re-encoded), so ``StepModule`` puts both
kinds of forward behind one ``nn.Module`` that DDP wraps. Every pass but the
last of an optimizer step runs under ``no_sync``, and the last chunk's forward
and backward run synced. The gradients are therefore all-reduced once per step.

The synced backward reaches only encoder parameters (and the tied embedding).
The decoder's parameters got their gradient earlier, under ``no_sync``. DDP is
built with ``find_unused_parameters=True`` for that reason. In the synced
forward DDP (torch 2.13) walks the autograd graph, finds the decoder's
parameters unused, and marks them ready without waiting for a gradient. The
reducer then averages the gradient each one already has with the other
ranks', like any other. Without that setting the reducer would wait for
gradients the last backward never produces. ``tests/test_distributed.py``
checks that the result equals one process accumulating every document.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from transformers import PreTrainedModel

from .step import decoder_loss, encode_chunk

log = logging.getLogger(__name__)

# Rank 0 evaluates and writes checkpoints alone while the other ranks wait in a
# collective, so the timeout must cover the longest evaluation.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)

# The elastic agent forwards these signals to the workers. SIGINT is left out
# so that a terminal's Ctrl-C, which every worker receives itself, arrives once
# and requests a graceful stop with a checkpoint.
AGENT_SIGNALS = "SIGTERM,SIGHUP,SIGQUIT"


def launched_by_torchrun() -> bool:
    """Return whether this process is a worker that a launcher started (``WORLD_SIZE`` and ``RANK`` set)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


@dataclass
class Distributed:
    """This process's place in a process group, and the collectives the trainer needs."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """Return True on every rank when ``flag`` is True on at least one."""
        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.collective_device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def sum(self, *values: float) -> list[float]:
        """Return each of ``values`` summed over all ranks, on every rank."""
        totals = torch.tensor(values, dtype=torch.float64, device=self.collective_device)
        dist.all_reduce(totals)
        return totals.tolist()

    def barrier(self) -> None:
        dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Return rank 0's ``value`` on every rank (any picklable object)."""
        holder = [value]
        dist.broadcast_object_list(holder, src=0, device=self.collective_device)
        return holder[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Return every rank's ``value`` in rank order on rank 0, and None on the others."""
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    @property
    def collective_device(self) -> torch.device:
        # NCCL moves tensors between GPUs only; gloo works on CPU tensors.
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def worker_device(requested: str | None) -> torch.device:
    """Return the device a launched worker trains on: ``cuda:LOCAL_RANK`` when CUDA is used, else the CPU.

    ``requested`` is the ``--device`` value. A specific ``cuda:N`` is replaced
    by the worker's own GPU, because each rank must own one GPU.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = requested is None or requested == "auto" or requested.startswith("cuda")
    if wants_cuda and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            from ..errors import SettingsError

            raise SettingsError(
                f"Worker {local_rank} has no GPU: this machine has {torch.cuda.device_count()}. "
                "Start at most one process per GPU (--nproc)."
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def from_environment(device: torch.device) -> Distributed:
    """Join the process group the launcher's environment describes: NCCL on CUDA, gloo on the CPU.

    On the CPU each worker gets an equal share of the cores, so the workers
    of one machine do not oversubscribe it.

    NOTE: only the gloo path on the CPU is tested; the NCCL path has not run
    on a GPU yet.
    """
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        backend = "gloo"
    if not dist.is_initialized():
        options = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT, **options)
    log.info("rank %d of %d (local rank %d) joined the %s group on %s", rank, world_size, local_rank, backend, device)
    return Distributed(rank, local_rank, world_size, device)


def shut_down() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class StepModule(torch.nn.Module):
    """The two forwards of a gradient-cached step behind one ``forward``, so DDP can wrap them.

    ``forward("encode", input_ids, attention_mask)`` returns a chunk's
    non-padding states (positions, d_model), as ``step.encode_chunk``.
    ``forward("decoder_loss", memory, labels)`` returns the teacher-forced
    loss, as ``step.decoder_loss``.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, kind: str, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        if kind == "encode":
            return encode_chunk(self.model.get_encoder(), first, second)
        if kind == "decoder_loss":
            return decoder_loss(self.model, first, second)
        raise ValueError(f"unknown step forward '{kind}': use 'encode' or 'decoder_loss'")


class SyncedStep:
    """The DDP-wrapped step module, with the two forwards and ``no_sync`` that ``cached_backward`` calls."""

    def __init__(self, model: PreTrainedModel, device: torch.device) -> None:
        device_ids = [device] if device.type == "cuda" else None
        # find_unused_parameters: see the module docstring. Building the wrapper
        # copies rank 0's parameters and buffers to every rank.
        self.wrapped = DistributedDataParallel(StepModule(model), device_ids=device_ids, find_unused_parameters=True)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.wrapped("encode", input_ids, attention_mask)

    def decoder_loss(self, memory: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.wrapped("decoder_loss", memory, labels)

    def no_sync(self) -> ContextManager:
        return self.wrapped.no_sync()


def rank_documents(indices: list[int], rank: int, world_size: int) -> Iterator[tuple[int, int, bool]]:
    """Yield ``(pair index, share, last)`` for each document ``rank`` trains on in a step over ``indices``.

    Rank r takes ``indices[r::world_size]``. When the step's documents do not
    divide evenly, a rank with one fewer ends on a filler (the step's first
    document) with share 0. So every rank runs the same number of passes and
    collectives. ``last`` marks the pass whose last chunk all-reduces.
    """
    mine = indices[rank::world_size]
    passes = math.ceil(len(indices) / world_size)
    for position in range(passes):
        last = position == passes - 1
        if position < len(mine):
            yield mine[position], 1, last
        else:
            yield indices[0], 0, last


def rank_seed(seed: int, rank: int) -> int:
    """Return the seed of ``rank``'s dropout generator; rank 0 uses ``seed`` itself, as a single process does."""
    return seed + 1_000_003 * rank


# Launching ---------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that no one listens on now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(nproc: int, entry: Callable[..., int], *args: Any) -> dict[int, Any]:
    """Run ``entry(*args)`` in ``nproc`` worker processes on this machine through PyTorch's elastic launcher.

    This is what ``torchrun --standalone --nproc-per-node N`` does: a c10d
    rendezvous on a free port of 127.0.0.1, no restarts. Returns each local
    rank's return value. A worker that raises makes the launcher stop the
    others and raise ``ChildFailedError``.
    """
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"synopsis-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{free_port()}",
        max_restarts=0,
        monitor_interval=0.5,
        start_method="spawn",
        signals_to_handle=AGENT_SIGNALS,
    )
    return elastic_launch(config, entry)(*args)

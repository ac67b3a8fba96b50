"""DistributedDataParallel training in two gloo processes on 127.0.0.1, against one process.

One elastic launch runs every distributed trainer run the tests below check
(see ``worker``), so the process start-up is paid once. The launched runs and
their single-process references use the tiny model, with dropout off where
exact equality is checked and on where per-rank dropout is checked.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from synopsis.engine.models import load_model
from synopsis.engine.progress import CancellationToken
from synopsis.engine.cli_train import EXIT_TERMINATED
from synopsis.engine.training import Trainer, cached_backward, distributed, plan
from synopsis.engine.training.examples import epoch_order, prepare_example
from synopsis.engine.training.optim import build_optimizer, build_schedule
from synopsis.engine.training.seeding import seed_everything
from tests.test_cli_train import TOPICS, _pair, _synopsis_command, _train_args, _write_pairs
from tests.test_trainer import CancelAfterChecks, make_pairs, overlap_metric, settings, step_losses
from tests.tiny import build_tiny_model

WORLD_SIZE = 2
LAUNCH_TIMEOUT_S = 300

# Two float32 runs that sum the same per-document gradients in another order
# and divide once (one process) or twice (DDP's average) differ by rounding
# only, about 1e-7 relative per gradient. Two AdamW steps at learning rate
# 1e-3 move a weight by at most about 2e-3, and rounding changes that by far
# less than 1e-6.
PARAMETER_TOLERANCE = 1e-6


class CancelOnStep(CancellationToken):
    """A token that turns cancelled once the trainer has checked it ``checks`` times; None: never."""

    def __init__(self, checks: int | None) -> None:
        super().__init__()
        self.inner = CancelAfterChecks(checks) if checks is not None else None

    @property
    def cancelled(self) -> bool:
        return self.inner is not None and self.inner.cancelled


def train_run(model_dir: Path, output: Path, group, pairs_count: int, cancel=None, resume=False, **overrides):
    """Train the tiny model in ``model_dir`` as this rank of ``group``; return its final parameters."""
    loaded = load_model(model_dir, device="cpu")
    validation = make_pairs(1, offset=50) if overrides.pop("validate", False) else []
    Trainer(
        loaded, make_pairs(pairs_count), validation, settings(**overrides), output,
        cancel=cancel, metric_fn=overlap_metric, distributed=group,
    ).run(resume=resume)
    return {name: value.detach().clone() for name, value in loaded.model.named_parameters()}


@contextlib.contextmanager
def nan_loss_on_call(call: int | None):
    """Make the DDP step's decoder loss NaN on its ``call``-th forward in this process; None: never."""
    real = distributed.decoder_loss
    calls = {"count": 0}

    def poisoned(model, memory, labels):
        calls["count"] += 1
        loss = real(model, memory, labels)
        return loss * math.nan if calls["count"] == call else loss

    distributed.decoder_loss = poisoned
    try:
        yield
    finally:
        distributed.decoder_loss = real


def worker(plain_model: Path, dropout_model: Path, root: Path) -> dict:
    """Run every distributed case as one rank and return its final parameters per case."""
    group = distributed.from_environment(torch.device("cpu"))
    rank = group.rank
    # Rank 0 writes where the tests read; rank 1 is given a folder of its own,
    # so anything it wrote would show up there.
    own = lambda name: root / (name if rank == 0 else f"{name}-rank{rank}")  # noqa: E731
    common = dict(epochs=1, accumulate=1, eval_every=10, seed=5)
    try:
        results = {
            "plain": train_run(plain_model, own("plain"), group, 4, **common),
            "dropout": train_run(dropout_model, own("dropout"), group, 4, **common),
        }
        # Five pairs in steps of two documents: the third step gives rank 1 a filler.
        resumable = dict(common, eval_every=1, validate=True)
        train_run(dropout_model, root / "whole", group, 5, **resumable)
        # Only rank 1 cancels, at its third check: before step 2.
        stop = CancelOnStep(2 if rank == 1 else None)
        train_run(dropout_model, root / "parts", group, 5, cancel=stop, **resumable)
        results["resumed"] = train_run(dropout_model, root / "parts", group, 5, resume=True, **resumable)
        # Rank 1 alone gets a NaN loss on its second document, in step 2.
        with nan_loss_on_call(2 if rank == 1 else None):
            results["nan"] = train_run(plain_model, own("nan"), group, 4, **common)
        return results
    finally:
        distributed.shut_down()


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Build the two tiny models, launch ``worker`` in two processes and return (root, results per rank)."""
    root = tmp_path_factory.mktemp("ddp")
    plain = build_tiny_model(root / "tiny-plain", dropout=0.0)
    noisy = build_tiny_model(root / "tiny-dropout", dropout=0.1)
    results = distributed.launch(WORLD_SIZE, worker, plain, noisy, root)
    return root, results


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_parameters_close(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    worst = max(float((actual[name] - expected[name]).abs().max()) for name in expected)
    assert worst <= PARAMETER_TOLERANCE, f"largest parameter difference {worst:.3g}"


def rank_rng_reference(model_dir: Path, pairs_count: int, **overrides) -> dict:
    """Train one process as the two ranks do together: each document under its rank's own dropout stream.

    Step s takes documents ``order[2s]`` (rank 0) and ``order[2s + 1]`` (rank 1).
    Each is trained with the generator state its rank would have, then the
    step is clipped and taken as the trainer does.
    """
    run = settings(**overrides)
    loaded = load_model(model_dir, device="cpu")
    model = loaded.model
    model.train()
    pairs = make_pairs(pairs_count)
    total_steps = pairs_count // WORLD_SIZE
    optimizer = build_optimizer(model, run.learning_rate, run.weight_decay)
    schedule = build_schedule(optimizer, total_steps, run.warmup_fraction)
    generators = []
    for rank in range(WORLD_SIZE):
        seed_everything(distributed.rank_seed(run.seed, rank))
        generators.append(torch.get_rng_state())
    order = epoch_order(pairs_count, run.seed, 0)
    for step in range(total_steps):
        for rank in range(WORLD_SIZE):
            torch.set_rng_state(generators[rank])
            example = prepare_example(pairs[order[WORLD_SIZE * step + rank]], loaded, run.window_tokens)
            cached_backward(
                model, example.input_ids, example.attention_mask, example.labels, run.chunk_windows,
                loss_scale=1.0 / WORLD_SIZE,
            )
            generators[rank] = torch.get_rng_state()
        torch.nn.utils.clip_grad_norm_(model.parameters(), run.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
    return {name: value.detach().clone() for name, value in model.named_parameters()}


@pytest.mark.slow
def test_two_ranks_equal_one_process_accumulating(launched, tmp_path):
    root, results = launched
    reference_dir = tmp_path / "reference"
    loaded = load_model(root / "tiny-plain", device="cpu")
    Trainer(loaded, make_pairs(4), [], settings(epochs=1, accumulate=2, eval_every=10, seed=5), reference_dir).run()
    expected = {name: value.detach() for name, value in loaded.model.named_parameters()}

    assert_parameters_close(results[0]["plain"], expected)
    assert_parameters_close(results[1]["plain"], expected)
    distributed_steps, distributed_losses = zip(*step_losses(root / "plain"))
    reference_steps, reference_losses = zip(*step_losses(reference_dir))
    assert distributed_steps == reference_steps
    assert distributed_losses == pytest.approx(reference_losses, rel=1e-5)


@pytest.mark.slow
def test_dropout_follows_each_rank_stream(launched):
    # Rank 1's first document cannot draw the masks a single process would
    # draw for its second document: those follow from everything rank 0 drew.
    # So the reference gives each document the stream of the rank that trains it.
    _, results = launched
    expected = rank_rng_reference(launched[0] / "tiny-dropout", 4, epochs=1, accumulate=1, seed=5)
    assert_parameters_close(results[0]["dropout"], expected)
    assert_parameters_close(results[1]["dropout"], expected)


@pytest.mark.slow
def test_only_rank_zero_writes(launched):
    root, _ = launched
    for name in ("plain", "dropout"):
        assert not (root / f"{name}-rank1").exists()
        assert [step for step, _ in step_losses(root / name)] == [1, 2]
        assert (root / name / "last" / "model.safetensors").is_file()
        run = json.loads((root / name / "run.json").read_text(encoding="utf-8"))
        assert run["world_size"] == WORLD_SIZE
        assert run["documents_per_step"] == 2
    rank_states = torch.load(root / "whole" / "checkpoints" / "step-000003" / "rng_ranks.pt", weights_only=True)
    assert len(rank_states) == WORLD_SIZE
    assert not torch.equal(rank_states[0]["torch_cpu"], rank_states[1]["torch_cpu"])


@pytest.mark.slow
def test_cancel_on_one_rank_then_resume_matches(launched):
    root, results = launched
    whole = step_losses(root / "whole")
    assert [step for step, _ in whole] == [1, 2, 3]
    assert step_losses(root / "parts") == whole
    evaluations = [
        json.loads(line)["step"] for line in (root / "parts" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        if '"eval"' in line
    ]
    assert evaluations == [1, 2, 3]
    assert torch.equal(results[0]["resumed"]["model.shared.weight"], results[1]["resumed"]["model.shared.weight"])


@pytest.mark.slow
def test_nan_on_one_rank_skips_everywhere(launched):
    root, results = launched
    rows = [json.loads(line) for line in (root / "nan" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["skipped"] for row in rows] == [False, True]
    assert rows[1]["loss"] is None
    state = json.loads((root / "nan" / "last" / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["step"] == 2
    # Both ranks skipped the update, so their weights still agree.
    for name, value in results[0]["nan"].items():
        assert torch.equal(value, results[1]["nan"][name]), name
    assert not (root / "nan-rank1").exists()


@pytest.mark.parametrize(
    "indices, rank, expected",
    [
        ([4, 1, 3, 0], 0, [(4, 1, False), (3, 1, True)]),
        ([4, 1, 3, 0], 1, [(1, 1, False), (0, 1, True)]),
        ([4, 1, 3], 0, [(4, 1, False), (3, 1, True)]),
        ([4, 1, 3], 1, [(1, 1, False), (4, 0, True)]),
        ([2], 1, [(2, 0, True)]),
    ],
)
def test_rank_documents_share_and_filler(indices, rank, expected):
    assert list(distributed.rank_documents(indices, rank, WORLD_SIZE)) == expected


def newest_checkpoint_state(output: Path) -> dict:
    newest = sorted((output / "checkpoints").glob("step-*"))[-1]
    return json.loads((newest / "trainer_state.json").read_text(encoding="utf-8"))


def _run_synopsis(arguments: list) -> subprocess.CompletedProcess:
    return subprocess.run(
        _synopsis_command() + [str(part) for part in arguments],
        capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.parametrize(
    "world_size, step, position, expected",
    [
        (1, 4, 8, 14),  # trained in 2 processes: 10 documents left, one per step
        (2, 4, 8, 9),  # the saved run's own world size keeps its plan
        (2, 5, 5, 12),  # trained in 1 process: 13 documents left, two per step
        (1, 9, 18, 9),  # the epoch is used up
    ],
)
def test_resumed_total_counts_documents_left(world_size, step, position, expected):
    run = settings(epochs=1, accumulate=1)
    assert plan.resumed_total_steps(18, run, world_size, step, 0, position) == expected


@pytest.mark.slow
def test_cli_nproc_resumes_one_process_run(tiny_model_dir, tmp_path):
    pairs = _write_pairs(tmp_path / "pairs.jsonl", [_pair(subject, event) for subject, event in TOPICS])
    output = tmp_path / "run"
    completed = _run_synopsis(_train_args(pairs, tiny_model_dir, output, "--max-steps", "1", "--accumulate", "1", "-q"))
    assert completed.returncode == 0, completed.stdout + completed.stderr

    # Two processes take the 3 documents left of the epoch in 2 steps.
    arguments = _train_args(pairs, tiny_model_dir, output, "--epochs", "1", "--accumulate", "1", "--nproc", "2", "-q")
    completed = _run_synopsis(arguments + ["--resume", "--max-steps", "100"])
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Processes:   2, 1 document each, 2 per optimizer step" in completed.stdout
    assert "Time:        about" in completed.stdout
    assert "for 2 steps" in completed.stdout  # a new run in 2 processes: 4 pairs, 2 per step
    assert "Resuming:    from step 1 of 3" in completed.stdout
    assert "Training finished after 3 of 3 steps." in completed.stdout
    assert completed.stdout.count("Training:    4 pairs") == 1  # rank 1 prints nothing
    warning = completed.stderr
    assert "synopsis: warning: the run was trained in 1 process (1 document per step, 1 step in all)" in warning
    assert "resumes in 2 processes (2 documents per step)" in warning
    assert "3 steps in all" in warning
    assert "--nproc 1" in warning
    assert [step for step, _ in step_losses(output)] == [1, 2, 3]
    state = newest_checkpoint_state(output)
    assert state["step"] == 3
    assert (state["epoch"], state["position"]) == (0, 4)
    run = json.loads((output / "run.json").read_text(encoding="utf-8"))
    assert run["world_size"] == 2
    assert run["total_steps"] == 3
    assert run["world_size_changes"] == [{"step": 1, "from": 1, "to": 2}]


@pytest.mark.slow
def test_cli_nproc_sigterm_then_resume_alone(tiny_model_dir, tmp_path):
    pairs = _write_pairs(tmp_path / "pairs.jsonl", [_pair(subject, event) for subject, event in TOPICS])
    output = tmp_path / "run"
    arguments = _train_args(pairs, tiny_model_dir, output, "--epochs", "50", "--accumulate", "1", "--nproc", "2", "-q")
    process = subprocess.Popen(
        _synopsis_command() + [str(part) for part in arguments],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    # Stop the launcher once a checkpoint is complete.
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        if (output / "last" / "config.json").is_file():
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=LAUNCH_TIMEOUT_S)
    assert process.returncode == EXIT_TERMINATED == 143, out + err
    assert "synopsis: training stopped by SIGTERM" in err
    assert f"--output {output} --resume --nproc 2" in err
    assert "Traceback" not in err
    assert "SignalException" not in err

    # Resumed in one process, the run warns and keeps to the 4 pairs of each epoch.
    saved = newest_checkpoint_state(output)
    total = saved["step"] + 1
    resumed = _train_args(pairs, tiny_model_dir, output, "--epochs", "50", "--accumulate", "1", "-q")
    completed = _run_synopsis(resumed + ["--resume", "--max-steps", str(total)])
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"Resuming:    from step {saved['step']} of {total}" in completed.stdout
    warning = completed.stderr
    assert "the run was trained in 2 processes (2 documents per step, 100 steps in all)" in warning
    assert "resumes in 1 process (1 document per step)" in warning
    assert "--nproc 2 (or torchrun with 2 processes in all)" in warning
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["step"] for row in rows if "eval" not in row][-1] == total
    # One more document, from the saved position: 2 per step before, 1 now.
    state = newest_checkpoint_state(output)
    documents_done = lambda data: 4 * data["epoch"] + data["position"]  # noqa: E731
    assert documents_done(state) == documents_done(saved) + 1
    run = json.loads((output / "run.json").read_text(encoding="utf-8"))
    assert run["world_size"] == 1
    assert run["world_size_changes"] == [{"step": saved["step"], "from": 2, "to": 1}]

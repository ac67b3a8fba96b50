"""Training survives a killed process and a full disk without losing finished steps.

A non-finite loss (skipped, counted, and stopping the run after
max_skipped_steps) is tested in test_trainer.py.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from synopsis.engine.models import load_model
from synopsis.engine.training import Trainer
from synopsis.engine.training import checkpoint as checkpoint_module
from synopsis.engine.training.checkpoint import CheckpointWriteError
from tests.test_cli_train import TOPICS, _pair, _synopsis_command, _train_args, _write_pairs
from tests.test_trainer import make_pairs, settings, step_losses

MAX_STEPS = 4
RUN_TIMEOUT_S = 300
"""Time bound for one training subprocess. A run of four tiny-model steps took
about 10 s on a shared 2-core machine, so the bound is generous."""


pytestmark = pytest.mark.usefixtures("one_thread")


# Killed training process ---------------------------------------------------------


def train_command(pairs: Path, model: Path, output: Path, *extra: str) -> list[str]:
    arguments = _train_args(pairs, model, output, "--max-steps", str(MAX_STEPS), "--seed", "3", "-q", *extra)
    return _synopsis_command() + [str(part) for part in arguments]


def subprocess_environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_to_end(command: list[str]) -> None:
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=subprocess_environment(), check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def step_rows_written(output: Path) -> int:
    metrics = output / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    return sum(1 for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip() and '"eval"' not in line)


def temporary_folders(folder: Path, name_start: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return [path for path in folder.iterdir() if path.name.startswith(name_start)]


# Each kill point is a predicate on the output folder, polled every few
# milliseconds; the process is killed with SIGKILL as soon as it holds.
KILL_POINTS = {
    "after_second_step_logged": lambda output: step_rows_written(output) >= 2,
    "during_checkpoint_write": lambda output: bool(
        temporary_folders(output / "checkpoints", f"{checkpoint_module.TEMPORARY_PREFIX}step-000002")
    ),
    "during_last_folder_update": lambda output: step_rows_written(output) >= 2
    and bool(temporary_folders(output, f"{checkpoint_module.TEMPORARY_PREFIX}last")),
}


def kill_when(command: list[str], output: Path, condition) -> bool:
    """Start ``command``, SIGKILL it once ``condition(output)`` holds; return False if it ended first."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_environment()
    )
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if condition(output):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.002)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def kill_setup(tiny_model_dir, tmp_path_factory):
    """Pairs file and the step losses of an uninterrupted run with the same seed."""
    folder = tmp_path_factory.mktemp("kill")
    pairs = _write_pairs(folder / "pairs.jsonl", [_pair(subject, event) for subject, event in TOPICS])
    whole = folder / "whole"
    run_to_end(train_command(pairs, tiny_model_dir, whole))
    return pairs, step_losses(whole)


@pytest.mark.slow
@pytest.mark.parametrize("kill_point", list(KILL_POINTS))
def test_resume_after_sigkill_matches_whole_run(kill_point, kill_setup, tiny_model_dir, tmp_path):
    pairs, whole_losses = kill_setup
    assert [step for step, _ in whole_losses] == list(range(1, MAX_STEPS + 1))
    output = tmp_path / "run"

    killed = kill_when(train_command(pairs, tiny_model_dir, output), output, KILL_POINTS[kill_point])
    assert killed, f"the run finished before the kill point {kill_point} was seen"
    if kill_point == "during_checkpoint_write":
        # The half-written folder is left behind, and no step-2 checkpoint was published.
        assert temporary_folders(output / "checkpoints", checkpoint_module.TEMPORARY_PREFIX)
        assert not (output / "checkpoints" / "step-000002" / checkpoint_module.MARKER).exists()
    if kill_point == "during_last_folder_update":
        assert temporary_folders(output, f"{checkpoint_module.TEMPORARY_PREFIX}last")

    run_to_end(train_command(pairs, tiny_model_dir, output, "--resume"))

    assert step_losses(output) == whole_losses
    assert not temporary_folders(output / "checkpoints", checkpoint_module.TEMPORARY_PREFIX)
    assert not temporary_folders(output, checkpoint_module.TEMPORARY_PREFIX)
    last_state = json.loads((output / "last" / checkpoint_module.STATE_FILE).read_text(encoding="utf-8"))
    assert last_state["step"] == MAX_STEPS


# Disk full while saving ------------------------------------------------------------


def test_disk_full_keeps_previous_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    pairs = make_pairs(4)
    run_settings = settings(epochs=1, accumulate=1, eval_every=1, keep_last=2)
    whole = tmp_path / "whole"
    Trainer(load_model(tiny_model_dir, device="cpu"), pairs, [], run_settings, whole).run()

    # torch.save fails with ENOSPC inside the temporary folder of checkpoint step 3.
    real_save = torch.save

    def save_or_fail(value, destination, *args, **kwargs):
        if f"{checkpoint_module.TEMPORARY_PREFIX}step-000003" in str(destination):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))
        return real_save(value, destination, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_or_fail)
    output = tmp_path / "run"
    with pytest.raises(CheckpointWriteError) as raised:
        Trainer(load_model(tiny_model_dir, device="cpu"), pairs, [], run_settings, output).run()
    message = str(raised.value)
    assert "step-000003" in message
    assert os.strerror(errno.ENOSPC) in message
    assert "step-000002 is intact" in message
    assert "--resume" in message

    checkpoints = output / "checkpoints"
    assert [step for step, _ in checkpoint_module.complete_checkpoints(checkpoints)] == [1, 2]
    assert not temporary_folders(checkpoints, checkpoint_module.TEMPORARY_PREFIX)
    state, _ = checkpoint_module.read_state(checkpoints / "step-000002")
    assert state["step"] == 2
    last_state = json.loads((output / "last" / checkpoint_module.STATE_FILE).read_text(encoding="utf-8"))
    assert last_state["step"] == 2

    # With space again, the run resumes from step 2 and matches the uninterrupted one.
    monkeypatch.setattr(torch, "save", real_save)
    Trainer(load_model(tiny_model_dir, device="cpu"), pairs, [], run_settings, output).run(resume=True)
    assert step_losses(output) == step_losses(whole)


def test_disk_full_before_any_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    def always_fail(value, destination, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))

    monkeypatch.setattr(torch, "save", always_fail)
    with pytest.raises(CheckpointWriteError) as raised:
        Trainer(
            load_model(tiny_model_dir, device="cpu"), make_pairs(2), [], settings(epochs=1, accumulate=1), tmp_path / "run"
        ).run()
    assert "No earlier checkpoint exists" in str(raised.value)
    assert not temporary_folders(tmp_path / "run" / "checkpoints", checkpoint_module.TEMPORARY_PREFIX)


def test_cli_reports_disk_full(tiny_model_dir, tmp_path, monkeypatch, capsys):
    # The command line prints the trainer's message, not a bare OSError.
    from synopsis.engine.cli import main

    real_save = torch.save

    def save_or_fail(value, destination, *args, **kwargs):
        if f"{checkpoint_module.TEMPORARY_PREFIX}step-000002" in str(destination):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))
        return real_save(value, destination, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_or_fail)
    pairs = _write_pairs(tmp_path / "pairs.jsonl", [_pair(subject, event) for subject, event in TOPICS])
    output = tmp_path / "run"
    code = main([str(part) for part in _train_args(pairs, tiny_model_dir, output, "--max-steps", "2", "-q")])
    err = capsys.readouterr().err
    assert code != 0
    assert "step-000001 is intact" in err
    assert os.strerror(errno.ENOSPC) in err

"""Real write failures while a checkpoint is saved: the kernel's EFBIG and ENOSPC, not a patched function.

tests/test_training_faults.py patches ``torch.save`` to raise OSError. Here
the failures come from the kernel, through the libraries that write each
file, which wrap them in their own exception types (SafetensorError,
RuntimeError). Each test checks that the run stops with CheckpointWriteError,
that the previous checkpoint still loads, and that the run resumes to the
same losses once writes succeed again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synopsis.engine.models import load_model
from synopsis.engine.training import Trainer
from synopsis.engine.training import checkpoint as checkpoint_module
from synopsis.engine.training.checkpoint import CheckpointWriteError
from synopsis.engine.training.events import CheckpointEvent
from tests.test_trainer import make_pairs, settings, step_losses

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 300
"""Bound for one four-step tiny-model run in a subprocess. Such a run took about 15 s on a shared 2-core machine."""

# The tiny model's files: model.safetensors is about 0.7 MB and optimizer.pt
# (two Adam moments per weight) about 1.4 MB. Every other file is under 0.2 MB.
LIMIT_BELOW_WEIGHTS = 400_000
LIMIT_BELOW_OPTIMIZER = 1_000_000


def run_settings():
    return settings(epochs=1, accumulate=1, eval_every=1, keep_last=2)


@pytest.fixture(scope="module")
def whole_losses(tiny_model_dir, tmp_path_factory):
    """Step losses of the same run without any failure."""
    output = tmp_path_factory.mktemp("whole")
    Trainer(load_model(tiny_model_dir, device="cpu"), make_pairs(4), [], run_settings(), output).run()
    return step_losses(output)


def check_previous_checkpoint_and_resume(tiny_model_dir: Path, output: Path, whole_losses) -> None:
    checkpoints = output / "checkpoints"
    assert [step for step, _ in checkpoint_module.complete_checkpoints(checkpoints)] == [1, 2]
    assert not [path for path in checkpoints.iterdir() if path.name.startswith(checkpoint_module.TEMPORARY_PREFIX)]
    # The previous checkpoint and last/ still load as models.
    for folder in (checkpoints / "step-000002", output / "last"):
        loaded = load_model(folder, device="cpu")
        assert loaded.model is not None
    last_state = json.loads((output / "last" / checkpoint_module.STATE_FILE).read_text(encoding="utf-8"))
    assert last_state["step"] == 2

    Trainer(load_model(tiny_model_dir, device="cpu"), make_pairs(4), [], run_settings(), output).run(resume=True)
    assert step_losses(output) == whole_losses


# EFBIG: a per-process file size limit ----------------------------------------------


@pytest.mark.parametrize(
    ("max_file_bytes", "failing_library"),
    [(LIMIT_BELOW_WEIGHTS, "SafetensorError"), (LIMIT_BELOW_OPTIMIZER, "RuntimeError")],
    ids=["safetensors", "torch-save"],
)
def test_file_size_limit_mid_checkpoint(tiny_model_dir, tmp_path, whole_losses, max_file_bytes, failing_library):
    output = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "tests.disk_full_run", str(tiny_model_dir), str(output), str(max_file_bytes)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    assert result["type"] == "CheckpointWriteError", result
    message = result["message"]
    assert "step-000003" in message
    assert failing_library in message
    assert "File too large" in message or "unexpected pos" in message
    assert "step-000002 is intact" in message
    assert "MB free on the disk of" in message
    assert "--resume" in message
    check_previous_checkpoint_and_resume(tiny_model_dir, output, whole_losses)


# ENOSPC: a small tmpfs that fills up -----------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs mounted for the test; skipped where this process may not mount."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill_disk(folder: Path, leave_bytes: int) -> Path:
    """Write a file that leaves about ``leave_bytes`` free on ``folder``'s file system."""
    filler = folder / "filler"
    size = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize - leave_bytes
    with filler.open("wb") as stream:
        os.posix_fallocate(stream.fileno(), 0, size)
    return filler


def test_full_disk_mid_checkpoint(tiny_model_dir, small_disk, whole_losses):
    output = small_disk / "run"
    filler: list[Path] = []

    def fill_after_step_two(event) -> None:
        if isinstance(event, CheckpointEvent) and event.kind == "last" and event.step == 2:
            # 300 kB fits the metrics line and config files but not the 0.7 MB weights.
            filler.append(fill_disk(small_disk, 300_000))

    trainer = Trainer(
        load_model(tiny_model_dir, device="cpu"), make_pairs(4), [], run_settings(), output, on_event=fill_after_step_two
    )
    with pytest.raises(CheckpointWriteError) as raised:
        trainer.run()
    message = str(raised.value)
    assert "step-000003" in message
    assert "No space left on device" in message or "os error 28" in message
    assert "step-000002 is intact" in message
    assert f"MB free on the disk of {output / 'checkpoints'}" in message

    filler[0].unlink()
    check_previous_checkpoint_and_resume(tiny_model_dir, output, whole_losses)

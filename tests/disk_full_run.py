"""Run a four-step training whose file writes fail with EFBIG after step 2's checkpoint.

Usage: ``python -m tests.disk_full_run MODEL_DIR OUTPUT_DIR MAX_FILE_BYTES``.
Once step 2's last/ folder is published, the process lowers its own
RLIMIT_FSIZE to MAX_FILE_BYTES and ignores SIGXFSZ, so the kernel fails the
next write past that size with EFBIG inside whichever library writes it.
Prints one JSON object: the type and message of the error that ended the run,
or nulls when it finished.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from pathlib import Path

import torch

from synopsis.engine.models import load_model
from synopsis.engine.training import Trainer
from synopsis.engine.training.events import CheckpointEvent
from tests.test_trainer import make_pairs, settings

LIMITED_AFTER_STEP = 2


def main(model_dir: str, output: str, max_file_bytes: int) -> None:
    torch.set_num_threads(1)

    def limit_after_step(event) -> None:
        if isinstance(event, CheckpointEvent) and event.kind == "last" and event.step == LIMITED_AFTER_STEP:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, resource.RLIM_INFINITY))

    run_settings = settings(epochs=1, accumulate=1, eval_every=1, keep_last=2)
    trainer = Trainer(
        load_model(model_dir, device="cpu"), make_pairs(4), [], run_settings, Path(output), on_event=limit_after_step
    )
    result = {"type": None, "message": None}
    try:
        trainer.run()
    except Exception as error:  # noqa: BLE001 - reported to the test as JSON
        result = {"type": type(error).__name__, "message": str(error)}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

"""Test setup: nothing touches the network or the user's real directories."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Set before any test module imports huggingface_hub or platformdirs: both
# read the environment once, at import time.
_SANDBOX = Path(tempfile.mkdtemp(prefix="synopsis-tests-"))
atexit.register(shutil.rmtree, _SANDBOX, ignore_errors=True)
for _name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
    os.environ[_name] = str(_SANDBOX / _name.lower())
os.environ["HF_HOME"] = str(_SANDBOX / "hf-home")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["QT_QPA_PLATFORM"] = "offscreen"

import pytest  # noqa: E402

from tests.tiny import CORPUS, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny BART folder in save_pretrained layout, as a user would pass with --model."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bart"))


@pytest.fixture(scope="session")
def corpus() -> Path:
    documents = CORPUS / "documents"
    if not documents.is_dir():
        pytest.skip(f"test corpus not found at {documents}")
    return CORPUS


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread.

    The tiny model's matrices are too small to gain from a second thread, and
    on a busy machine two threads per process slow each step many times over.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

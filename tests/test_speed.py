"""Inference precision and thread settings, on the tiny model and real corpus text."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
import torch

from synopsis.engine.cli import build_parser
from synopsis.engine.documents.model import Document
from synopsis.engine.encoding import encode_windows
from synopsis.engine.errors import SettingsError
from synopsis.engine.generation import GenerationSettings, generate_from_memory
from synopsis.engine.models import load_model
from synopsis.engine.speed import (
    PRECISIONS,
    cpu_has_native_bf16,
    decoding_threads,
    encoding_threads,
    physical_cores,
    quantized_encoder,
    resolve_precision,
    torch_threads,
)
from synopsis.engine.summarize import document_windows, summarize_document

CPU = torch.device("cpu")

# Largest relative (Frobenius) drift of the fused memory against float32 that a
# reduced precision may show on the tiny model. On the BART-base size,
# bench/encode.py measured about 0.4% for bf16.
MAX_RELATIVE_DRIFT = 0.01


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def documents(corpus) -> list[Document]:
    """Three real texts of several windows each: a meeting transcript and two biomedical articles."""
    with (corpus / "pairs" / "qmsum_meetings.jsonl").open(encoding="utf-8") as lines:
        texts = [json.loads(next(lines))["document"]]
    with (corpus / "pairs" / "pmc_articles.jsonl").open(encoding="utf-8") as lines:
        texts += [json.loads(line)["document"] for line in list(lines)[:2]]
    return [Document(path=corpus / f"text-{index}.txt", text=text, format="txt") for index, text in enumerate(texts)]


def _relative_drift(states: torch.Tensor, reference: torch.Tensor) -> float:
    return float((states - reference).norm() / reference.norm())


def test_auto_precision_on_cpu():
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", CPU) == expected


@pytest.mark.parametrize(
    ("requested", "device"),
    [("fp16", "cpu"), ("int8", "cuda"), ("int8", "mps"), ("float64", "cpu"), ("", "cpu")],
)
def test_invalid_precision_raises(requested, device):
    with pytest.raises(SettingsError):
        resolve_precision(requested, torch.device(device))


def test_settings_reject_unknown_precision():
    with pytest.raises(SettingsError, match="precision 'half' is unknown"):
        GenerationSettings(precision="half").validate()
    with pytest.raises(SettingsError):
        GenerationSettings(threads=0).validate()
    for precision in PRECISIONS:
        GenerationSettings(precision=precision).validate()


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_memory_drift(loaded, documents, precision):
    windows = document_windows(documents[0], loaded)
    reference = encode_windows(loaded.model, windows, precision="fp32").hidden_states
    states = encode_windows(loaded.model, windows, precision=precision).hidden_states
    assert states.dtype == torch.float32
    assert states.shape == reference.shape
    drift = _relative_drift(states, reference)
    assert 0 < drift < MAX_RELATIVE_DRIFT, f"{precision} drifted {drift:.5f} from fp32"


@pytest.mark.parametrize("beams", [1, 4])
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_summaries_equal_fp32(loaded, documents, precision, beams):
    """Reduced precision in the encoder leaves the tiny model's summaries token-equal to fp32's."""
    for document in documents:
        fp32 = summarize_document(document, loaded, GenerationSettings(beams=beams, max_tokens=48, precision="fp32"))
        reduced = summarize_document(
            document, loaded, GenerationSettings(beams=beams, max_tokens=48, precision=precision)
        )
        assert reduced.token_ids == fp32.token_ids, f"{document.path.name}: {precision} changed the summary"


def test_auto_summary_equals_fp32(loaded, documents):
    settings = GenerationSettings(beams=4, max_tokens=48)
    assert settings.precision == "auto"
    fp32 = summarize_document(documents[1], loaded, GenerationSettings(beams=4, max_tokens=48, precision="fp32"))
    assert summarize_document(documents[1], loaded, settings).token_ids == fp32.token_ids


def test_int8_leaves_model_and_files_unchanged(tiny_model_dir, documents):
    loaded = load_model(tiny_model_dir, device="cpu")
    files = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in tiny_model_dir.iterdir()}
    weights = {name: tensor.clone() for name, tensor in loaded.model.state_dict().items()}

    windows = document_windows(documents[2], loaded)
    encode_windows(loaded.model, windows, precision="int8")

    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, weights[name]), f"{name} changed"
    assert all(type(module) is not torch.ao.nn.quantized.dynamic.Linear for module in loaded.model.modules())
    after = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in tiny_model_dir.iterdir()}
    assert after == files


def test_int8_copy_follows_weight_changes(tiny_model_dir):
    model = load_model(tiny_model_dir, device="cpu").model
    first = quantized_encoder(model)
    assert quantized_encoder(model) is first

    with torch.no_grad():
        model.get_encoder().layers[0].fc1.weight.mul_(2.0)
    second = quantized_encoder(model)
    assert second is not first


def test_thread_counts():
    cores = physical_cores()
    assert cores >= 1
    assert encoding_threads() == max(1, cores - 1)
    assert decoding_threads() == encoding_threads()


def test_torch_threads_restores_count():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_threads_apply_in_worker_thread(loaded, documents):
    """The engine sets its thread counts in the thread that runs it, as the GUI's worker does."""
    seen = []

    def record(done: int, total: int, unit: str) -> None:
        seen.append((unit, torch.get_num_threads()))

    def work() -> None:
        windows = document_windows(documents[2], loaded)
        memory = encode_windows(loaded.model, windows, progress=record, precision="fp32")
        generate_from_memory(loaded.model, memory, GenerationSettings(beams=2, max_tokens=4), progress=record)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    # The first and last report of each stage come before and after the work.
    encoding = [count for unit, count in seen if unit == "windows"][1:-1]
    decoding = [count for unit, count in seen if unit == "tokens"][1:-1]
    assert encoding and set(encoding) == {encoding_threads()}
    assert decoding and set(decoding) == {decoding_threads()}


def test_cli_precision_flag():
    parser = build_parser()
    assert parser.parse_args(["summarize", "a.txt"]).precision == "auto"
    assert parser.parse_args(["summarize", "a.txt", "--precision", "int8"]).precision == "int8"
    with pytest.raises(SystemExit):
        parser.parse_args(["summarize", "a.txt", "--precision", "double"])

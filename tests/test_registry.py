"""The model registry: hub cache scanning, added folders, fine-tuned models, the list file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from synopsis.engine.errors import Cancelled, NotEncoderDecoderError, UnsafeWeightsError
from synopsis.engine.hub import partial_download_bytes, repo_cache_folder
from synopsis.engine.progress import CancellationToken
from synopsis.engine.registry import ModelKind, ModelRegistry, ModelStatus, register_finetuned
from tests.hub_server import TINY_REPO, fake_hub, hub_online, serve_tiny  # noqa: F401 - fixtures

BART_CONFIG = {"model_type": "bart", "is_encoder_decoder": True}
GPT2_CONFIG = {"model_type": "gpt2"}


def cache_repo(cache: Path, repo_id: str, files: dict[str, bytes], ref: str | None = "main") -> Path:
    """Lay out one repository in a hub cache as huggingface_hub does and return its snapshot folder."""
    repo_folder = repo_cache_folder(repo_id, cache)
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_folder / "blobs").mkdir()
    for name, content in files.items():
        blob = repo_folder / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
    if ref:
        (repo_folder / "refs").mkdir()
        (repo_folder / "refs" / ref).write_text(commit)
    return snapshot


def model_files(config: dict, weights: str = "model.safetensors") -> dict[str, bytes]:
    return {"config.json": json.dumps(config).encode(), weights: b"\0" * 2048, "tokenizer.json": b"{}"}


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(data_dir=tmp_path / "data", hub_cache_dir=tmp_path / "hub")


def test_empty_registry_lists_nothing(registry):
    assert registry.entries() == []
    assert registry.load_warning is None


def test_hub_cache_lists_usable_models_only(registry):
    cache = registry.hub_cache_dir
    bart = cache_repo(cache, "org/bart", model_files(BART_CONFIG))
    cache_repo(cache, "org/gpt", model_files(GPT2_CONFIG))
    cache_repo(cache, "org/pickled", model_files(BART_CONFIG, weights="pytorch_model.bin"))

    entries = registry.entries()

    assert [entry.name for entry in entries] == ["org/bart"]
    entry = entries[0]
    assert entry.kind is ModelKind.HUB
    assert entry.status is ModelStatus.READY
    assert entry.path == bart.resolve()
    assert entry.size_bytes == sum(len(content) for content in model_files(BART_CONFIG).values())
    # The registry's cache is not huggingface_hub's default one, so load_model gets the folder.
    assert entry.source == str(bart.resolve())


def test_hub_model_in_default_cache_listed_by_id(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    cache_repo(tmp_path / "hub", "org/bart", model_files(BART_CONFIG))
    registry = ModelRegistry(data_dir=tmp_path / "data")

    assert [entry.source for entry in registry.entries()] == ["org/bart"]


def test_remove_hub_model_deletes_cache(registry):
    cache_repo(registry.hub_cache_dir, "org/bart", model_files(BART_CONFIG))
    keep = cache_repo(registry.hub_cache_dir, "org/other", model_files(BART_CONFIG))
    entry = next(entry for entry in registry.entries() if entry.name == "org/bart")

    assert registry.remove_deletes_files(entry)
    registry.remove(entry)

    assert not repo_cache_folder("org/bart", registry.hub_cache_dir).exists()
    assert keep.is_dir()
    assert [entry.name for entry in registry.entries()] == ["org/other"]


def test_add_folder_validates_and_lists(registry, tiny_model_dir):
    entry = registry.add_folder(tiny_model_dir, name="Tiny BART")

    assert entry.kind is ModelKind.LOCAL
    assert entry.name == "Tiny BART"
    assert entry.status is ModelStatus.READY
    assert entry.source == str(tiny_model_dir.resolve())
    assert entry.size_bytes == sum(path.stat().st_size for path in tiny_model_dir.iterdir())
    assert registry.entries() == [entry]


def test_add_same_folder_twice_keeps_one(registry, tiny_model_dir):
    registry.add_folder(tiny_model_dir, name="first")
    registry.add_folder(tiny_model_dir, name="second")

    assert [entry.name for entry in registry.entries()] == ["second"]


def test_add_folder_rejects_pickled_weights(registry, tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")

    with pytest.raises(UnsafeWeightsError):
        registry.add_folder(folder)
    assert registry.entries() == []


def test_add_folder_rejects_decoder_only(registry, tmp_path):
    folder = tmp_path / "gpt"
    folder.mkdir()
    for name, content in model_files(GPT2_CONFIG).items():
        (folder / name).write_bytes(content)

    with pytest.raises(NotEncoderDecoderError):
        registry.add_folder(folder)
    assert registry.entries() == []


def test_remove_local_folder_keeps_files(registry, tiny_model_dir):
    entry = registry.add_folder(tiny_model_dir)

    assert not registry.remove_deletes_files(entry)
    registry.remove(entry)

    assert registry.entries() == []
    assert (tiny_model_dir / "model.safetensors").is_file()


def test_moved_local_folder_listed_missing(registry, tiny_model_dir, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, folder)
    registry.add_folder(folder)
    shutil.rmtree(folder)

    [entry] = registry.entries()
    assert entry.status is ModelStatus.MISSING


def test_register_finetuned_under_data_dir(registry, tiny_model_dir):
    folder = registry.fine_tuned_dir / "run-1"
    shutil.copytree(tiny_model_dir, folder)

    entry = register_finetuned(folder, "Reports v1", "facebook/bart-large-cnn", {"rouge1": 0.41}, data_dir=registry.data_dir)

    assert entry.kind is ModelKind.FINE_TUNED
    assert entry.name == "Reports v1"
    assert entry.base_model == "facebook/bart-large-cnn"
    assert entry.metrics == {"rouge1": 0.41}
    assert entry.status is ModelStatus.READY
    assert registry.entries() == [entry]
    assert registry.remove_deletes_files(entry)

    registry.remove(entry)

    assert not folder.exists()
    assert registry.entries() == []


def test_register_finetuned_elsewhere_only_forgotten(registry, tiny_model_dir, tmp_path):
    folder = tmp_path / "my-run"
    shutil.copytree(tiny_model_dir, folder)
    entry = registry.register_finetuned(folder, "Mine", "facebook/bart-large-cnn", {})

    assert not registry.remove_deletes_files(entry)
    registry.remove(entry)

    assert folder.is_dir()
    assert registry.entries() == []


def test_register_finetuned_rejects_pickled(registry, tmp_path):
    folder = registry.fine_tuned_dir / "run-2"
    folder.mkdir(parents=True)
    for name, content in model_files(BART_CONFIG, weights="pytorch_model.bin").items():
        (folder / name).write_bytes(content)

    with pytest.raises(UnsafeWeightsError):
        registry.register_finetuned(folder, "run", "facebook/bart-large-cnn", {})


def test_unregistered_finetuned_folder_discovered(registry, tiny_model_dir):
    shutil.copytree(tiny_model_dir, registry.fine_tuned_dir / "crashed-run")

    [entry] = registry.entries()

    assert entry.kind is ModelKind.FINE_TUNED
    assert entry.name == "crashed-run"
    assert entry.status is ModelStatus.READY


def test_list_file_written_atomically(registry, tiny_model_dir):
    registry.add_folder(tiny_model_dir)

    data = json.loads(registry.list_file.read_text(encoding="utf-8"))
    assert data["version"] == 1
    assert [record["path"] for record in data["local"]] == [str(tiny_model_dir.resolve())]
    assert [path.name for path in registry.data_dir.iterdir() if path.suffix == ".tmp"] == []


def test_corrupted_list_file_set_aside(registry, tiny_model_dir):
    registry.data_dir.mkdir(parents=True)
    registry.list_file.write_text('{"local": [{"path": ', encoding="utf-8")

    assert registry.entries() == []

    assert "could not be read" in registry.load_warning
    aside = [path for path in registry.data_dir.iterdir() if ".corrupt-" in path.name]
    assert len(aside) == 1
    assert aside[0].read_text(encoding="utf-8") == '{"local": [{"path": '
    registry.add_folder(tiny_model_dir)
    assert len(registry.entries()) == 1


def test_wrong_shape_list_file_set_aside(registry):
    registry.data_dir.mkdir(parents=True)
    registry.list_file.write_text('{"local": "not a list"}', encoding="utf-8")

    assert registry.entries() == []
    assert "'local' is not a list" in registry.load_warning


def test_cancelled_download_listed_partial(registry, fake_hub, tiny_model_dir):
    repo = serve_tiny(fake_hub, tiny_model_dir)
    fake_hub.chunk_delay_s = 0.005
    registry.endpoint = fake_hub.url
    token = CancellationToken()
    weights = len(repo.files["model.safetensors"])

    def cancel_in_weights(done, total, unit):
        if done > total - weights // 2:
            token.cancel()

    with pytest.raises(Cancelled):
        registry.download(TINY_REPO, progress=cancel_in_weights, cancel=token)

    [entry] = registry.entries()
    assert entry.status is ModelStatus.PARTIAL
    assert entry.repo_id == TINY_REPO
    assert entry.size_bytes >= partial_download_bytes(TINY_REPO, registry.hub_cache_dir) > 0

    finished = registry.download(TINY_REPO)

    assert finished.status is ModelStatus.READY
    assert finished.key == entry.key
    assert registry.entries() == [finished]


def test_remove_partial_download(registry, fake_hub, tiny_model_dir):
    serve_tiny(fake_hub, tiny_model_dir)
    fake_hub.chunk_delay_s = 0.005
    registry.endpoint = fake_hub.url
    token = CancellationToken()

    def cancel_soon(done, total, unit):
        if done > total // 2:
            token.cancel()

    with pytest.raises(Cancelled):
        registry.download(TINY_REPO, progress=cancel_soon, cancel=token)
    [entry] = registry.entries()

    registry.remove(entry)

    assert registry.entries() == []
    assert not repo_cache_folder(TINY_REPO, registry.hub_cache_dir).exists()


def test_rejected_download_not_listed(registry, fake_hub, tiny_model_dir):
    repo = serve_tiny(fake_hub, tiny_model_dir)
    repo.files["pytorch_model.bin"] = repo.files.pop("model.safetensors")
    registry.endpoint = fake_hub.url

    with pytest.raises(UnsafeWeightsError):
        registry.download(TINY_REPO)

    assert registry.entries() == []

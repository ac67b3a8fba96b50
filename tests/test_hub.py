"""Hub downloads against a loopback server that speaks the hub's HTTP API.

``FakeHub`` serves the three kinds of request huggingface_hub 2.4 sends for a
download: ``GET /api/models/{repo}/revision/{rev}`` (model_info with file
metadata), ``HEAD /{repo}/resolve/{rev}/{file}`` (ETag, X-Repo-Commit, size)
and ``GET`` of the same address, with Range support for resumed downloads.
"""

from __future__ import annotations

import json
import shutil
import socket

import huggingface_hub.constants
import pytest
from transformers import BartForConditionalGeneration

from synopsis.engine.errors import Cancelled, ModelError, ModelNotFoundError, NotEncoderDecoderError, UnsafeWeightsError
from synopsis.engine.hub import download_model, is_encoder_decoder_config, partial_download_bytes, repo_cache_folder
from synopsis.engine.models import load_model
from synopsis.engine.progress import CancellationToken

from tests.hub_server import TINY_REPO, FakeHub, fake_hub, hub_online, serve_tiny  # noqa: F401 - fixtures

def test_download_reports_monotone_progress(fake_hub, tiny_model_dir, tmp_path):
    repo = serve_tiny(fake_hub, tiny_model_dir)
    reports = []

    snapshot = download_model(
        TINY_REPO, cache_dir=tmp_path, endpoint=fake_hub.url, progress=lambda *report: reports.append(report)
    )

    total = sum(len(content) for content in repo.files.values())
    done = [report[0] for report in reports]
    assert reports, "no progress was reported"
    assert all(report[1] == total for report in reports)
    assert all(report[2] == "bytes" for report in reports)
    assert done == sorted(done)
    assert done[-1] == total
    assert sorted(path.name for path in snapshot.iterdir()) == sorted(repo.files)
    assert load_model(snapshot, device="cpu").model.config.is_encoder_decoder


def test_download_fetches_only_summarizer_files(fake_hub, tiny_model_dir, tmp_path):
    serve_tiny(
        fake_hub,
        tiny_model_dir,
        {
            "pytorch_model.bin": b"pickled weights",
            "tf_model.h5": b"keras weights",
            "flax_model.msgpack": b"flax weights",
            "onnx/model.onnx": b"onnx export",
            "README.md": b"# card",
        },
    )

    snapshot = download_model(TINY_REPO, cache_dir=tmp_path, endpoint=fake_hub.url)

    for name in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "model.onnx", "README.md"):
        assert fake_hub.file_requests("GET", name) == [], name
        assert fake_hub.file_requests("HEAD", name) == [], name
    assert (snapshot / "model.safetensors").is_file()
    assert not (snapshot / "pytorch_model.bin").exists()


def test_cancel_mid_file_then_resume(fake_hub, tiny_model_dir, tmp_path):
    repo = serve_tiny(fake_hub, tiny_model_dir)
    fake_hub.chunk_delay_s = 0.005
    weights_size = len(repo.files["model.safetensors"])
    total = sum(len(content) for content in repo.files.values())
    cancel_at = total - weights_size // 2  # half way through the weights, the last file fetched
    token = CancellationToken()

    def cancel_half_way(done, total, unit):
        if done >= cancel_at:
            token.cancel()

    with pytest.raises(Cancelled):
        download_model(TINY_REPO, cache_dir=tmp_path, endpoint=fake_hub.url, progress=cancel_half_way, cancel=token)

    partial_bytes = partial_download_bytes(TINY_REPO, tmp_path)
    assert 0 < partial_bytes < weights_size
    assert fake_hub.file_requests("GET", "model.safetensors")[-1][2] is None

    reports = []
    snapshot = download_model(
        TINY_REPO, cache_dir=tmp_path, endpoint=fake_hub.url, progress=lambda *report: reports.append(report)
    )

    assert fake_hub.file_requests("GET", "model.safetensors")[-1][2] == f"bytes={partial_bytes}-"
    assert reports[0][0] >= total - weights_size + partial_bytes
    assert reports[-1][:2] == (total, total)
    assert partial_download_bytes(TINY_REPO, tmp_path) == 0
    assert (snapshot / "model.safetensors").read_bytes() == repo.files["model.safetensors"]
    assert load_model(snapshot, device="cpu").model.config.is_encoder_decoder


def test_resume_when_server_ignores_range(fake_hub, tiny_model_dir, tmp_path):
    repo = serve_tiny(fake_hub, tiny_model_dir)
    partial_size = 1000
    blob = repo_cache_folder(TINY_REPO, tmp_path) / "blobs" / repo.etag("model.safetensors")
    blob.parent.mkdir(parents=True)
    blob.with_name(blob.name + ".incomplete").write_bytes(repo.files["model.safetensors"][:partial_size])
    fake_hub.ignore_range = True

    snapshot = download_model(TINY_REPO, cache_dir=tmp_path, endpoint=fake_hub.url)

    assert fake_hub.file_requests("GET", "model.safetensors")[-1][2] == f"bytes={partial_size}-"
    assert (snapshot / "model.safetensors").read_bytes() == repo.files["model.safetensors"]


def test_hub_id_loads_from_cache_offline(fake_hub, tiny_model_dir, tmp_path, monkeypatch):
    serve_tiny(fake_hub, tiny_model_dir)
    download_model(TINY_REPO, cache_dir=tmp_path, endpoint=fake_hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    loaded = load_model(TINY_REPO, device="cpu", cache_dir=tmp_path)

    assert loaded.model.config.is_encoder_decoder


def test_sharded_weights_downloaded(fake_hub, tiny_model_dir, tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    BartForConditionalGeneration.from_pretrained(tiny_model_dir).save_pretrained(folder, max_shard_size="100KB")
    repo = fake_hub.add_folder(TINY_REPO, folder)
    shards = [name for name in repo.files if name.endswith(".safetensors")]
    assert len(shards) > 1

    snapshot = download_model(TINY_REPO, cache_dir=tmp_path / "cache", endpoint=fake_hub.url)

    for shard in shards:
        assert (snapshot / shard).is_file()
    assert load_model(snapshot, device="cpu").model.config.is_encoder_decoder


def test_pickled_only_repo_rejected_before_download(fake_hub, tiny_model_dir, tmp_path):
    repo = serve_tiny(fake_hub, tiny_model_dir)
    repo.files["pytorch_model.bin"] = repo.files.pop("model.safetensors")

    with pytest.raises(UnsafeWeightsError, match="pytorch_model.bin"):
        download_model(TINY_REPO, cache_dir=tmp_path, endpoint=fake_hub.url)

    assert fake_hub.file_requests("GET", "pytorch_model.bin") == []
    assert fake_hub.file_requests("HEAD", "pytorch_model.bin") == []
    assert not repo_cache_folder(TINY_REPO, tmp_path).exists()


def test_decoder_only_repo_rejected_before_weights(fake_hub, tmp_path):
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 1}
    fake_hub.add_repo(
        "test/gpt", {"config.json": json.dumps(config).encode(), "model.safetensors": b"\0" * 4096}
    )

    with pytest.raises(NotEncoderDecoderError, match="gpt2"):
        download_model("test/gpt", cache_dir=tmp_path, endpoint=fake_hub.url)

    assert fake_hub.file_requests("GET", "model.safetensors") == []
    assert fake_hub.file_requests("GET", "config.json") != []
    assert not repo_cache_folder("test/gpt", tmp_path).exists()


def test_damaged_transfer_deleted(fake_hub, tiny_model_dir, tmp_path):
    repo = serve_tiny(fake_hub, tiny_model_dir)
    repo.wrong_sha256.add("model.safetensors")

    with pytest.raises(ModelError, match="damaged"):
        download_model(TINY_REPO, cache_dir=tmp_path, endpoint=fake_hub.url)

    assert partial_download_bytes(TINY_REPO, tmp_path) == 0
    assert not (repo_cache_folder(TINY_REPO, tmp_path) / "blobs" / repo.etag("model.safetensors")).exists()


def test_unknown_repo_not_found(fake_hub, tmp_path):
    with pytest.raises(ModelNotFoundError, match="No model 'test/missing'"):
        download_model("test/missing", cache_dir=tmp_path, endpoint=fake_hub.url)


def test_invalid_repo_id(fake_hub, tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a valid hub model id"):
        download_model("not a/valid/id", cache_dir=tmp_path, endpoint=fake_hub.url)


def test_offline_mode_reported(tiny_model_dir, tmp_path):
    hub = FakeHub().start()  # conftest's HF_HUB_OFFLINE=1 stays in force here
    serve_tiny(hub, tiny_model_dir)
    try:
        with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
            download_model(TINY_REPO, cache_dir=tmp_path, endpoint=hub.url)
    finally:
        hub.stop()
    assert hub.requests == []


def test_unreachable_endpoint_reported(hub_online, tmp_path):
    # A socket that is bound but not listening keeps the port ours and refuses connections.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        host, port = bound.getsockname()

        with pytest.raises(ModelError, match="Could not reach"):
            download_model(TINY_REPO, cache_dir=tmp_path, endpoint=f"http://{host}:{port}")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"model_type": "bart", "is_encoder_decoder": True}, True),
        ({"model_type": "t5"}, True),
        ({"model_type": "gpt2"}, False),
        ({"model_type": "bert", "is_encoder_decoder": False}, False),
        ({"model_type": "no-such-architecture"}, False),
        ([1, 2], False),
    ],
)
def test_is_encoder_decoder_config(tmp_path, config, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    assert is_encoder_decoder_config(path) is expected

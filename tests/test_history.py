"""The history store: atomic JSON entries found again by content hash, model and settings."""

from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import pytest

from synopsis.engine.errors import Cancelled, DocumentError
from synopsis.engine.generation import GenerationSettings
from synopsis.engine.history import HistoryStore, entry_from_summary, file_sha256
from synopsis.engine.progress import CancellationToken
from synopsis.engine.summarize import SentenceSource, Summary
from synopsis.engine.windows import Window

SETTINGS = GenerationSettings(max_tokens=60, min_tokens=20, beams=2)


def _summary(path: Path) -> Summary:
    windows = [
        Window(index=0, token_start=0, token_end=1000, char_start=0, char_end=4000, pages=(1, 3)),
        Window(index=1, token_start=1000, token_end=1500, char_start=4000, char_end=6100, pages=(3, 5)),
    ]
    return Summary(
        file=path,
        text="First sentence. Second sentence.",
        token_ids=[0, 11, 12, 2],
        windows=windows,
        total_tokens=1500,
        pages=5,
        seconds=1.25,
        model="some/model",
        sentences=[SentenceSource("First sentence.", (1, 3), (0,)), SentenceSource("Second sentence.", (3, 5), (1, 0))],
    )


def test_file_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_file_sha256_missing_file_is_document_error(tmp_path):
    with pytest.raises(DocumentError, match="not found"):
        file_sha256(tmp_path / "missing.pdf")


def test_file_sha256_honours_cancel(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 10)
    token = CancellationToken()
    token.cancel()
    with pytest.raises(Cancelled):
        file_sha256(path, token)


def test_entry_round_trip_rebuilds_summary(tmp_path):
    store = HistoryStore(tmp_path / "history")
    summary = _summary(tmp_path / "report é 日本.pdf")
    entry = entry_from_summary(summary, "ab" * 32, "some/model", SETTINGS, words=900)
    path = store.save(entry)

    assert path.parent == tmp_path / "history"
    assert json.loads(path.read_text(encoding="utf-8"))["content_hash"] == "ab" * 32
    loaded = store.load(entry.id)
    assert loaded == entry
    rebuilt = loaded.to_summary()
    assert rebuilt.text == summary.text
    assert rebuilt.windows == summary.windows
    assert rebuilt.sentences == summary.sentences
    assert rebuilt.file == summary.file
    assert rebuilt.total_tokens == 1500
    assert loaded.words == 900


def test_find_matches_hash_model_and_settings(tmp_path):
    store = HistoryStore(tmp_path)
    entry = entry_from_summary(_summary(tmp_path / "a.pdf"), "11" * 32, "some/model", SETTINGS)
    store.save(entry)

    assert store.find("11" * 32, "some/model", SETTINGS).id == entry.id
    assert store.find("22" * 32, "some/model", SETTINGS) is None
    assert store.find("11" * 32, "other/model", SETTINGS) is None
    assert store.find("11" * 32, "some/model", GenerationSettings(max_tokens=61, min_tokens=20, beams=2)) is None
    # Threads change speed only, so they do not stop a match; precision changes the output, so it does.
    assert store.find("11" * 32, "some/model", dataclasses.replace(SETTINGS, threads=3)).id == entry.id
    assert store.find("11" * 32, "some/model", dataclasses.replace(SETTINGS, precision="int8")) is None


def test_entries_newest_first_and_skip_corrupt(tmp_path, caplog):
    store = HistoryStore(tmp_path)
    older = entry_from_summary(_summary(tmp_path / "a.pdf"), "11" * 32, "m", SETTINGS)
    older.created = "2020-01-01T00:00:00+00:00"
    newer = entry_from_summary(_summary(tmp_path / "b.pdf"), "22" * 32, "m", SETTINGS)
    store.save(older)
    store.save(newer)
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "partial.json").write_text('{"id": "x"}', encoding="utf-8")

    assert [entry.id for entry in store.entries()] == [newer.id, older.id]
    assert "broken.json" in caplog.text
    assert "partial.json" in caplog.text


def test_delete_and_missing_folder(tmp_path):
    store = HistoryStore(tmp_path / "never-created")
    assert store.entries() == []
    entry = entry_from_summary(_summary(tmp_path / "a.pdf"), "11" * 32, "m", SETTINGS)
    store.save(entry)
    store.delete(entry.id)
    assert store.load(entry.id) is None
    assert store.entries() == []


def test_save_leaves_no_temporary_files(tmp_path):
    store = HistoryStore(tmp_path)
    store.save(entry_from_summary(_summary(tmp_path / "a.pdf"), "11" * 32, "m", SETTINGS))
    assert [path.suffix for path in tmp_path.iterdir()] == [".json"]

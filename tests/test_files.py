"""Atomic writes keep links, devices and permissions as they were."""

from __future__ import annotations

import os
import stat

from synopsis.engine.files import write_text_atomic


def test_new_file_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "new.txt", "text")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644


def test_replaced_file_keeps_mode(tmp_path):
    target = tmp_path / "kept.txt"
    target.write_text("old", encoding="utf-8")
    target.chmod(0o640)
    write_text_atomic(target, "new")
    assert target.read_text(encoding="utf-8") == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_symlink_target_replaced(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old", encoding="utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_text_atomic(link, "new")
    assert link.is_symlink()
    assert real.read_text(encoding="utf-8") == "new"


def test_named_pipe_written_not_replaced(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    try:
        write_text_atomic(pipe, "through the pipe")
        assert os.read(reader, 100) == b"through the pipe"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(pipe.stat().st_mode)


def test_no_temporary_left(tmp_path):
    write_text_atomic(tmp_path / "out.txt", "text")
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_docx_export_drops_control_characters(tmp_path):
    import io
    from pathlib import Path

    from docx import Document as WordDocument

    from synopsis.app.export import render_docx
    from synopsis.engine.summarize import SentenceSource, Summary

    summary = Summary(
        file=Path("report.pdf"), text="Budget rose\x1b sharply.\x00", token_ids=[], windows=[], total_tokens=10,
        pages=3, seconds=1.0, model="tiny", sentences=[SentenceSource("Budget rose\x1b sharply.", (1, 2), (0,))],
    )
    word = WordDocument(io.BytesIO(render_docx(summary)))
    text = "\n".join(paragraph.text for paragraph in word.paragraphs)
    assert "Budget rose sharply." in text
    assert "\x1b" not in text


def test_printable_keeps_tabs_and_newlines():
    from synopsis.engine.summarize import printable

    assert printable("a\tb\nc\x1bd\x7fe\x85f") == "a\tb\ncdef"


def test_copy_aside_keeps_original(tmp_path):
    from synopsis.engine.files import CORRUPT_INFIX, copy_aside

    original = tmp_path / "metrics.jsonl"
    original.write_bytes(b'{"step": 1}\ngarbage\n')

    first = copy_aside(original)
    second = copy_aside(original)

    assert original.read_bytes() == b'{"step": 1}\ngarbage\n'
    assert first.read_bytes() == original.read_bytes()
    assert first.name.startswith(f"metrics.jsonl{CORRUPT_INFIX}")
    # A second copy never overwrites the first, even within the same second.
    assert second != first
    assert first.read_bytes() == second.read_bytes()

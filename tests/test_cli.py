"""The synopsis command end to end, on real corpus documents and the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from synopsis.engine.cli import EXIT_CANCELLED, EXIT_DOCUMENT, EXIT_MODEL, EXIT_USAGE, main

DOCUMENTS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "documents"

# The documents the summarize path must handle end to end, with their formats.
LONG_DOCUMENTS = {
    "mozilla_pdf.js__tracemonkey.pdf": "pdf",
    "pdfminer_pdfminer.six__i1040nr.pdf": "pdf",
    "Unstructured-IO_unstructured__pdf2image-memory-error-test-400p.pdf": "pdf",
    "Unstructured-IO_unstructured__handbook-872p.docx": "docx",
}


def _document(name: str) -> Path:
    path = DOCUMENTS / name
    if not path.is_file():
        pytest.skip(f"corpus file {path} not found")
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(part) for part in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_windows_cover(report: dict) -> None:
    windows = report["windows"]
    assert [w["index"] for w in windows] == list(range(len(windows)))
    assert sum(w["tokens"] for w in windows) == report["tokens"]
    assert all(0 < w["tokens"] <= 1022 for w in windows)


def _assert_pages_monotone(report: dict, expect_pages: bool) -> None:
    ranges = [w["pages"] for w in report["windows"]]
    if not expect_pages:
        return
    assert all(r is not None for r in ranges)
    assert ranges[0][0] == 1
    for (first, last), (next_first, _) in zip(ranges, ranges[1:]):
        assert first <= last <= next_first
    if report["pages"]:
        assert ranges[-1][1] <= report["pages"]


@pytest.mark.parametrize("name", sorted(LONG_DOCUMENTS))
def test_summarize_long_document(capsys, tiny_model_dir, name):
    path = _document(name)
    code, out, err = _run(
        capsys, "summarize", path, "--model", tiny_model_dir, "--format", "json", "--max-tokens", "16"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["file"] == str(path)
    assert report["summary"].strip()
    assert report["seconds"] > 0
    _assert_windows_cover(report)
    _assert_pages_monotone(report, expect_pages=LONG_DOCUMENTS[name] == "pdf")
    assert "Encoding" in err
    assert report["sentences"]
    for sentence in report["sentences"]:
        assert sentence["text"]
        assert sentence["pages"] == report["windows"][sentence["windows"][0]]["pages"]


@pytest.mark.parametrize("name", ["mozilla_pdf.js__tracemonkey.pdf", "pdfminer_pdfminer.six__i1040nr.pdf"])
def test_inspect_matches_summarize_windows(capsys, tiny_model_dir, name):
    path = _document(name)
    code, out, err = _run(capsys, "inspect", path, "--model", tiny_model_dir, "--json")
    assert code == 0, err
    report = json.loads(out)
    for key in ("file", "format", "pages", "characters", "words", "warnings", "tokens", "windows"):
        assert key in report
    assert report["format"] == "pdf"
    assert report["words"] > 1000
    _assert_windows_cover(report)
    _assert_pages_monotone(report, expect_pages=True)


def test_inspect_without_model(capsys):
    path = _document("mozilla_pdf.js__tracemonkey.pdf")
    code, out, _ = _run(capsys, "inspect", path, "--json")
    report = json.loads(out)
    assert code == 0
    assert report["pages"] == 14
    assert "tokens" not in report


def test_inspect_text_output(capsys, tiny_model_dir):
    code, out, _ = _run(capsys, "inspect", _document("ocrmypdf_OCRmyPDF__linn.txt"), "--model", tiny_model_dir)
    assert code == 0
    assert "nothing truncated" in out
    assert "window    1" in out


def test_summarize_prints_reading_warnings(capsys, tiny_model_dir):
    document = _document("jgm_pandoc__track_changes_insertion.docx")
    code, out, err = _run(capsys, "summarize", document, "--model", tiny_model_dir, "-q", "--max-tokens", "8")
    assert code == 0, err
    assert out
    assert f"synopsis: {document}: warning: the document has tracked changes" in err


def test_summarize_writes_output_file(capsys, tiny_model_dir, tmp_path):
    target = tmp_path / "out" / "summary.md"
    code, out, err = _run(
        capsys,
        "summarize",
        _document("ocrmypdf_OCRmyPDF__linn.txt"),
        "--model",
        tiny_model_dir,
        "--format",
        "md",
        "--output",
        target,
    )
    assert code == 0, err
    assert out == ""
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# Summary of ocrmypdf_OCRmyPDF__linn.txt")
    assert "all of them read" in text
    assert [p.name for p in target.parent.iterdir()] == ["summary.md"]


def test_several_files_report_each_failure(capsys, tiny_model_dir, tmp_path):
    good = _document("ocrmypdf_OCRmyPDF__linn.txt")
    empty = _document("jsvine_pdfplumber__empty.pdf")
    code, out, err = _run(
        capsys, "summarize", empty, good, tmp_path / "missing.pdf", "--model", tiny_model_dir,
        "--format", "json", "--quiet",
    )
    assert code == EXIT_DOCUMENT
    lines = out.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["file"] == str(good)
    assert "jsvine_pdfplumber__empty.pdf" in err
    assert "missing.pdf" in err


def test_several_files_into_folder(capsys, tiny_model_dir, tmp_path):
    first = _document("ocrmypdf_OCRmyPDF__linn.txt")
    second = _document("mozilla_pdf.js__copy_paste_ligatures.pdf")
    code, _, err = _run(
        capsys, "summarize", first, second, "--model", tiny_model_dir, "--output", tmp_path / "summaries", "--quiet"
    )
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "summaries").iterdir())
    assert names == ["mozilla_pdf.js__copy_paste_ligatures.pdf.summary.txt", "ocrmypdf_OCRmyPDF__linn.txt.summary.txt"]


def test_output_over_input_rejected(capsys, tiny_model_dir, tmp_path):
    source = tmp_path / "notes.txt"
    source.write_text("Some notes about the quarterly plan.", encoding="utf-8")
    code, _, err = _run(capsys, "summarize", source, "--model", tiny_model_dir, "--output", source)
    assert code == EXIT_USAGE
    assert "overwrite an input" in err
    assert source.read_text(encoding="utf-8") == "Some notes about the quarterly plan."


def test_missing_model_exit_code(capsys, tmp_path):
    code, _, err = _run(capsys, "summarize", _document("ocrmypdf_OCRmyPDF__linn.txt"), "--model", tmp_path / "nope")
    assert code == EXIT_MODEL
    assert "not found" in err


def test_default_model_offline_advice(capsys):
    code, _, err = _run(capsys, "summarize", _document("ocrmypdf_OCRmyPDF__linn.txt"))
    assert code == EXIT_MODEL
    assert "--model PATH" in err


def test_bad_settings_are_usage_errors(capsys, tiny_model_dir):
    path = _document("ocrmypdf_OCRmyPDF__linn.txt")
    code, _, err = _run(capsys, "summarize", path, "--model", tiny_model_dir, "--min-tokens", "9", "--max-tokens", "3")
    assert code == EXIT_USAGE
    assert "larger than max tokens" in err
    code, _, err = _run(capsys, "summarize", path, "--model", tiny_model_dir, "--window-tokens", "4096")
    assert code == EXIT_USAGE
    assert "Window length 4096" in err


def test_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["summarize", "--beams", "0", "x.pdf"])
    assert exited.value.code == EXIT_USAGE


BAD_DOCUMENTS = {
    "jsvine_pdfplumber__empty.pdf": "empty",
    "apache_tika__testWORD_truncated.docx": "corrupt|truncated|damaged",
    "ocrmypdf_OCRmyPDF__linn.pdf": "no text layer; OCR it first",
    "jsvine_pdfplumber__password-example.pdf": "password required",
}


@pytest.mark.parametrize("name", sorted(BAD_DOCUMENTS))
def test_bad_documents_exit_3(capsys, tiny_model_dir, name):
    code, out, err = _run(capsys, "summarize", _document(name), "--model", tiny_model_dir, "--quiet")
    assert code == EXIT_DOCUMENT
    assert out == ""
    assert name in err
    assert any(word in err.lower() for word in BAD_DOCUMENTS[name].lower().split("|"))
    assert "Traceback" not in err


def test_password_opens_encrypted_pdf(capsys, tiny_model_dir):
    path = _document("jsvine_pdfplumber__password-example.pdf")
    code, out, err = _run(
        capsys, "summarize", path, "--model", tiny_model_dir, "--password", "test", "--format", "json", "--quiet"
    )
    assert code == 0, err
    assert json.loads(out)["pages"] == 4


# The installed console script, as a user runs it -----------------------------


def _synopsis_command() -> list[str]:
    script = shutil.which("synopsis", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "synopsis.engine.cli"]


def test_console_script_summarizes(tiny_model_dir):
    result = subprocess.run(
        _synopsis_command() + ["summarize", str(_document("ocrmypdf_OCRmyPDF__linn.txt")), "--model", str(tiny_model_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_ctrl_c_leaves_no_output(tiny_model_dir, tmp_path):
    target = tmp_path / "summary.json"
    process = subprocess.Popen(
        _synopsis_command()
        + [
            "summarize",
            str(_document("Unstructured-IO_unstructured__pdf2image-memory-error-test-400p.pdf")),
            "--model",
            str(tiny_model_dir),
            "--output",
            str(target),
            "--max-tokens",
            "1000",
            "--min-tokens",
            "1000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    # Interrupt as soon as the first progress bar shows the work under way.
    seen = bytearray()

    def collect_stderr():
        for chunk in iter(lambda: process.stderr.read(1), b""):
            seen.extend(chunk)

    reader = threading.Thread(target=collect_stderr, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while b"Reading" not in seen and b"Encoding" not in seen and time.monotonic() < deadline:
        time.sleep(0.05)

    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    reader.join(timeout=10)
    assert process.returncode == EXIT_CANCELLED, bytes(seen).decode(errors="replace")
    assert b"cancelled" in seen
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_reported(capsys, tiny_model_dir, tmp_path):
    # A regular file where the output folder should be: unwritable even for root.
    blocker = tmp_path / "blocker"
    blocker.write_text("", encoding="utf-8")
    code, _, err = _run(
        capsys, "summarize", _document("ocrmypdf_OCRmyPDF__linn.txt"), "--model", tiny_model_dir,
        "--output", blocker / "summary.txt", "--quiet",
    )
    # Checked before any work, so the user does not wait for a summary that cannot be saved.
    assert code == EXIT_USAGE
    assert "cannot be written" in err
    assert "Traceback" not in err


def test_output_file_for_several_inputs(capsys, tiny_model_dir, tmp_path):
    existing = tmp_path / "summary.txt"
    existing.write_text("keep me", encoding="utf-8")
    first = _document("ocrmypdf_OCRmyPDF__linn.txt")
    second = _document("mozilla_pdf.js__copy_paste_ligatures.pdf")
    code, _, err = _run(capsys, "summarize", first, second, "--model", tiny_model_dir, "--output", existing)
    assert code == EXIT_USAGE
    assert "needs a folder" in err or "need a folder" in err
    assert existing.read_text(encoding="utf-8") == "keep me"


def test_missing_input_fails_before_model(capsys, tmp_path):
    # The default hub model is not cached: a model load would fail with exit 4.
    code, _, err = _run(capsys, "summarize", tmp_path / "missing.pdf")
    assert code == EXIT_DOCUMENT
    assert "missing.pdf: file not found" in err


def test_same_names_rejected(capsys, tiny_model_dir, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "report.md").write_text("A short report about budgets.", encoding="utf-8")
    code, _, err = _run(
        capsys, "summarize", tmp_path / "a" / "report.md", tmp_path / "b" / "report.md",
        "--model", tiny_model_dir, "--output", tmp_path / "out",
    )
    assert code == EXIT_USAGE
    assert "would both be written" in err


def test_output_names_keep_extension(capsys, tiny_model_dir, tmp_path):
    for suffix in ("md", "txt"):
        (tmp_path / f"report.{suffix}").write_text("A short report about budgets.", encoding="utf-8")
    code, _, err = _run(
        capsys, "summarize", tmp_path / "report.md", tmp_path / "report.txt",
        "--model", tiny_model_dir, "--output", tmp_path / "out", "--quiet",
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.md.summary.txt", "report.txt.summary.txt"]


def test_output_through_symlink_keeps_link(capsys, tiny_model_dir, tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old", encoding="utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    code, _, err = _run(
        capsys, "summarize", _document("ocrmypdf_OCRmyPDF__linn.txt"), "--model", tiny_model_dir, "--output", link, "--quiet"
    )
    assert code == 0, err
    assert link.is_symlink()
    assert real.read_text(encoding="utf-8") != "old"


def test_verbose_after_command(capsys, tiny_model_dir):
    code, _, _ = _run(capsys, "inspect", _document("ocrmypdf_OCRmyPDF__linn.txt"), "-v")
    assert code == 0


def test_inspect_several_json_lines(capsys):
    code, out, _ = _run(
        capsys, "inspect", _document("ocrmypdf_OCRmyPDF__linn.txt"), _document("mozilla_pdf.js__tracemonkey.pdf"), "--json"
    )
    assert code == 0
    assert [json.loads(line)["format"] for line in out.strip().splitlines()] == ["txt", "pdf"]


def test_non_finite_length_penalty(capsys):
    with pytest.raises(SystemExit):
        main(["summarize", "x.pdf", "--length-penalty", "nan"])
    assert "finite" in capsys.readouterr().err


def test_gui_without_display(capsys, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the display check applies to Linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = _run(capsys, "gui")
    assert code == EXIT_USAGE
    assert "no graphical display" in err

"""Document limits as user settings: the --max-* flags on real corpus files, and the reading-time bound.

Each limit is hit with a low value and passes once raised. The message must
name the file, the limit, the value found and both ways to raise it.
"""

from __future__ import annotations

import time

import pytest

from synopsis.engine.cli import EXIT_DOCUMENT, EXIT_OK, EXIT_USAGE, main
from synopsis.engine.documents import DocumentLimits, load_document
from synopsis.engine.documents.limits import USER_LIMITS, check_input_tokens, exceeded_reason, input_tokens_reason
from synopsis.engine.errors import DocumentTooLargeError
from tests.test_cli import _document, _run

PAPER_PDF = "mozilla_pdf.js__tracemonkey.pdf"  # 14 pages, about 60,000 characters
SMALL_PDF = "mozilla_pdf.js__copy_paste_ligatures.pdf"
LONG_PDF = "Unstructured-IO_unstructured__pdf2image-memory-error-test-400p.pdf"
LONG_DOCX = "Unstructured-IO_unstructured__handbook-872p.docx"  # about 816,000 characters
TEXT = "ocrmypdf_OCRmyPDF__linn.txt"  # about 1,100 characters


# (limit field, document, value that is exceeded, that value as the message shows it,
#  the quantity and value found as the message shows them, value that passes)
READER_CASES = [
    ("max_pages", PAPER_PDF, "5", "5 pages", "the page count (14)", "14"),
    ("max_characters", PAPER_PDF, "10000", "10,000 characters", "the character count (at least ", "1000000"),
    ("max_characters", LONG_DOCX, "100000", "100,000 characters", "the character count (8", "1000000"),
    ("max_characters", TEXT, "100", "100 characters", "the least character count a file of this size holds (", "10000"),
    ("max_read_seconds", LONG_PDF, "0.05", "0.05 seconds", "the reading time (at least ", "600"),
    ("max_read_seconds", LONG_DOCX, "0.05", "0.05 seconds", "the reading time (at least ", "600"),
]


@pytest.mark.parametrize(("name", "document", "low", "shown", "found", "high"), READER_CASES)
def test_inspect_limit_hit_then_raised(capsys, name, document, low, shown, found, high):
    path = _document(document)
    flag = USER_LIMITS[name].flag

    code, out, err = _run(capsys, "inspect", path, flag, low)

    assert code == EXIT_DOCUMENT
    assert out == ""
    assert str(path) in err
    assert f"exceeds the limit of {shown}." in err
    assert name not in err
    assert found in err
    assert flag in err
    assert f"'{USER_LIMITS[name].label}' in Settings > Preferences" in err

    code, out, err = _run(capsys, "inspect", path, flag, high)

    assert code == EXIT_OK, err
    assert str(path) in out


def test_inspect_token_limit_with_model(capsys, tiny_model_dir):
    path = _document(PAPER_PDF)

    code, out, err = _run(capsys, "inspect", path, "--model", tiny_model_dir, "--max-input-tokens", "1000")

    assert code == EXIT_DOCUMENT
    assert str(path) in err
    assert "the document's token count" in err
    assert "exceeds the limit of 1,000 tokens" in err
    assert "--max-input-tokens" in err
    assert "'Maximum input tokens' in Settings > Preferences" in err

    code, out, err = _run(capsys, "inspect", path, "--model", tiny_model_dir, "--max-input-tokens", "1000000")

    assert code == EXIT_OK, err
    assert "Tokens:" in out


def test_summarize_limits_hit_then_raised(capsys, tiny_model_dir):
    path = _document(SMALL_PDF)
    common = ("summarize", path, "--model", tiny_model_dir, "--device", "cpu", "--max-tokens", "8", "--beams", "1", "-q")

    code, out, err = _run(capsys, *common, "--max-input-tokens", "5")
    assert code == EXIT_DOCUMENT
    assert "exceeds the limit of 5 tokens" in err
    assert out == ""

    code, out, err = _run(capsys, *common, "--max-pages", "1", "--max-chars", "10")
    assert code == EXIT_DOCUMENT
    assert "--max-" in err
    assert out == ""

    code, out, err = _run(
        capsys, *common, "--max-input-tokens", "100000", "--max-pages", "100", "--max-chars", "1000000",
        "--max-read-seconds", "60",
    )
    assert code == EXIT_OK, err
    assert out.strip()


@pytest.mark.parametrize("value", ["0", "-3", "ten"])
def test_limit_flag_rejects_invalid(capsys, value):
    with pytest.raises(SystemExit) as raised:
        main(["inspect", str(_document(PAPER_PDF)), "--max-pages", value])
    assert raised.value.code == EXIT_USAGE
    assert "--max-pages" in capsys.readouterr().err


def test_limit_help_names_unit_and_default(capsys):
    with pytest.raises(SystemExit):
        main(["summarize", "--help"])
    out = capsys.readouterr().out
    assert "--max-pages N" in out
    assert "(default: 5,000 pages)" in out
    assert "(default: 600 seconds)" in " ".join(out.split())


# The reading-time limit ---------------------------------------------------------------


def test_read_seconds_bounds_slow_pdf():
    # A progress callback that sleeps makes each page slow, as a heavy page would.
    path = _document(LONG_PDF)
    per_page_s = 0.02
    limit_s = 1.0
    pages_read = []

    def slow_progress(done: int, total: int, unit: str) -> None:
        pages_read.append(done)
        time.sleep(per_page_s)

    started = time.monotonic()
    with pytest.raises(DocumentTooLargeError) as raised:
        load_document(path, limits=DocumentLimits(max_read_seconds=limit_s), progress=slow_progress)
    elapsed = time.monotonic() - started

    assert "exceeds the limit of 1 second." in str(raised.value)
    assert raised.value.value > limit_s
    # It stopped after about limit_s / per_page_s = 50 pages, far from the 400 of the file.
    assert max(pages_read) < 200
    # Tolerance: one page read and one sleep past the limit, with room for a busy machine.
    assert elapsed < limit_s + 2.0


def test_default_limits_read_long_files():
    for name in (LONG_PDF, LONG_DOCX):
        document = load_document(_document(name))
        assert document.characters > 100_000


# How the messages read ---------------------------------------------------------------


def test_pdf_character_count_marked_partial():
    # Reading stops at the first page past the limit, so the count is only a lower bound.
    path = _document(PAPER_PDF)
    whole = len(load_document(path).text)

    with pytest.raises(DocumentTooLargeError) as raised:
        load_document(path, limits=DocumentLimits(max_characters=1000))

    error = raised.value
    assert error.value < whole
    assert error.value_complete is False
    assert f"the character count (at least {error.value:,}, reading stopped there)" in str(error)
    assert "exceeds the limit of 1,000 characters." in str(error)


def test_page_count_message_in_user_terms():
    path = _document(PAPER_PDF)

    with pytest.raises(DocumentTooLargeError) as raised:
        load_document(path, limits=DocumentLimits(max_pages=5))

    assert raised.value.value_complete is True
    assert str(raised.value) == (
        f"{PAPER_PDF}: the page count (14) exceeds the limit of 5 pages. If you trust this document, "
        "raise the limit: --max-pages on the command line, or 'Maximum pages' in Settings > Preferences."
    )


def test_limit_of_one_uses_singular_unit():
    message = exceeded_reason("the page count", 14, 1, "max_pages")
    assert message.startswith("the page count (14) exceeds the limit of 1 page. ")


def test_token_limit_one_wording_everywhere():
    # The training pre-flight check and inspect/summarize report an over-long document in the same words.
    from synopsis.engine.preflight import PairLengths, _pair_problem

    path = _document(PAPER_PDF)
    with pytest.raises(DocumentTooLargeError) as raised:
        check_input_tokens(path, 33_247, DocumentLimits(max_input_tokens=100))
    pair = PairLengths("pairs.jsonl line 1", "train", 33_247, 40, 33_327, 20)

    reason = _pair_problem(pair, decoder_positions=1024, max_input_tokens=100)

    assert reason == input_tokens_reason(33_247, 100)
    assert str(raised.value) == f"{PAPER_PDF}: {reason}"
    assert reason.startswith("the document's token count (33,247) exceeds the limit of 100 tokens. ")
    assert "--max-input-tokens" in reason
    assert "'Maximum input tokens' in Settings > Preferences" in reason

"""Loading, splitting and pre-flight checking of document/summary pairs."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from synopsis.engine.documents.model import Document
from synopsis.engine.errors import Cancelled, SettingsError
from synopsis.engine.generation import GenerationSettings
from synopsis.engine.models import load_model
from synopsis.engine.pairs import Pair, PairsError, load_pairs, split_pairs
from synopsis.engine.cost_model import ModelShape, estimate_step_memory
from synopsis.engine.preflight import count_steps, format_report, measure_lengths, preflight
from synopsis.engine.progress import CancellationToken
from synopsis.engine.summarize import document_windows
from synopsis.engine.training import Trainer
from synopsis.engine.training.settings import TrainingSettings

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
PAIR_FILES = {"qmsum_meetings.jsonl": 20, "pmc_articles.jsonl": 8, "arxiv_papers.jsonl": 7}
GIB = 1024**3


def _corpus_file(*parts: str) -> Path:
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"corpus file {path} not found")
    return path


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _reasons(result) -> dict[str, str]:
    return {rejected.source: rejected.reason for rejected in result.rejected}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


# Corpus pairs -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PAIR_FILES))
def test_corpus_pairs_load(name):
    path = _corpus_file("pairs", name)
    result = load_pairs(path)
    assert result.rejected == []
    assert len(result) == PAIR_FILES[name]
    assert result.pairs[0].source == f"{name} line 1"
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [pair.document for pair in result.pairs] == [row["document"] for row in raw]
    assert [pair.summary for pair in result.pairs] == [row["summary"].strip() for row in raw]


# JSONL ----------------------------------------------------------------------------


def test_jsonl_rejects_bad_lines(tmp_path):
    (tmp_path / "notes.txt").write_text("The committee met on Monday and approved the budget.", encoding="utf-8")
    source = _write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"document": "A whole document.", "summary": "A summary."},
            {"document": "No summary here."},
            {"document": "Empty summary.", "summary": "   "},
            "{not json",
            ["a", "list"],
            {"document": 42, "summary": "Numbers are not text."},
            {"document": "missing.pdf", "summary": "The file is not there."},
            {"document": "notes.txt", "summary": "The budget passed."},
            "",
            {"document": "", "summary": "Empty document."},
        ],
    )
    result = load_pairs(source)
    reasons = _reasons(result)

    assert [pair.source for pair in result.pairs] == ["pairs.jsonl line 1", "pairs.jsonl line 8 (notes.txt)"]
    assert result.pairs[1].document.startswith("The committee met")
    assert reasons["pairs.jsonl line 2"] == "summary field 'summary' missing"
    assert reasons["pairs.jsonl line 3"] == "summary field 'summary' is empty"
    assert reasons["pairs.jsonl line 4"].startswith("invalid JSON")
    assert reasons["pairs.jsonl line 5"] == "the line is a list, expected a JSON object"
    assert reasons["pairs.jsonl line 6"] == "document field 'document' is a number, expected text"
    assert reasons["pairs.jsonl line 7"].startswith("missing.pdf: file not found")
    assert reasons["pairs.jsonl line 10"] == "document field 'document' is empty"
    assert len(result.rejected) == 7
    assert str(result.rejected[0]) == "pairs.jsonl line 2: summary field 'summary' missing"


def test_jsonl_scanned_pdf_rejected(tmp_path):
    scanned = _corpus_file("documents", "ocrmypdf_OCRmyPDF__linn.pdf")
    source = _write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"document": str(scanned), "summary": "A scanned page."},
            {"document": "Some text.", "summary": "Text."},
        ],
    )
    result = load_pairs(source)
    assert len(result.pairs) == 1
    assert len(result.rejected) == 1
    assert result.rejected[0].source == "pairs.jsonl line 1"
    assert "ocrmypdf_OCRmyPDF__linn.pdf: no text layer; OCR it first" in result.rejected[0].reason


def test_jsonl_reads_docx_and_pdf_paths(tmp_path):
    docx = _corpus_file("documents", "apache_tika__testWORD_various.docx")
    pdf = _corpus_file("documents", "mozilla_pdf.js__copy_paste_ligatures.pdf")
    source = _write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"document": str(docx), "summary": "Word."}, {"document": str(pdf), "summary": "PDF."}],
    )
    result = load_pairs(source)
    assert result.rejected == []
    assert len(result.pairs) == 2
    assert "Here is a text box" in result.pairs[0].document
    assert result.pairs[1].document.startswith("abcdef")


def test_jsonl_custom_fields(tmp_path):
    source = _write_jsonl(tmp_path / "pairs.jsonl", [{"body": "Long text.", "abstract": "Short."}])
    assert load_pairs(source).rejected[0].reason == "document field 'document' missing"

    result = load_pairs(source, document_field="body", summary_field="abstract")
    assert result.pairs == [Pair("pairs.jsonl line 1", "Long text.", "Short.")]


def test_json_array_file(tmp_path):
    source = tmp_path / "pairs.json"
    source.write_text(json.dumps([{"document": "Text.", "summary": "Sum."}, "oops"]), encoding="utf-8")
    result = load_pairs(source)
    assert [pair.source for pair in result.pairs] == ["pairs.json item 1"]
    assert _reasons(result) == {"pairs.json item 2": "the item is str, expected a JSON object"}


def test_non_latin_text_survives(tmp_path):
    source = _write_jsonl(tmp_path / "pairs.jsonl", [{"document": "東京は日本の首都です。", "summary": "東京。"}])
    assert load_pairs(source).pairs[0].summary == "東京。"


# CSV ------------------------------------------------------------------------------


def test_csv_rows_and_line_numbers(tmp_path):
    source = tmp_path / "pairs.csv"
    long_text = "word " * 40_000  # longer than csv's default field limit of 131,072 characters
    source.write_text(
        "document,summary\n"
        '"First document,\nwith a line break.",First summary.\n'
        "Second document.,\n"
        f"{long_text},Long one.\n"
        "too,many,fields\n"
        "missing.docx,Path to nowhere.\n",
        encoding="utf-8",
    )
    result = load_pairs(source)
    reasons = _reasons(result)

    assert [pair.source for pair in result.pairs] == ["pairs.csv line 2", "pairs.csv line 5"]
    assert result.pairs[0].document == "First document,\nwith a line break."
    assert result.pairs[1].document == long_text
    assert reasons["pairs.csv line 4"] == "summary field 'summary' is empty"
    assert reasons["pairs.csv line 6"] == "the row has more fields than the header's 2"
    assert reasons["pairs.csv line 7"].startswith("missing.docx: file not found")


def test_csv_missing_column(tmp_path):
    source = tmp_path / "pairs.csv"
    source.write_text("text,summary\nA document.,A summary.\n", encoding="utf-8")
    with pytest.raises(PairsError, match="no column named 'document'.*--document-field"):
        load_pairs(source)


def test_csv_semicolons_and_tsv(tmp_path):
    semicolons = tmp_path / "excel.csv"
    semicolons.write_text("\ufeffdocument;summary\nA document, with a comma.;A summary.\n", encoding="utf-8")
    result = load_pairs(semicolons)
    assert result.pairs == [Pair("excel.csv line 2", "A document, with a comma.", "A summary.")]

    tabs = tmp_path / "pairs.tsv"
    tabs.write_text("document\tsummary\nA document.\tA summary.\n", encoding="utf-8")
    assert load_pairs(tabs).pairs[0].summary == "A summary."


# Folders --------------------------------------------------------------------------


def test_folder_with_summaries_beside(tmp_path):
    (tmp_path / "report.txt").write_text("The annual report.", encoding="utf-8")
    (tmp_path / "report.summary.txt").write_text("Report summary.\n", encoding="utf-8")
    (tmp_path / "minutes.md").write_text("# Minutes\n\nWe met.", encoding="utf-8")
    (tmp_path / "minutes.summary.md").write_text("They met.", encoding="utf-8")
    (tmp_path / "lonely.txt").write_text("No summary for me.", encoding="utf-8")
    (tmp_path / "orphan.summary.txt").write_text("No document for me.", encoding="utf-8")
    (tmp_path / "blank.txt").write_text("A document.", encoding="utf-8")
    (tmp_path / "blank.summary.txt").write_text("", encoding="utf-8")
    (tmp_path / "data.csv").write_text("ignored", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("ignored", encoding="utf-8")
    scanned = _corpus_file("documents", "ocrmypdf_OCRmyPDF__linn.pdf")
    (tmp_path / "scan.pdf").symlink_to(scanned)
    (tmp_path / "scan.summary.txt").write_text("A scanned page.", encoding="utf-8")

    result = load_pairs(tmp_path)
    reasons = _reasons(result)

    assert [pair.source for pair in result.pairs] == ["minutes.md", "report.txt"]
    assert result.pairs[1] == Pair("report.txt", "The annual report.", "Report summary.")
    assert reasons["lonely.txt"] == "no summary file; expected lonely.summary.txt"
    assert reasons["orphan.summary.txt"].startswith("no document named orphan")
    assert "empty" in reasons["blank.txt"]
    assert "no text layer" in reasons["scan.pdf"]
    assert len(result.rejected) == 4


def test_folder_with_subfolders(tmp_path):
    documents = tmp_path / "documents"
    summaries = tmp_path / "summaries"
    documents.mkdir()
    summaries.mkdir()
    (documents / "a.txt").write_text("Document A.", encoding="utf-8")
    (summaries / "a.txt").write_text("Summary A.", encoding="utf-8")
    (documents / "b.md").write_text("Document B.", encoding="utf-8")
    (summaries / "b.summary.md").write_text("Summary B.", encoding="utf-8")
    (documents / "c.txt").write_text("Document C.", encoding="utf-8")
    (documents / "d.txt").write_text("Document D as text.", encoding="utf-8")
    (documents / "d.md").write_text("Document D as Markdown.", encoding="utf-8")
    (summaries / "d.txt").write_text("Summary D.", encoding="utf-8")

    result = load_pairs(tmp_path)
    reasons = _reasons(result)

    assert [(pair.source, pair.summary) for pair in result.pairs] == [
        ("documents/a.txt", "Summary A."),
        ("documents/b.md", "Summary B."),
    ]
    assert reasons["documents/c.txt"] == "no summary file; expected summaries/c.txt"
    assert reasons["documents/d.md"].startswith("several files share the name d")


def test_unusable_paths(tmp_path):
    with pytest.raises(PairsError, match="not found"):
        load_pairs(tmp_path / "nope.jsonl")
    spreadsheet = tmp_path / "pairs.xlsx"
    spreadsheet.write_bytes(b"PK")
    with pytest.raises(PairsError, match="unknown pairs format"):
        load_pairs(spreadsheet)


def test_load_reports_progress_and_cancels(tmp_path):
    source = _write_jsonl(tmp_path / "p.jsonl", [{"document": f"D{i}.", "summary": "S."} for i in range(3)])
    reports = []
    load_pairs(source, progress=lambda done, total, unit: reports.append((done, total, unit)))
    assert reports == [(0, 3, "pairs"), (1, 3, "pairs"), (2, 3, "pairs"), (3, 3, "pairs")]

    token = CancellationToken()
    token.cancel()
    with pytest.raises(Cancelled):
        load_pairs(source, cancel=token)


# Splitting ------------------------------------------------------------------------


def _numbered_pairs(count: int) -> list[Pair]:
    return [Pair(f"p{i}", f"Document {i}.", f"Summary {i}.") for i in range(count)]


def test_split_is_reproducible():
    pairs = _numbered_pairs(20)
    first = split_pairs(pairs, 0.2, seed=7)
    again = split_pairs(pairs, 0.2, seed=7)
    other = split_pairs(pairs, 0.2, seed=8)
    assert first == again
    assert first[1] != other[1]


def test_split_sizes_and_order():
    pairs = _numbered_pairs(20)
    train, validation = split_pairs(pairs, 0.2, seed=1)
    assert len(validation) == 4
    assert len(train) == 16
    assert sorted(pair.source for pair in train + validation) == sorted(pair.source for pair in pairs)
    assert train == [pair for pair in pairs if pair in train]
    assert validation == [pair for pair in pairs if pair in validation]


def test_split_keeps_one_of_each():
    assert [len(part) for part in split_pairs(_numbered_pairs(2), 0.01)] == [1, 1]
    assert [len(part) for part in split_pairs(_numbered_pairs(3), 0.99)] == [1, 2]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 2.0])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(SettingsError, match="between 0 and 1"):
        split_pairs(_numbered_pairs(5), fraction)


def test_split_needs_two_pairs():
    with pytest.raises(SettingsError, match="at least 2 pairs"):
        split_pairs(_numbered_pairs(1), 0.5)


# Pre-flight -----------------------------------------------------------------------


def test_lengths_match_windows(tiny):
    path = _corpus_file("pairs", "pmc_articles.jsonl")
    pairs = load_pairs(path).pairs[:3]
    lengths = measure_lengths(tiny, pairs, "train", 256)
    for pair, counted in zip(pairs, lengths):
        windows = document_windows(Document(Path(pair.source), "txt", pair.document), tiny, 256)
        assert counted.document_tokens == windows.total_tokens
        assert counted.windows == len(windows)
        assert counted.memory_positions == int(windows.attention_mask.sum())
        labels = tiny.tokenizer(text_target=pair.summary)["input_ids"]
        assert counted.summary_tokens == len(labels)


def test_preflight_on_corpus_is_fast(tiny):
    pairs = load_pairs(_corpus_file("pairs", "qmsum_meetings.jsonl")).pairs
    train, validation = split_pairs(pairs, 0.2)
    started = time.perf_counter()
    report = preflight(tiny, train, validation, TrainingSettings(accumulate=4, epochs=2))
    assert time.perf_counter() - started < 30

    assert report.rejected == []
    assert len(report.train) == 16
    assert len(report.validation) == 4
    assert report.steps_per_epoch == 4
    assert report.total_steps == 8
    assert report.speed_measured
    assert report.seconds_per_epoch > 0
    assert report.seconds_total == pytest.approx(2 * report.seconds_per_epoch)
    assert report.memory.total > report.memory.weights
    assert report.peak_memory >= report.memory.total
    assert json.dumps(report.to_json())


def test_preflight_flags_long_summary(tiny, tiny_model_dir):
    long_summary = "alpha beta gamma delta " * 400  # over the tiny decoder's 1024 positions
    pairs = [Pair("ok", "A short document. " * 20, "Short."), Pair("long", "A document. " * 20, long_summary)]
    report = preflight(tiny, pairs, [], TrainingSettings(), measure_speed=False)
    assert [r.source for r in report.rejected] == ["long"]
    assert "the decoder takes at most 1,024" in report.rejected[0].reason
    assert report.problems[0] is None
    assert report.problems[1] is not None
    assert not report.speed_measured


def test_preflight_keeps_loading_rejections(tiny, tmp_path):
    source = _write_jsonl(tmp_path / "p.jsonl", [{"document": "Text."}, {"document": "Text.", "summary": "S."}])
    loaded = load_pairs(source)
    report = preflight(tiny, loaded.pairs, [], TrainingSettings(), rejected=loaded.rejected, measure_speed=False)
    assert [str(r) for r in report.rejected] == ["p.jsonl line 1: summary field 'summary' missing"]


def test_preflight_warnings(tiny):
    pair = Pair("a", "The same document. " * 30, "A summary of some length that goes on. " * 10)
    settings = TrainingSettings(eval_generation=GenerationSettings(max_tokens=8))
    report = preflight(tiny, [pair], [Pair("b", pair.document, pair.summary)], settings, measure_speed=False)
    assert any("1 validation document also appears in the training pairs" in w for w in report.warnings)
    assert any("longer than the 8 tokens" in w for w in report.warnings)


def test_preflight_bad_settings_fail_before_pairs(tiny):
    with pytest.raises(SettingsError, match="Window length"):
        preflight(tiny, [], [], TrainingSettings(window_tokens=5000))
    with pytest.raises(SettingsError, match="chunk windows"):
        preflight(tiny, [], [], TrainingSettings(chunk_windows=0))


def test_preflight_cancels(tiny):
    token = CancellationToken()
    token.cancel()
    with pytest.raises(Cancelled):
        preflight(tiny, _numbered_pairs(3), [], TrainingSettings(), cancel=token)


def test_preflight_probe_leaves_model_as_it_was(tiny):
    tiny.model.eval()
    before = {name: p.detach().clone() for name, p in tiny.model.named_parameters()}
    preflight(tiny, _numbered_pairs(2), [], TrainingSettings())
    assert not tiny.model.training
    assert all(p.grad is None for p in tiny.model.parameters())
    assert all(p.equal(before[name]) for name, p in tiny.model.named_parameters())


@pytest.mark.parametrize("pairs,accumulate,epochs,max_steps", [(10, 4, 3, None), (10, 4, 3, 5), (7, 1, 2, 100), (8, 8, 1, None)])
def test_step_count_matches_trainer(tiny, tmp_path, pairs, accumulate, epochs, max_steps):
    settings = TrainingSettings(accumulate=accumulate, epochs=epochs, max_steps=max_steps)
    trainer = Trainer(tiny, _numbered_pairs(pairs), [], settings, tmp_path)
    assert count_steps(pairs, settings)[1] == trainer.total_steps


# Memory model against measured reference numbers ----------------------------------

# BART-base in float32 with SDPA attention, as transformers builds it.
BART_BASE = ModelShape(
    parameters=139_420_416,
    parameter_bytes=139_420_416 * 4,
    d_model=768,
    encoder_layers=6,
    decoder_layers=6,
    encoder_ffn=3072,
    decoder_ffn=3072,
    encoder_heads=12,
    decoder_heads=12,
    vocab=50265,
    stores_attention=False,
)


def _without_optimizer(estimate) -> float:
    # The benchmark steps run forward and backward only, without AdamW's moments.
    return (estimate.total - estimate.optimizer) / GIB


@pytest.mark.parametrize(
    "tokens,cached,stores_attention,measured_gib",
    [
        (4_096, False, True, 8.65),
        (4_096, True, True, 3.27),
        (16_384, True, True, 5.70),
        (4_096, False, False, 3.96),
        (4_096, True, False, 2.49),
        (16_384, False, False, 9.10),
        (16_384, True, False, 2.59),
        (65_536, True, False, 4.43),
        (131_072, True, False, 7.58),
    ],
)
def test_memory_model_near_measurements(tokens, cached, stores_attention, measured_gib):
    # Peak RSS of one step with a 256-token summary, measured by
    # bench/train_memory.py on a 2-core Xeon with torch 2.13 in float32,
    # with the model's own cross-attention.
    # Attention dropout 0.1 makes the CPU store attention probabilities.
    shape = ModelShape(**{**BART_BASE.__dict__, "stores_attention": stores_attention})
    estimate = estimate_step_memory(shape, 1024, math.ceil(tokens / 1022), 256, cached=cached)
    assert _without_optimizer(estimate) == pytest.approx(measured_gib, rel=0.25)


@pytest.mark.parametrize(
    "tokens,measured_gib", [(16_384, 2.57), (32_768, 2.65), (65_536, 2.86), (131_072, 3.36)]
)
def test_memory_model_blockwise_near_measurements(tokens, measured_gib):
    # The same benchmark with the cached step's blockwise cross-attention
    # (blocks of 4,096 positions) and attention dropout 0.
    estimate = estimate_step_memory(BART_BASE, 1024, math.ceil(tokens / 1022), 256, blockwise_block=4096)
    assert _without_optimizer(estimate) == pytest.approx(measured_gib, rel=0.25)


def test_memory_grows_with_document_and_chunk():
    small = estimate_step_memory(BART_BASE, 1024, 4, 256).total
    large = estimate_step_memory(BART_BASE, 1024, 64, 256).total
    chunked = estimate_step_memory(BART_BASE, 1024, 64, 256, chunk_windows=8).total
    plain = estimate_step_memory(BART_BASE, 1024, 64, 256, cached=False).total
    assert small < large < chunked < plain
    eager = estimate_step_memory(
        ModelShape(**{**BART_BASE.__dict__, "stores_attention": True}), 1024, 64, 256
    ).total
    assert eager > large
    assert math.isfinite(large)


def test_preflight_without_model_sizes(tiny, monkeypatch):
    # BART maps hidden_size to d_model, so one None hides both sizes. The checks still run.
    monkeypatch.setattr(tiny.model.config, "d_model", None, raising=False)
    report = preflight(tiny, _numbered_pairs(2), [], TrainingSettings())
    assert report.memory is None
    assert report.seconds_per_epoch is None
    assert any("estimates are left out" in warning for warning in report.warnings)
    assert "Time:        not estimated" in "\n".join(format_report(report))
    assert len(report.train) == 2

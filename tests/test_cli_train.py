"""The train and evaluate commands end to end, with the tiny model and small pairs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from synopsis.engine.cli import EXIT_CANCELLED, EXIT_DOCUMENT, EXIT_MODEL, EXIT_OK, EXIT_USAGE, main

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"

TOPICS = [
    ("The city council", "voted to build a new library near the river"),
    ("A team of biologists", "found a frog species that sings at night"),
    ("The railway company", "opened a line between two mountain towns"),
    ("Local farmers", "harvested a record crop of apples this autumn"),
    ("The school board", "agreed to start classes an hour later"),
    ("Engineers at the port", "tested a crane that runs on solar power"),
]


def _pair(subject: str, event: str, sentences: int = 20) -> dict:
    body = " ".join(f"{subject} {event}, said report number {n}." for n in range(sentences))
    return {"document": body, "summary": f"{subject} {event}."}


def _write_pairs(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return _write_pairs(tmp_path / "pairs.jsonl", [_pair(subject, event) for subject, event in TOPICS])


def _run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(part) for part in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _train_args(pairs: Path, model: Path, output: Path, *extra: object) -> list[object]:
    return [
        "train", "--pairs", pairs, "--model", model, "--output", output, "--val-fraction", "0.34",
        "--accumulate", "2", "--eval-every", "1", "--window-tokens", "192", "--eval-max-tokens", "8",
        "--eval-beams", "1", "--device", "cpu", *extra,
    ]


def _rows(output: Path) -> tuple[list[int], list[int]]:
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [row["step"] for row in rows if "eval" not in row]
    evaluations = [row["step"] for row in rows if "eval" in row]
    return steps, evaluations


# train -----------------------------------------------------------------------------


def test_train_then_resume(capsys, tiny_model_dir, pairs_file, tmp_path):
    output = tmp_path / "run"
    code, out, err = _run(capsys, *_train_args(pairs_file, tiny_model_dir, output, "--max-steps", "2"))
    assert code == EXIT_OK, err
    assert "Training:    4 pairs" in out
    assert "Validation:  2 pairs" in out
    assert "Memory:      about" in out
    assert "per epoch" in out
    assert "Training finished after 2 of 2 steps." in out
    assert "Training" in err
    assert "loss" in err
    assert _rows(output) == ([1, 2], [1, 2])

    code, out, err = _run(capsys, *_train_args(pairs_file, tiny_model_dir, output, "--max-steps", "3", "--resume"))
    assert code == EXIT_OK, err
    assert "Training finished after 3 of 3 steps." in out
    assert _rows(output) == ([1, 2, 3], [1, 2, 3])
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in rows:
        if "eval" in row:
            assert set(row["eval"]) == {"loss", "rouge1", "rouge2", "rougeL", "rougeLsum"}
        else:
            assert row["loss"] > 0
    # The resumed step follows the schedule of the new total, not the saved run's end at 0.
    step_rows = [row for row in rows if "eval" not in row]
    assert step_rows[-1]["learning_rate"] > 0

    for folder in ("best", "last"):
        model = AutoModelForSeq2SeqLM.from_pretrained(output / folder)
        assert model.config.is_encoder_decoder
    last = AutoModelForSeq2SeqLM.from_pretrained(output / "last")
    step_three = AutoModelForSeq2SeqLM.from_pretrained(output / "checkpoints" / "step-000003")
    assert all(torch.equal(a, b) for a, b in zip(last.parameters(), step_three.parameters()))


def test_train_dry_run_on_corpus_pairs(capsys, tiny_model_dir, tmp_path):
    pairs = CORPUS / "pairs" / "pmc_articles.jsonl"
    if not pairs.is_file():
        pytest.skip(f"corpus file {pairs} not found")
    output = tmp_path / "run"
    code, out, err = _run(
        capsys, "train", "--pairs", pairs, "--model", tiny_model_dir, "--output", output,
        "--validation", CORPUS / "pairs" / "arxiv_papers.jsonl", "--dry-run", "--quiet",
    )
    assert code == EXIT_OK, err
    assert "Training:    8 pairs" in out
    assert "Validation:  7 pairs" in out
    assert "GFLOP/s" in out
    assert not output.exists()


def test_bad_pairs_are_listed_and_refused(capsys, tiny_model_dir, tmp_path):
    scanned = CORPUS / "documents" / "ocrmypdf_OCRmyPDF__linn.pdf"
    if not scanned.is_file():
        pytest.skip(f"corpus file {scanned} not found")
    rows = [_pair(*TOPICS[0]), {"document": "No summary."}, {"document": str(scanned), "summary": "A scan."}]
    rows += [_pair(*topic) for topic in TOPICS[1:3]]
    pairs = _write_pairs(tmp_path / "pairs.jsonl", rows)
    output = tmp_path / "run"

    code, out, err = _run(capsys, "train", "--pairs", pairs, "--model", tiny_model_dir, "--output", output, "-q")
    assert code == EXIT_DOCUMENT
    assert "2 pairs cannot be used" in err
    assert "pairs.jsonl line 2: summary field 'summary' missing" in err
    assert "pairs.jsonl line 3: ocrmypdf_OCRmyPDF__linn.pdf: no text layer" in err
    assert "--skip-bad-pairs" in err
    assert out == ""
    assert not output.exists()

    code, out, err = _run(
        capsys, "train", "--pairs", pairs, "--model", tiny_model_dir, "--output", output, "-q",
        "--skip-bad-pairs", "--dry-run",
    )
    assert code == EXIT_OK, err
    assert "skipping 2 pairs" in err
    assert "Training:    3 pairs" in out


def test_summary_too_long_for_decoder(capsys, tiny_model_dir, tmp_path):
    rows = [_pair(*TOPICS[0]), {"document": "A short document.", "summary": "word " * 1500}]
    pairs = _write_pairs(tmp_path / "pairs.jsonl", rows)
    code, _, err = _run(capsys, "train", "--pairs", pairs, "--model", tiny_model_dir, "--output", tmp_path / "run", "-q")
    assert code == EXIT_DOCUMENT
    assert "pairs.jsonl line 2: the summary has" in err
    assert "the decoder takes at most 1,024" in err


def test_document_limits_apply_to_pairs(capsys, tiny_model_dir, tmp_path):
    paper = CORPUS / "documents" / "mozilla_pdf.js__tracemonkey.pdf"
    if not paper.is_file():
        pytest.skip(f"corpus file {paper} not found")
    rows = [_pair(*topic) for topic in TOPICS[:3]] + [{"document": str(paper), "summary": "A tracing JIT."}]
    pairs = _write_pairs(tmp_path / "pairs.jsonl", rows)
    base = ["train", "--pairs", pairs, "--model", tiny_model_dir, "--output", tmp_path / "run", "-q", "--dry-run"]

    # The 14-page paper is over a 5-page limit, and the flag names the way out.
    code, _, err = _run(capsys, *base, "--max-pages", "5")
    assert code == EXIT_DOCUMENT
    assert "pairs.jsonl line 4" in err
    assert "the page count (14) exceeds the limit of 5 pages" in err
    assert "--max-pages" in err

    code, _, err = _run(capsys, *base, "--max-pages", "20")
    assert code == EXIT_OK, err

    # Every inline document is over 30 tokens, so the pre-flight check rejects all four.
    code, _, err = _run(capsys, *base, "--max-input-tokens", "30")
    assert code == EXIT_DOCUMENT
    assert "4 pairs cannot be used" in err
    assert "the document's token count (" in err
    assert "exceeds the limit of 30 tokens" in err
    assert "--max-input-tokens" in err


def test_evaluate_input_token_limit(capsys, tiny_model_dir, pairs_file):
    code, _, err = _run(capsys, "evaluate", "--pairs", pairs_file, "--model", tiny_model_dir, "-q", "--max-input-tokens", "30")
    assert code == EXIT_DOCUMENT
    assert "pairs.jsonl line 1" in err
    assert "the document's token count (" in err
    assert "exceeds the limit of 30 tokens" in err


def test_missing_pairs_file(capsys, tiny_model_dir, tmp_path):
    code, _, err = _run(
        capsys, "train", "--pairs", tmp_path / "nope.jsonl", "--model", tiny_model_dir, "--output", tmp_path / "run"
    )
    assert code == EXIT_DOCUMENT
    assert "nope.jsonl: file or folder not found" in err


def test_missing_model(capsys, pairs_file, tmp_path):
    code, _, err = _run(capsys, "train", "--pairs", pairs_file, "--model", tmp_path / "nope", "--output", tmp_path / "run")
    assert code == EXIT_MODEL
    assert "not found" in err


def test_existing_run_needs_resume(capsys, tiny_model_dir, pairs_file, tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / "metrics.jsonl").write_text('{"step": 1}\n', encoding="utf-8")
    code, _, err = _run(capsys, "train", "--pairs", pairs_file, "--model", tiny_model_dir, "--output", output)
    assert code == EXIT_USAGE
    assert "--resume" in err


@pytest.mark.parametrize(
    "options",
    [
        ["--val-fraction", "1.5"],
        ["--val-fraction", "0.2", "--validation", "other.jsonl"],
        ["--lr", "0"],
        ["--accumulate", "0"],
        ["--precision", "fp8"],
    ],
)
def test_bad_options_are_usage_errors(capsys, options):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--pairs", "p.jsonl", "--output", "run", *options])
    assert exited.value.code == EXIT_USAGE


def test_invalid_settings_are_usage_errors(capsys, tiny_model_dir, pairs_file, tmp_path):
    code, _, err = _run(
        capsys, "train", "--pairs", pairs_file, "--model", tiny_model_dir, "--output", tmp_path / "run",
        "--patience", "2",
    )
    assert code == EXIT_USAGE
    assert "patience" in err.lower()


# evaluate ----------------------------------------------------------------------------


def test_evaluate_prints_scores(capsys, tiny_model_dir, pairs_file):
    code, out, err = _run(
        capsys, "evaluate", "--pairs", pairs_file, "--model", tiny_model_dir, "--max-tokens", "8", "--beams", "1"
    )
    assert code == EXIT_OK, err
    for label in ("ROUGE-1:", "ROUGE-2:", "ROUGE-L:", "ROUGE-Lsum:"):
        assert label in out
    assert "Pairs:       6" in out
    assert "Evaluating" in err


def test_evaluate_json(capsys, tiny_model_dir, pairs_file):
    code, out, err = _run(
        capsys, "evaluate", "--pairs", pairs_file, "--model", tiny_model_dir, "--max-tokens", "8", "--json", "-q"
    )
    assert code == EXIT_OK, err
    report = json.loads(out)
    assert report["pairs"] == 6
    assert set(report["mean"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert [pair["source"] for pair in report["per_pair"]] == [f"pairs.jsonl line {n}" for n in range(1, 7)]
    assert all(0 <= value <= 1 for pair in report["per_pair"] for value in pair["scores"].values())
    assert err == ""


def test_evaluate_bad_pairs(capsys, tiny_model_dir, tmp_path):
    pairs = _write_pairs(tmp_path / "pairs.jsonl", [{"document": "Text."}])
    code, _, err = _run(capsys, "evaluate", "--pairs", pairs, "--model", tiny_model_dir, "-q")
    assert code == EXIT_DOCUMENT
    assert "summary field 'summary' missing" in err


# Ctrl-C ------------------------------------------------------------------------------


def _synopsis_command() -> list[str]:
    script = shutil.which("synopsis", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "synopsis.engine.cli"]


def test_ctrl_c_saves_checkpoint(tiny_model_dir, pairs_file, tmp_path):
    output = tmp_path / "run"
    arguments = [str(part) for part in _train_args(pairs_file, tiny_model_dir, output, "--max-steps", "1000", "-q")]
    arguments[arguments.index("--eval-every") + 1] = "1000"
    process = subprocess.Popen(
        _synopsis_command() + arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    # Interrupt once the first step is logged, so training is under way.
    metrics = output / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and metrics.read_text(encoding="utf-8").strip():
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)

    assert process.returncode == EXIT_CANCELLED, out + err
    assert "--resume" in err
    steps, _ = _rows(output)
    saved = sorted(path.name for path in (output / "checkpoints").iterdir())
    assert saved == [f"step-{steps[-1]:06d}"]
    assert (output / "last" / "config.json").is_file()


def test_resume_without_checkpoint_fails(capsys, tiny_model_dir, pairs_file, tmp_path):
    code, _, err = _run(capsys, *_train_args(pairs_file, tiny_model_dir, tmp_path / "nothing", "--max-steps", "2", "--resume"))
    assert code == EXIT_USAGE
    assert "Nothing to resume" in err


def test_resume_rejects_other_learning_rate(capsys, tiny_model_dir, pairs_file, tmp_path):
    output = tmp_path / "run"
    code, _, err = _run(capsys, *_train_args(pairs_file, tiny_model_dir, output, "--max-steps", "1"))
    assert code == EXIT_OK, err
    code, _, err = _run(capsys, *_train_args(pairs_file, tiny_model_dir, output, "--max-steps", "2", "--resume", "--lr", "0.5"))
    assert code == EXIT_USAGE
    assert "learning_rate" in err


def test_resume_rejects_changed_pair_texts(capsys, tiny_model_dir, pairs_file, tmp_path):
    output = tmp_path / "run"
    code, _, err = _run(capsys, *_train_args(pairs_file, tiny_model_dir, output, "--max-steps", "1"))
    assert code == EXIT_OK, err
    rows = [json.loads(line) for line in pairs_file.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        row["document"] = row["document"].replace("e", "a")
    changed = tmp_path / "changed.jsonl"
    changed.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    code, _, err = _run(capsys, *_train_args(changed, tiny_model_dir, output, "--max-steps", "2", "--resume"))
    assert code == EXIT_USAGE
    assert "other pairs" in err


def test_output_that_is_a_file(capsys, tiny_model_dir, pairs_file, tmp_path):
    target = tmp_path / "afile"
    target.write_text("", encoding="utf-8")
    code, _, err = _run(capsys, *_train_args(pairs_file, tiny_model_dir, target, "--max-steps", "1"))
    assert code == EXIT_USAGE
    assert "is a file" in err


# Step counts with several processes, and plurals --------------------------------------


def test_dry_run_counts_steps_per_process(capsys, tiny_model_dir, pairs_file, tmp_path):
    # 4 training pairs, 2 documents per process and step, 3 epochs.
    code, out, err = _run(capsys, *_train_args(pairs_file, tiny_model_dir, tmp_path / "one", "--epochs", "3", "--dry-run"))
    assert code == EXIT_OK, err
    assert "for 6 steps" in out
    code, out, err = _run(
        capsys, *_train_args(pairs_file, tiny_model_dir, tmp_path / "two", "--epochs", "3", "--nproc", "2", "--dry-run")
    )
    assert code == EXIT_OK, err
    assert "for 3 steps" in out


def test_preflight_time_is_per_process(tiny_model_dir):
    from synopsis.engine.models import load_model
    from synopsis.engine.pairs import Pair
    from synopsis.engine.preflight import preflight
    from synopsis.engine.training.settings import TrainingSettings

    loaded = load_model(tiny_model_dir, device="cpu")
    pairs = [Pair(f"p{n}", _pair(*topic)["document"], _pair(*topic)["summary"]) for n, topic in enumerate(TOPICS[:5])]
    settings = TrainingSettings(accumulate=1, epochs=1)
    one = preflight(loaded, pairs, [], settings, measure_speed=False)
    two = preflight(loaded, pairs, [], settings, measure_speed=False, world_size=2)
    assert (one.steps_per_epoch, one.total_steps) == (5, 5)
    assert (two.steps_per_epoch, two.total_steps) == (3, 3)
    assert two.seconds_per_epoch == pytest.approx(one.seconds_per_epoch / 2, rel=1e-9)
    assert two.seconds_total == pytest.approx(two.seconds_per_epoch, rel=1e-9)


def test_one_bad_pair_is_singular(capsys, tiny_model_dir, tmp_path):
    rows = [_pair(subject, event) for subject, event in TOPICS]
    rows[0] = {"document": rows[0]["document"]}
    pairs = _write_pairs(tmp_path / "pairs.jsonl", rows)
    code, _, err = _run(capsys, *_train_args(pairs, tiny_model_dir, tmp_path / "run", "--dry-run"))
    assert code == EXIT_DOCUMENT
    assert "1 pair cannot be used" in err
    assert "1 pairs" not in err


def test_count_plurals():
    from synopsis.engine.counts import count

    assert count(1, "step") == "1 step"
    assert count(0, "step") == "0 steps"
    assert count(2, "process", "processes") == "2 processes"
    assert count(1_234, "pair") == "1,234 pairs"


def test_resume_prints_its_step(capsys, tiny_model_dir, pairs_file, tmp_path):
    output = tmp_path / "run"
    code, _, err = _run(capsys, *_train_args(pairs_file, tiny_model_dir, output, "--max-steps", "1"))
    assert code == EXIT_OK, err
    code, out, err = _run(capsys, *_train_args(pairs_file, tiny_model_dir, output, "--max-steps", "2", "--resume"))
    assert code == EXIT_OK, err
    assert f"Resuming:    from step 1 of 2 ({output / 'checkpoints' / 'step-000001'})" in out
    assert "processes" not in err  # same world size: no warning
    run = json.loads((output / "run.json").read_text(encoding="utf-8"))
    assert run["world_size"] == 1
    assert "world_size_changes" not in run

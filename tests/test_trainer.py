"""The training recipe on the tiny model: layout, events, resume, cancel, failures."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from synopsis.engine.errors import OutOfMemoryError, SettingsError
from synopsis.engine.generation import GenerationSettings
from synopsis.engine.models import load_model
from synopsis.engine.pairs import Pair
from synopsis.engine.progress import CancellationToken
from synopsis.engine.training import (
    CheckpointEvent,
    EvaluationEvent,
    FinishedEvent,
    StepEvent,
    Trainer,
    TrainingDivergedError,
    TrainingSettings,
)
from synopsis.engine.training import trainer as trainer_module

TOPICS = ["budget", "clinics", "rainfall", "harvest", "bridges", "schools", "transit", "libraries"]


def make_pairs(count: int, offset: int = 0) -> list[Pair]:
    pairs = []
    for i in range(offset, offset + count):
        topic = TOPICS[i % len(TOPICS)]
        sentences = [f"Report {i} notes that the {topic} changed in district {n % 7}." for n in range(8 + 3 * (i % 4))]
        pairs.append(Pair(f"pairs.jsonl line {i + 1}", " ".join(sentences), f"The {topic} changed in report {i}."))
    return pairs


def overlap_metric(predictions: list[str], references: list[str]) -> dict[str, float]:
    """A cheap stand-in for ROUGE: the share of reference words the prediction contains."""
    scores = []
    for prediction, reference in zip(predictions, references):
        words = set(reference.lower().split())
        scores.append(len(words & set(prediction.lower().split())) / len(words))
    return {"rougeLsum": sum(scores) / len(scores)}


def settings(**overrides) -> TrainingSettings:
    values = dict(
        epochs=2,
        accumulate=2,
        learning_rate=1e-3,
        warmup_fraction=0.2,
        eval_every=2,
        keep_last=1,
        seed=7,
        window_tokens=48,
        chunk_windows=1,
        eval_generation=GenerationSettings(max_tokens=6, beams=1),
        max_eval_pairs=2,
    )
    values.update(overrides)
    return TrainingSettings(**values)


class CancelAfterChecks(CancellationToken):
    """A token that turns cancelled after the trainer has checked it ``checks`` times."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.remaining = checks

    @property
    def cancelled(self) -> bool:
        self.remaining -= 1
        return self.remaining < 0


def step_losses(output_dir) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows if "eval" not in row]



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture
def fresh(tiny_model_dir):
    """Return a function that loads a new copy of the tiny model, as a new process would."""
    return lambda: load_model(tiny_model_dir, device="cpu")


def test_run_writes_layout_and_events(fresh, tmp_path):
    events, reports = [], []
    trainer = Trainer(
        fresh(), make_pairs(6), make_pairs(3, offset=50), settings(), tmp_path,
        progress=lambda done, total, unit: reports.append((done, total, unit)),
        on_event=events.append, metric_fn=overlap_metric,
    )
    result = trainer.run()

    assert result.steps == result.total_steps == 6  # 2 epochs of ceil(6 / 2) steps
    assert not result.cancelled
    assert not result.stopped_early
    assert reports == [(step, 6, "steps") for step in range(1, 7)]
    assert [type(e) for e in events if isinstance(e, StepEvent)] == [StepEvent] * 6
    evaluations = [e for e in events if isinstance(e, EvaluationEvent)]
    assert [e.step for e in evaluations] == [2, 4, 6]
    assert set(evaluations[0].metrics) == {"loss", "rougeLsum"}
    assert evaluations[0].is_best
    assert evaluations[0].best_examples and evaluations[0].worst_examples
    assert evaluations[0].best_examples[0].reference in {p.summary for p in make_pairs(3, offset=50)}
    assert any(isinstance(e, CheckpointEvent) and e.kind == "best" for e in events)
    assert isinstance(events[-1], FinishedEvent) and events[-1].result == result

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step_rows = [row for row in rows if "eval" not in row]
    assert [row["step"] for row in step_rows] == [1, 2, 3, 4, 5, 6]
    for row in step_rows:
        assert {"step", "loss", "learning_rate", "tokens", "seconds"} <= set(row)
        assert math.isfinite(row["loss"])
        assert row["tokens"] > 0
    assert [row["step"] for row in rows if "eval" in row] == [2, 4, 6]
    # Warmup over ceil(0.2 * 6) = 2 steps, then linear decay to zero.
    assert [round(row["learning_rate"], 8) for row in step_rows] == [5e-4, 1e-3, 1e-3, 7.5e-4, 5e-4, 2.5e-4]

    run = json.loads((tmp_path / "run.json").read_text())
    assert run["base_model"] == trainer.loaded.name
    assert run["settings"]["seed"] == 7
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    best = f"step-{result.best_step:06d}"
    assert kept == sorted({best, "step-000006"})
    for name in ("best", "last"):
        assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / name) is not None
        assert load_model(tmp_path / name, device="cpu").model.config.d_model == 32


def test_training_changes_weights_and_leaves_eval_mode(fresh, tmp_path):
    loaded = fresh()
    before = loaded.model.model.shared.weight.detach().clone()
    Trainer(loaded, make_pairs(4), [], settings(epochs=1), tmp_path, metric_fn=overlap_metric).run()
    assert not torch.equal(before, loaded.model.model.shared.weight)
    assert not loaded.model.training
    last = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "last")
    assert torch.equal(last.model.shared.weight, loaded.model.model.shared.weight)
    assert not (tmp_path / "best").exists()  # no validation pairs, so nothing to rank by


@pytest.mark.parametrize("checks", [3, 5], ids=["between-steps", "mid-accumulation"])
def test_resume_matches_uninterrupted_run(fresh, tmp_path, checks):
    # The trainer checks the token before each step and before each of its two
    # documents, so step 1 makes checks 1-3 and step 2 checks 4-6. The token
    # turns at check checks + 1: check 4 is between the steps, check 6 falls
    # after step 2's first document has added its gradient.
    pairs, validation = make_pairs(5), make_pairs(2, offset=50)
    whole = tmp_path / "whole"
    Trainer(fresh(), pairs, validation, settings(), whole, metric_fn=overlap_metric).run()

    parts = tmp_path / "parts"
    first = Trainer(
        fresh(), pairs, validation, settings(), parts, cancel=CancelAfterChecks(checks), metric_fn=overlap_metric
    ).run()
    assert first.cancelled
    assert first.steps == 1
    assert (parts / "checkpoints" / "step-000001" / "COMPLETE").is_file()

    second = Trainer(fresh(), pairs, validation, settings(), parts, metric_fn=overlap_metric).run(resume=True)
    assert second.steps == 6
    assert not second.cancelled
    assert step_losses(parts) == step_losses(whole)


def test_resume_ignores_half_written_checkpoints(fresh, tmp_path):
    pairs, validation = make_pairs(5), make_pairs(2, offset=50)
    whole = tmp_path / "whole"
    Trainer(fresh(), pairs, validation, settings(), whole, metric_fn=overlap_metric).run()

    parts = tmp_path / "parts"
    token = CancellationToken()
    stop_at_three = lambda event: token.cancel() if isinstance(event, StepEvent) and event.step == 3 else None
    cancelled = Trainer(
        fresh(), pairs, validation, settings(), parts, cancel=token, on_event=stop_at_three, metric_fn=overlap_metric
    ).run()
    assert cancelled.cancelled
    assert cancelled.steps == 3

    # A crash mid-write leaves a temporary folder, or a step folder without its marker.
    good = parts / "checkpoints" / "step-000003"
    shutil.copytree(good, parts / "checkpoints" / ".tmp-step-000004-deadbeef")
    unfinished = parts / "checkpoints" / "step-000005"
    shutil.copytree(good, unfinished)
    (unfinished / "COMPLETE").unlink()
    (unfinished / "model.safetensors").write_bytes(b"cut short")

    resumed = Trainer(fresh(), pairs, validation, settings(), parts, metric_fn=overlap_metric).run(resume=True)
    assert resumed.steps == 6
    assert step_losses(parts) == step_losses(whole)
    assert not (parts / "checkpoints" / ".tmp-step-000004-deadbeef").exists()
    steps = [row["step"] for row in map(json.loads, (parts / "metrics.jsonl").read_text().splitlines()) if "eval" not in row]
    assert steps == sorted(set(steps))


def test_cancel_before_first_step_saves_and_returns(fresh, tmp_path):
    token = CancellationToken()
    token.cancel()
    result = Trainer(fresh(), make_pairs(4), [], settings(), tmp_path, cancel=token).run()
    assert result.cancelled
    assert result.steps == 0
    assert (tmp_path / "checkpoints" / "step-000000" / "COMPLETE").is_file()
    assert result.last_dir == tmp_path / "last"


def test_new_run_refuses_existing_output(fresh, tmp_path):
    Trainer(fresh(), make_pairs(2), [], settings(epochs=1), tmp_path).run()
    with pytest.raises(SettingsError, match="already contains a training run"):
        Trainer(fresh(), make_pairs(2), [], settings(epochs=1), tmp_path).run()


def test_resume_with_other_pairs_is_rejected(fresh, tmp_path):
    Trainer(fresh(), make_pairs(2), [], settings(epochs=1), tmp_path).run()
    with pytest.raises(SettingsError, match="same training pairs"):
        Trainer(fresh(), make_pairs(3), [], settings(epochs=1), tmp_path).run(resume=True)


def test_early_stopping_after_patience(fresh, tmp_path):
    flat = lambda predictions, references: {"rougeLsum": 0.5}
    result = Trainer(
        fresh(), make_pairs(8), make_pairs(2, offset=50), settings(epochs=3, eval_every=1, patience=2),
        tmp_path, metric_fn=flat,
    ).run()
    assert result.stopped_early
    assert result.best_step == 1
    assert result.steps == 3
    assert (tmp_path / "best").is_dir()


def test_best_by_loss_keeps_lowest(fresh, tmp_path):
    events = []
    Trainer(
        fresh(), make_pairs(4), make_pairs(2, offset=50), settings(epochs=2, eval_every=1, best_metric="loss"),
        tmp_path, on_event=events.append, metric_fn=overlap_metric,
    ).run()
    losses = [(e.step, e.metrics["loss"]) for e in events if isinstance(e, EvaluationEvent)]
    best_step = min(losses, key=lambda item: item[1])[0]
    state = json.loads((tmp_path / "best" / "trainer_state.json").read_text())
    assert state["step"] == best_step


def test_non_finite_loss_skips_step(fresh, tmp_path, monkeypatch):
    real = trainer_module.cached_backward
    calls = {"count": 0}

    def nan_on_third(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 3:
            return torch.tensor(float("nan"))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "cached_backward", nan_on_third)
    loaded = fresh()
    result = Trainer(loaded, make_pairs(4), [], settings(epochs=1), tmp_path).run()
    assert result.steps == 2
    assert result.skipped_steps == 1
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["skipped"] is True
    assert rows[1]["loss"] is None
    assert rows[0]["skipped"] is False


# Every step is skipped, so the schedule advances without an optimizer step, as intended.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_repeated_non_finite_loss_stops(fresh, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "cached_backward", lambda *a, **k: torch.tensor(float("inf")))
    with pytest.raises(TrainingDivergedError, match="Lower the learning rate"):
        Trainer(fresh(), make_pairs(8), [], settings(accumulate=1, max_skipped_steps=3), tmp_path).run()


def test_out_of_memory_gives_advice(fresh, tmp_path, monkeypatch):
    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer_module, "cached_backward", exhausted)
    with pytest.raises(OutOfMemoryError, match="--chunk-windows 1") as caught:
        Trainer(fresh(), make_pairs(2), [], settings(chunk_windows=3), tmp_path).run()
    assert "pairs.jsonl line" in str(caught.value)


def test_summary_longer_than_decoder_is_rejected(fresh, tmp_path):
    loaded = fresh()
    loaded.model.config.max_position_embeddings = 8  # the decoder limit the check reads
    long_summary = Pair("notes.jsonl line 4", "Short document text.", " ".join(["word"] * 20))
    with pytest.raises(SettingsError, match="notes.jsonl line 4.*decoder has 8 positions"):
        Trainer(loaded, [long_summary], [], settings(window_tokens=None), tmp_path).run()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochs": 0}, "epochs"),
        ({"accumulate": 0}, "accumulate"),
        ({"chunk_windows": 0}, "chunk windows"),
        ({"max_steps": 0}, "max steps"),
        ({"learning_rate": 0.0}, "learning rate"),
        ({"warmup_fraction": 1.0}, "warmup fraction"),
        ({"weight_decay": -0.1}, "weight decay"),
        ({"max_grad_norm": 0.0}, "max grad norm"),
        ({"best_metric": "bleu"}, "best metric 'bleu'"),
        ({"precision": "fp8"}, "precision 'fp8'"),
        ({"patience": 0}, "patience"),
        ({"keep_last": 0}, "keep last"),
        ({"eval_generation": GenerationSettings(beams=0)}, "beams"),
    ],
)
def test_settings_validation(overrides, message):
    with pytest.raises(SettingsError, match=message):
        settings(**overrides).validate()


def test_settings_round_trip_json():
    original = settings(patience=3, best_metric="loss")
    assert TrainingSettings.from_json(json.loads(json.dumps(original.to_json()))) == original
    with pytest.raises(SettingsError, match="Unknown training settings: colour"):
        TrainingSettings.from_json({"colour": "red"})


def test_patience_needs_validation_pairs(fresh, tmp_path):
    with pytest.raises(SettingsError, match="validation pairs"):
        Trainer(fresh(), make_pairs(2), [], settings(patience=2), tmp_path)


def test_max_steps_caps_whole_run(fresh, tmp_path):
    result = Trainer(fresh(), make_pairs(6), [], settings(epochs=5, max_steps=4), tmp_path).run()
    assert result.steps == result.total_steps == 4


def test_cancel_during_evaluation_keeps_step(fresh, tmp_path):
    token = CancellationToken()

    def cancel_at_second_step(event):
        if isinstance(event, StepEvent) and event.step == 2:
            token.cancel()

    result = Trainer(
        fresh(), make_pairs(4), make_pairs(2, offset=10), settings(), tmp_path,
        cancel=token, on_event=cancel_at_second_step, metric_fn=overlap_metric,
    ).run()
    assert result.cancelled
    assert result.steps == 2
    assert (tmp_path / "checkpoints" / "step-000002" / "COMPLETE").is_file()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert not any("eval" in row for row in rows)

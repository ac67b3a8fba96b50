"""Corrupted or hand-edited files the app reads do not stop it.

For each file (history entries, the model list, run folders, checkpoints):
garbage, truncated JSON, wrong types and missing keys. The reader keeps
working with what is valid, moves the bad file aside as
``NAME.corrupt-<date>`` (never deleted) and reports it once. The settings
file and the main window are covered in test_gui_settings.py and at the end
of this file, followed by run.json and metrics.jsonl on ``train --resume``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from synopsis.engine.files import CORRUPT_INFIX
from synopsis.engine.history import HistoryStore, entry_from_summary
from synopsis.engine.models import load_model
from synopsis.engine.registry import ModelRegistry
from synopsis.engine.runs import RunRequest, list_runs, metrics_rows, save_request
from synopsis.engine.training import Trainer
from synopsis.engine.training import checkpoint as checkpoint_module
from tests.test_history import SETTINGS, _summary
from tests.test_trainer import make_pairs, settings, step_losses

pytestmark = pytest.mark.usefixtures("one_thread")


def set_aside_copies(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f"{name}{CORRUPT_INFIX}*"))


def valid_entry_json(tmp_path: Path) -> dict:
    entry = entry_from_summary(_summary(tmp_path / "a.pdf"), "11" * 32, "m", SETTINGS)
    return json.loads(json.dumps(entry.__dict__))


# History entries ----------------------------------------------------------------------


def history_damage(valid: dict) -> dict[str, bytes]:
    """Return bad entry files by name: garbage, truncated JSON, wrong types, missing keys."""
    def edited(**changes) -> bytes:
        return json.dumps({**valid, **changes}).encode()

    missing = {key: value for key, value in valid.items() if key not in ("summary", "created")}
    whole = json.dumps(valid).encode()
    return {
        "garbage.json": b"\x00\xff\xfe not json at all",
        "truncated.json": whole[: len(whole) // 2],
        "list.json": b"[1, 2, 3]",
        "created-number.json": edited(created=5),
        "created-not-date.json": edited(created="yesterday"),
        "windows-string.json": edited(windows="many"),
        "window-offsets.json": edited(windows=[{"index": "0"}]),
        "pages-text.json": edited(pages="five"),
        "tokens-text.json": edited(token_ids=["a"]),
        "missing-keys.json": json.dumps(missing).encode(),
    }


def test_history_sets_aside_bad_entries(tmp_path):
    store = HistoryStore(tmp_path / "history")
    good = entry_from_summary(_summary(tmp_path / "a.pdf"), "11" * 32, "m", SETTINGS)
    store.save(good)
    damage = history_damage(valid_entry_json(tmp_path))
    for name, content in damage.items():
        (store.folder / name).write_bytes(content)

    assert [entry.id for entry in store.entries()] == [good.id]
    assert store.find("11" * 32, "m", SETTINGS).id == good.id
    assert store.load(good.id).to_summary().text == good.summary

    problems = store.take_problems()
    assert len(problems) == len(damage)
    for name, content in damage.items():
        [kept] = set_aside_copies(store.folder, name)
        assert kept.read_bytes() == content
        assert not (store.folder / name).exists()
        assert any(str(kept) in problem for problem in problems), name

    # Reported once: the files are gone from the store's folder.
    assert [entry.id for entry in store.entries()] == [good.id]
    assert store.take_problems() == []


# The model list -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b'{"local": [{"path": "/m"', "Expecting"),
        (b'{"local": [{"path": "/m", "name": 7}]}', "'name' of an entry in 'local' is a int"),
        (b'{"fine_tuned": [{"path": "/m", "metrics": [1, 2]}]}', "'metrics' of an entry in 'fine_tuned' is a list"),
        (b'{"downloads": [{"repo_id": "a/b", "complete": "yes"}]}', "'complete' of an entry in 'downloads' is a str"),
        (b'{"local": [{"name": "no path"}]}', "has no path"),
        (b"[]", "not an object"),
    ],
)
def test_model_list_set_aside(tmp_path, tiny_model_dir, content, reason):
    registry = ModelRegistry(tmp_path / "data", hub_cache_dir=tmp_path / "hub")
    registry.data_dir.mkdir(parents=True)
    registry.list_file.write_bytes(content)

    assert registry.entries() == []

    assert reason in registry.load_warning
    [kept] = set_aside_copies(registry.data_dir, "models.json")
    assert kept.read_bytes() == content
    assert str(kept) in registry.load_warning
    registry.load_warning = None
    registry.add_folder(tiny_model_dir)
    assert [entry.path for entry in registry.entries()] == [tiny_model_dir.resolve()]
    assert registry.load_warning is None


# Run folders ----------------------------------------------------------------------------


def make_run_folder(runs: Path, name: str) -> Path:
    folder = runs / name
    folder.mkdir(parents=True)
    save_request(RunRequest(name=name, pairs="/pairs.jsonl", model="/model"), folder / "request.json")
    (folder / "status.json").write_text(json.dumps({"state": "stopped", "step": 2, "updated": "2026-01-01"}))
    (folder / "run.json").write_text(json.dumps({"total_steps": 8, "base_model": "/model"}))
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": 2.0}\n')
    return folder


def test_runs_list_survives_damaged_files(tmp_path):
    runs = tmp_path / "runs"
    healthy = make_run_folder(runs, "healthy")
    broken = make_run_folder(runs, "broken")
    (broken / "status.json").write_bytes(b"\x00garbage")
    (broken / "run.json").write_text('{"total_steps": 8, "base_m')
    (broken / "metrics.jsonl").write_bytes(b'{"step": 1, "loss": 2.5}\n7\n"text"\n\xff\xfe\n{"step": 2, "lo')
    typed = make_run_folder(runs, "typed")
    (typed / "status.json").write_text(json.dumps({"state": ["x"], "step": "two", "message": 5, "updated": 3}))
    (typed / "run.json").write_text(json.dumps({"total_steps": "eight", "base_model": 12}))
    request = json.loads((typed / "request.json").read_text())
    request["pairs"] = 5
    request["settings"]["epochs"] = "three"
    (typed / "request.json").write_text(json.dumps(request))
    hand_edited = make_run_folder(runs, "hand-edited")
    (hand_edited / "status.json").write_text(json.dumps({"state": "paused by hand"}))
    (hand_edited / "request.json").write_text(json.dumps({"name": "hand-edited"}))

    records = {record.name: record for record in list_runs(runs)}

    assert set(records) == {"healthy", "broken", "typed", "hand-edited"}
    assert records["healthy"].problems == ()
    assert records["healthy"].total_steps == 8
    assert records["healthy"].resumable

    assert len(records["broken"].problems) == 2
    for name in ("status.json", "run.json"):
        [kept] = set_aside_copies(broken, name)
        assert any(str(kept) in problem for problem in records["broken"].problems)
    assert records["broken"].state == "new"
    assert records["broken"].base_model == "/model"  # from request.json
    assert [row["step"] for row in metrics_rows(broken)] == [1]

    assert records["typed"].request is None
    assert "pairs" in records["typed"].request_problem
    assert "settings.epochs" in records["typed"].request_problem
    assert (records["typed"].total_steps, records["typed"].base_model, records["typed"].message) == (0, "", "")

    assert records["hand-edited"].state == "interrupted"
    assert "lack model, pairs" in records["hand-edited"].request_problem

    # Reported once: the set-aside files are not read again.
    assert all(record.problems == () for record in list_runs(runs))
    assert healthy.is_dir()


# Checkpoints --------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CHECKPOINT_DAMAGE = {
    "state-garbage": lambda folder: (folder / checkpoint_module.STATE_FILE).write_text("{garbage"),
    "state-missing-step": lambda folder: (folder / checkpoint_module.STATE_FILE).write_text('{"epoch": 0}'),
    "settings-list": lambda folder: (folder / checkpoint_module.SETTINGS_FILE).write_text("[]"),
    "weights-truncated": lambda folder: truncate(folder / "model.safetensors"),
    "optimizer-truncated": lambda folder: truncate(folder / "optimizer.pt"),
}


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    """A four-step run with checkpoints at steps 3 and 4, and its step losses."""
    output = tmp_path_factory.mktemp("finished") / "run"
    run_settings = settings(epochs=1, accumulate=1, eval_every=1, keep_last=2)
    Trainer(load_model(tiny_model_dir, device="cpu"), make_pairs(4), [], run_settings, output).run()
    return output, run_settings, step_losses(output)


@pytest.mark.parametrize("damage", sorted(CHECKPOINT_DAMAGE))
def test_damaged_newest_checkpoint_set_aside(tiny_model_dir, tmp_path, finished_run, damage):
    source, run_settings, whole_losses = finished_run
    output = tmp_path / "run"
    shutil.copytree(source, output)
    checkpoints = output / "checkpoints"
    CHECKPOINT_DAMAGE[damage](checkpoints / "step-000004")

    problems: list[str] = []
    assert [step for step, _ in checkpoint_module.complete_checkpoints(checkpoints, problems)] == [3]

    [kept] = set_aside_copies(checkpoints, "step-000004")
    assert kept.is_dir()
    [problem] = problems
    assert str(kept) in problem
    assert "step-000004" in problem

    # Resuming continues from step 3 and ends where the undamaged run ended.
    result = Trainer(load_model(tiny_model_dir, device="cpu"), make_pairs(4), [], run_settings, output).run(
        resume=True
    )
    assert result.steps == 4
    assert step_losses(output) == whole_losses
    assert [step for step, _ in checkpoint_module.complete_checkpoints(checkpoints)] == [3, 4]


def test_cli_resume_skips_damaged_checkpoint(tiny_model_dir, tmp_path, capsys):
    from synopsis.engine.cli import main
    from tests.test_cli_train import TOPICS, _pair, _train_args, _write_pairs

    pairs = _write_pairs(tmp_path / "pairs.jsonl", [_pair(subject, event) for subject, event in TOPICS])
    output = tmp_path / "run"
    arguments = [str(part) for part in _train_args(pairs, tiny_model_dir, output, "--max-steps", "2", "-q")]
    assert main(arguments) == 0
    checkpoints = output / "checkpoints"
    newest = checkpoint_module.complete_checkpoints(checkpoints)[-1][1]
    (newest / checkpoint_module.STATE_FILE).write_text("not json", encoding="utf-8")
    capsys.readouterr()

    code = main([*arguments, "--resume"])

    err = capsys.readouterr().err
    assert code == 0, err
    [kept] = set_aside_copies(checkpoints, newest.name)
    assert str(kept) in err
    assert newest.name in [folder.name for _, folder in checkpoint_module.complete_checkpoints(checkpoints)]


# The main window ----------------------------------------------------------------------------


def test_window_starts_with_corrupt_state(qtbot, tmp_path):
    from synopsis.app.window import MainWindow, problems_pointer

    settings_path = tmp_path / "config" / "settings.json"
    settings_path.parent.mkdir()
    settings_path.write_bytes(b'{"model": "/m", "beams": ')
    store = HistoryStore(tmp_path / "history")
    good = entry_from_summary(_summary(tmp_path / "a.pdf"), "11" * 32, "m", SETTINGS)
    store.save(good)
    (store.folder / "truncated.json").write_text(json.dumps(valid_entry_json(tmp_path))[:50], encoding="utf-8")
    (store.folder / "typed.json").write_text(json.dumps({**valid_entry_json(tmp_path), "created": 1}), encoding="utf-8")

    window = MainWindow(settings_path, store)
    qtbot.addWidget(window)
    window.show()

    [settings_kept] = set_aside_copies(settings_path.parent, "settings.json")
    history_kept = set_aside_copies(store.folder, "truncated.json") + set_aside_copies(store.folder, "typed.json")
    assert len(history_kept) == 2
    assert len(window.startup_problems) == 3
    assert window.statusBar().currentMessage() == problems_pointer(3)
    qtbot.waitUntil(lambda: window.problems_dialog is not None and window.problems_dialog.isVisible())
    for kept in (settings_kept, *history_kept):
        assert str(kept) in window.problems_dialog.details
    assert [entry.id for entry in window.history_panel.entries] == [good.id]
    window.close()
    qtbot.waitUntil(lambda: not window.runner.thread_running(), timeout=10_000)

    # The next start has nothing to report, and the settings saved on close are valid.
    again = MainWindow(settings_path, HistoryStore(tmp_path / "history"))
    qtbot.addWidget(again)
    assert again.startup_problems == []
    assert again.statusBar().currentMessage() == ""
    again.show()
    qtbot.wait(50)
    assert again.problems_dialog is None
    again.close()
    qtbot.waitUntil(lambda: not again.runner.thread_running(), timeout=10_000)


def test_checkpoint_missing_file_skipped_not_moved(tmp_path, finished_run):
    # A folder losing files may be one a trainer is pruning, so it is skipped but left in place.
    source, _run_settings, _losses = finished_run
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(source / "checkpoints", checkpoints)
    (checkpoints / "step-000004" / checkpoint_module.STATE_FILE).unlink()

    problems: list[str] = []
    assert [step for step, _ in checkpoint_module.complete_checkpoints(checkpoints, problems)] == [3]
    assert problems == []
    assert (checkpoints / "step-000004").is_dir()
    assert set_aside_copies(checkpoints, "step-000004") == []


# Resuming from the command line with damaged run files ----------------------------------


@pytest.fixture(scope="module")
def two_step_cli_run(tiny_model_dir, tmp_path_factory):
    """The pairs file and output folder of a two-step ``synopsis train`` run."""
    from synopsis.engine.cli import main
    from tests.test_cli_train import TOPICS, _pair, _write_pairs

    root = tmp_path_factory.mktemp("cli-run")
    pairs = _write_pairs(root / "pairs.jsonl", [_pair(subject, event) for subject, event in TOPICS])
    output = root / "run"
    assert main(cli_train_arguments(pairs, tiny_model_dir, output, "--max-steps", "2")) == 0
    return pairs, output


def cli_train_arguments(pairs: Path, model: Path, output: Path, *extra: str) -> list[str]:
    from tests.test_cli_train import _train_args

    return [str(part) for part in _train_args(pairs, model, output, "-q", *extra)]


def copy_run(source: Path, tmp_path: Path) -> Path:
    output = tmp_path / "run"
    shutil.copytree(source, output)
    return output


def test_resume_keeps_unreadable_metrics_lines(tiny_model_dir, tmp_path, capsys, two_step_cli_run):
    from synopsis.engine.cli import main

    pairs, source = two_step_cli_run
    output = copy_run(source, tmp_path)
    metrics = output / "metrics.jsonl"
    lines = metrics.read_bytes().splitlines(keepends=True)
    damaged = lines[0] + b'{"step": 1, "lo\n' + b"\xff\xfe\n" + b"".join(lines[1:])
    metrics.write_bytes(damaged)
    capsys.readouterr()

    code = main(cli_train_arguments(pairs, tiny_model_dir, output, "--max-steps", "3", "--resume"))

    err = capsys.readouterr().err
    assert code == 0, err
    [kept] = set_aside_copies(output, "metrics.jsonl")
    assert kept.read_bytes() == damaged
    notices = [line for line in err.splitlines() if "metrics.jsonl" in line]
    assert len(notices) == 1
    assert "lines 2, 3" in notices[0]
    assert str(kept) in notices[0]
    steps = [row["step"] for row in metrics_rows(output) if "eval" not in row]
    assert steps == [1, 2, 3]


def test_metrics_repair_logged_and_copied(tmp_path, caplog):
    from synopsis.engine.training.events import MetricsLog

    path = tmp_path / "metrics.jsonl"
    damaged = b'{"step": 1, "loss": 2.5}\n7\n{"step": "two"}\n{"step": 2, "loss": 2.0}\n{"step": 3, "lo'
    path.write_bytes(damaged)
    log = MetricsLog(path)

    with caplog.at_level("WARNING", logger="synopsis.engine.training.events"):
        notice = log.truncate_after(2)

    [kept] = set_aside_copies(tmp_path, "metrics.jsonl")
    assert kept.read_bytes() == damaged
    assert path.read_bytes() == b'{"step": 1, "loss": 2.5}\n{"step": 2, "loss": 2.0}\n'
    assert "lines 2, 3, 5" in notice
    assert str(kept) in notice
    assert str(kept) in caplog.text
    assert log.truncate_after(2) is None
    assert set_aside_copies(tmp_path, "metrics.jsonl") == [kept]


def test_resume_with_damaged_run_file(tiny_model_dir, tmp_path, capsys, two_step_cli_run):
    from synopsis.engine.cli import main

    pairs, source = two_step_cli_run
    output = copy_run(source, tmp_path)
    (output / "run.json").write_text('{"base_model": "tiny", "sett', encoding="utf-8")
    newest = checkpoint_module.complete_checkpoints(output / "checkpoints")[-1][1]
    _state, saved = checkpoint_module.read_state(newest)
    capsys.readouterr()

    code = main(cli_train_arguments(pairs, tiny_model_dir, output, "--max-steps", "3", "--resume"))

    err = capsys.readouterr().err
    assert code == 0, err
    [kept] = set_aside_copies(output, "run.json")
    assert kept.read_text(encoding="utf-8") == '{"base_model": "tiny", "sett'
    assert str(kept) in err
    assert f"settings saved in checkpoint {newest.name}" in err
    rewritten = json.loads((output / "run.json").read_text(encoding="utf-8"))
    assert rewritten["settings"] == {**saved, "max_steps": 3}
    assert [row["step"] for row in metrics_rows(output) if "eval" not in row] == [1, 2, 3]


def test_resume_without_usable_settings(tiny_model_dir, tmp_path, capsys, two_step_cli_run):
    from synopsis.engine.cli import EXIT_DOCUMENT, main

    pairs, source = two_step_cli_run
    output = copy_run(source, tmp_path)
    (output / "run.json").write_text("[]", encoding="utf-8")
    for _step, folder in checkpoint_module.complete_checkpoints(output / "checkpoints"):
        settings_file = folder / checkpoint_module.SETTINGS_FILE
        saved = json.loads(settings_file.read_text(encoding="utf-8"))
        settings_file.write_text(json.dumps({**saved, "learning_rate": "fast"}), encoding="utf-8")
    capsys.readouterr()

    code = main(cli_train_arguments(pairs, tiny_model_dir, output, "--resume"))

    err = capsys.readouterr().err
    assert code == EXIT_DOCUMENT
    assert not (output / "run.json").exists()
    [kept] = set_aside_copies(output, "run.json")
    assert str(kept) in err
    assert "learning_rate" in err
    assert "does not contain a JSON object" in err
    assert f"repair {kept}, rename it to run.json and resume again" in err
    assert "start a new run in an empty folder with the same options" in err

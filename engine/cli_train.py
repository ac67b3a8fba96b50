"""The ``train`` and ``evaluate`` subcommands of ``synopsis``.

``train`` loads the pairs, runs the pre-flight check (which prints pair,
token and window counts and the memory and time estimates), then fine-tunes
with the gradient-cached trainer. The first Ctrl-C cancels: the trainer stops
after the current document and saves a checkpoint. A second Ctrl-C stops at
once.
``evaluate`` summarizes every pair's document and prints ROUGE scores.

``train --nproc N`` starts N worker processes through PyTorch's elastic
launcher, and each runs ``train`` again as one rank of a DistributedDataParallel
group. A worker started by a user's own ``torchrun`` is recognized by its
``WORLD_SIZE`` and ``RANK`` variables and trains the same way.

Exit codes are those of ``summarize``: 0 success, 2 usage error, 3 document
or data error, 4 model error, 130 cancelled. ``train --nproc N`` adds 143
(128 + SIGTERM) when the launcher is sent SIGTERM and stops its workers.

This module imports ``cli`` inside functions only, because ``cli`` imports
this module while it is itself loading.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

from .documents import DocumentLimits
from .documents.limits import check_input_tokens
from .counts import count
from .errors import DocumentError, SettingsError, SynopsisError
from .evaluation import ROUGE_KEYS, EvaluationReport, evaluate_pairs
from .generation import GenerationSettings
from .models import LoadedModel
from .pairs import DEFAULT_DOCUMENT_FIELD, DEFAULT_SUMMARY_FIELD, LoadedPairs, Pair, RejectedPair, load_pairs, split_pairs
from .preflight import format_report, preflight, usable_pairs
from .progress import CancellationToken, ProgressFn
from .runs import saved_training_settings
from .training import EvaluationEvent, StepEvent, Trainer, TrainingDivergedError, TrainingEvent, TrainingResult, checkpoint
from .training import distributed
from .training.plan import read_resume_point, resumed_total_steps, world_size_warning
from .training.events import MetricsLog
from .training.settings import PRECISIONS, ROUGE_METRICS, TrainingSettings

log = logging.getLogger(__name__)

MAX_LISTED_REJECTIONS = 50  # rejected pairs printed one per line before the rest are counted
EXIT_TERMINATED = 128 + signal.SIGTERM  # the launcher of train --nproc was sent SIGTERM


class BadPairsError(DocumentError):
    """Some pairs cannot be used and the user did not ask to skip them."""


# Progress -------------------------------------------------------------------


class Bars:
    """tqdm bars on stderr, one per stage, with an optional postfix such as the latest loss."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None

    def stage(self, label: str, unit: str) -> ProgressFn:
        """Return a progress callback that draws a new bar named ``label`` when first called."""
        started = False

        def report(done: int, total: int, _unit: str) -> None:
            nonlocal started
            if not self.enabled:
                return
            if not started:
                self.close()
                from tqdm import tqdm

                # A resumed run starts part-way, so the rate and ETA count only new steps.
                self.bar = tqdm(
                    total=total, initial=max(done - 1, 0), desc=label, unit=f" {unit}", file=self.stream,
                    leave=False, dynamic_ncols=True,
                )
                started = True
            self.bar.total = total
            self.bar.update(done - self.bar.n)

        return report

    def postfix(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)

    def write(self, line: str, stream: TextIO | None = None) -> None:
        """Print ``line`` above the bar without breaking it."""
        stream = stream if stream is not None else sys.stdout
        if self.bar is not None:
            self.bar.write(line, file=stream)
        else:
            print(line, file=stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CtrlC:
    """Turns the first Ctrl-C into a cancel request and lets the second one interrupt at once."""

    def __init__(self, token: CancellationToken, message: str) -> None:
        self.token = token
        self.message = message
        self.previous = None

    def __enter__(self) -> "CtrlC":
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:
            # Not the main thread (an embedding program): Ctrl-C keeps its usual effect.
            self.previous = None
        return self

    def _handle(self, signum, frame) -> None:
        self.token.cancel()
        print(f"\nsynopsis: {self.message} (press Ctrl-C again to stop at once)", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc_info) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# Shared steps -----------------------------------------------------------------


def _document_limits(args: argparse.Namespace) -> DocumentLimits:
    from .cli import _limits  # noqa: PLC0415 - cli is loaded by now, see the module docstring

    return _limits(args)


def _load_pair_file(path: Path, args: argparse.Namespace, bars: Bars, label: str) -> LoadedPairs:
    return load_pairs(
        path,
        document_field=args.document_field,
        summary_field=args.summary_field,
        password=args.password,
        limits=_document_limits(args),
        progress=bars.stage(label, "pairs"),
    )


def _print_rejected(rejected: list[RejectedPair], heading: str) -> None:
    print(f"synopsis: {heading}:", file=sys.stderr)
    for item in rejected[:MAX_LISTED_REJECTIONS]:
        print(f"  {item}", file=sys.stderr)
    if len(rejected) > MAX_LISTED_REJECTIONS:
        print(f"  ... and {len(rejected) - MAX_LISTED_REJECTIONS} more (all are in the log file)", file=sys.stderr)


def _check_rejected(rejected: list[RejectedPair], skip: bool, origin: str) -> None:
    """Stop with a data error listing ``rejected``, unless ``skip`` allows training without them."""
    if not rejected:
        return
    pairs = count(len(rejected), "pair")
    if skip:
        _print_rejected(rejected, f"skipping {pairs} that cannot be used")
        return
    _print_rejected(rejected, f"{pairs} cannot be used")
    raise BadPairsError(
        origin,
        f"{pairs} cannot be used (listed above): fix them, or pass --skip-bad-pairs to go on without them.",
    )


def _generation_settings(args: argparse.Namespace, max_tokens: int | None, beams: int | None) -> GenerationSettings:
    return GenerationSettings(max_tokens=max_tokens, beams=beams, window_tokens=args.window_tokens)


# train ------------------------------------------------------------------------


def _given_options(args: argparse.Namespace) -> dict:
    """Return the TrainingSettings fields set by options, None where the option was not given."""
    return {
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "learning_rate": args.lr,
        "accumulate": args.accumulate,
        "chunk_windows": args.chunk_windows,
        "eval_every": args.eval_every,
        "patience": args.patience,
        "best_metric": args.best_metric,
        "seed": args.seed,
        "precision": args.precision,
        "window_tokens": args.window_tokens,
        "max_eval_pairs": args.max_eval_pairs,
    }


def training_settings(args: argparse.Namespace) -> TrainingSettings:
    """Build TrainingSettings from the options given; the others keep their defaults."""
    values = {name: value for name, value in _given_options(args).items() if value is not None}
    values["eval_generation"] = _generation_settings(args, args.eval_max_tokens, args.eval_beams)
    settings = TrainingSettings(**values)
    settings.validate()
    return settings


def _training_pairs(
    args: argparse.Namespace, bars: Bars, seed: int
) -> tuple[list[Pair], list[Pair], list[RejectedPair]]:
    """Load the training pairs and the validation pairs (a separate file or a seeded split)."""
    loaded = _load_pair_file(args.pairs, args, bars, "Reading pairs")
    rejected = list(loaded.rejected)
    if args.validation is not None:
        validation = _load_pair_file(args.validation, args, bars, "Reading validation pairs")
        rejected += validation.rejected
        return loaded.pairs, validation.pairs, rejected
    if args.val_fraction is not None:
        train, held_out = split_pairs(loaded.pairs, args.val_fraction, seed)
        return train, held_out, rejected
    return loaded.pairs, [], rejected


# Settings a resumed run may change; the others define the optimization and stay as saved.
RESUMABLE_CHANGES = ("epochs", "max_steps", "eval_every", "patience", "best_metric", "max_eval_pairs", "keep_last")


def resumed_settings(args: argparse.Namespace, given: TrainingSettings) -> TrainingSettings:
    """Return the saved run's settings with the options a resume may change applied.

    Raises SettingsError when there is nothing to resume, or when an option
    that shapes the optimization (learning rate, accumulation, seed, ...) was
    given with another value than the run used. A damaged run.json or
    metrics.jsonl is repaired as described in saved_training_settings and
    MetricsLog.remove_unreadable_lines, with a warning line for each.
    """
    problems: list[str] = []
    complete = checkpoint.complete_checkpoints(args.output / "checkpoints", problems)
    for problem in problems:
        print(f"synopsis: warning: {problem}", file=sys.stderr)
    if not complete:
        raise SettingsError(
            f"Nothing to resume in {args.output}: it has no complete checkpoint. "
            "Start a new run there without --resume."
        )
    # Only the first process repairs files, so ranks of a distributed run do not race to move them.
    # Workers that --nproc started get ``args`` from the launcher, which has repaired and reported already.
    repairs = os.environ.get("RANK", "0") == "0" and not getattr(args, "run_files_checked", False)
    found = saved_training_settings(args.output, complete[-1][1], set_aside_damaged=repairs)
    saved = found.settings
    if repairs:
        notices = [found.notice, MetricsLog(args.output / "metrics.jsonl").remove_unreadable_lines()]
        for notice in filter(None, notices):
            print(f"synopsis: warning: {notice}", file=sys.stderr)
        args.run_files_checked = True

    explicit = {name for name, value in _given_options(args).items() if value is not None}
    conflicts = [
        f"{name} (the run used {getattr(saved, name)}, given {getattr(given, name)})"
        for name in sorted(explicit - set(RESUMABLE_CHANGES))
        if getattr(saved, name) != getattr(given, name)
    ]
    if conflicts:
        raise SettingsError(
            "A resumed run keeps the settings it started with, but these were given with other values: "
            + "; ".join(conflicts) + ". Leave them out, or start a new run."
        )
    changes = {name: getattr(given, name) for name in explicit & set(RESUMABLE_CHANGES)}
    if args.eval_max_tokens is not None or args.eval_beams is not None:
        changes["eval_generation"] = given.eval_generation
    settings = dataclasses.replace(saved, **changes)
    settings.validate()
    return settings


def command_train(args: argparse.Namespace) -> int:
    from . import cli

    settings = training_settings(args)
    _check_output_folder(args.output, args.resume)
    if args.resume:
        settings = resumed_settings(args, settings)
    if args.nproc > 1 and not args.dry_run and not distributed.launched_by_torchrun():
        return _launch_workers(args, cli)
    if distributed.launched_by_torchrun() and not args.dry_run:
        return _train_as_rank(args, settings, cli)
    return _train(args, settings, cli, None)


def _train(args: argparse.Namespace, settings: TrainingSettings, cli, group: distributed.Distributed | None) -> int:
    """Load the pairs and the model, run the pre-flight check and train; ``group`` is this rank's DDP group, if any."""
    bars = Bars(enabled=not args.quiet)
    try:
        # The run's own seed, so a resumed run splits the pairs as it did at the start.
        train, validation, rejected = _training_pairs(args, bars, settings.seed)
    finally:
        bars.close()
    # Pairs that failed to load are reported before the model loads, which takes far longer.
    _check_rejected(rejected, args.skip_bad_pairs, str(args.pairs))
    if settings.patience is not None and not validation:
        raise SettingsError("--patience needs validation pairs: pass --validation or --val-fraction.")

    loaded = cli._load_model_for(args)
    world_size = _world_size(args, group)
    train, validation = _run_preflight(args, loaded, settings, train, validation, bars, world_size)
    if args.dry_run:
        return cli.EXIT_OK
    if group is not None and group.is_main:
        per_step = settings.accumulate * group.world_size
        print(
            f"Processes:   {group.world_size}, {count(settings.accumulate, 'document')} each, "
            f"{per_step} per optimizer step"
        )
    if args.resume and (group is None or group.is_main):
        _print_resume_point(args.output, settings, len(train), world_size)
    sys.stdout.flush()

    token = CancellationToken()
    reporter = _TrainingReporter(bars)
    trainer = Trainer(
        loaded,
        train,
        validation,
        settings,
        args.output,
        progress=bars.stage("Training", "steps"),
        cancel=token,
        on_event=reporter,
        distributed=group,
    )
    try:
        with CtrlC(token, "stopping after the current document and saving a checkpoint"):
            result = trainer.run(resume=args.resume)
    except TrainingDivergedError as error:
        bars.close()
        cli._print_error(None, error)
        return cli.EXIT_MODEL
    finally:
        bars.close()
    return _report_result(result, cli, world_size)


def _world_size(args: argparse.Namespace, group: distributed.Distributed | None) -> int:
    """Return the processes the run trains in: the group's, a launcher's ``WORLD_SIZE`` (dry run), else ``--nproc``."""
    if group is not None:
        return group.world_size
    if distributed.launched_by_torchrun():
        return int(os.environ["WORLD_SIZE"])
    return args.nproc


def _print_resume_point(output: Path, settings: TrainingSettings, train_pairs: int, world_size: int) -> None:
    """Print the step a resume continues from, and warn on stderr when the world size differs from the saved run's."""
    point = read_resume_point(output)
    if point is None:
        return
    total = resumed_total_steps(train_pairs, settings, world_size, point.step, point.epoch, point.position)
    print(f"Resuming:    from step {point.step} of {total} ({point.folder})")
    warning = world_size_warning(point, world_size, settings.accumulate, total)
    if warning is not None:
        print(f"synopsis: warning: {warning}", file=sys.stderr)


def _launch_workers(args: argparse.Namespace, cli) -> int:
    """Train in ``args.nproc`` processes started by PyTorch's elastic launcher; return rank 0's exit code.

    A terminal's Ctrl-C reaches every worker, since they share its process
    group, and each stops after the current document. This process ignores
    the first Ctrl-C and lets a second one stop the launcher and its workers.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    presses = {"count": 0}

    def on_ctrl_c(signum, frame) -> None:
        presses["count"] += 1
        if presses["count"] > 1:
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_ctrl_c)
    except ValueError:  # not the main thread: Ctrl-C keeps its usual effect
        previous = None
    try:
        codes = distributed.launch(args.nproc, _worker_main, args)
    except ChildFailedError as error:
        log.error("a training worker failed: %s", error)
        print(
            "synopsis: error: a training worker failed (details below). Fix the cause and run the command "
            f"again, with --resume if a checkpoint was saved.\n{error}",
            file=sys.stderr,
        )
        return cli.EXIT_MODEL
    except SignalException as error:
        # The elastic agent turns SIGTERM (and SIGHUP, SIGQUIT) into this
        # exception after it has stopped the workers with the same signal.
        log.warning("training workers stopped by signal %s", error.sigval)
        print(
            f"synopsis: training stopped by {signal.Signals(error.sigval).name}: the workers stopped at once, "
            f"and the newest complete checkpoint in {args.output / 'checkpoints'} is kept. "
            f"Continue with: synopsis train ... --output {args.output} --resume --nproc {args.nproc}",
            file=sys.stderr,
        )
        return 128 + int(error.sigval)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    # Rank 0's code, unless it succeeded and another rank failed.
    return next((code for _, code in sorted(codes.items()) if code), cli.EXIT_OK)


def _worker_main(args: argparse.Namespace) -> int:
    """Run ``train`` in a worker process that the elastic launcher started; return its exit code.

    Every rank prints its own error, since a failure may hit one rank only.
    Ranks other than 0 name themselves in the message.
    """
    from . import cli
    from .logs import configure_logging

    configure_logging(logging.INFO if args.verbose else None)
    cli._quiet_libraries()
    try:
        return command_train(args)
    except SynopsisError as error:
        rank = int(os.environ.get("RANK", "0"))
        log.error("rank %d: %s", rank, error)
        if rank == 0:
            cli._print_error(None, error)
        else:
            print(f"synopsis: error (rank {rank}): {error}", file=sys.stderr)
        return cli.exit_code_for(error)


def _train_as_rank(args: argparse.Namespace, settings: TrainingSettings, cli) -> int:
    """Join the launcher's process group and train as one rank.

    Only rank 0 prints reports. The other ranks' errors still reach stderr,
    because they propagate out of the redirection before they are printed.
    """
    device = distributed.worker_device(args.device)
    args.device = str(device)
    group = distributed.from_environment(device)
    try:
        if group.is_main:
            return _train(args, settings, cli, group)
        args.quiet = True
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return _train(args, settings, cli, group)
    finally:
        distributed.shut_down()


def _run_preflight(
    args: argparse.Namespace,
    loaded: LoadedModel,
    settings: TrainingSettings,
    train: list[Pair],
    validation: list[Pair],
    bars: Bars,
    world_size: int,
) -> tuple[list[Pair], list[Pair]]:
    """Print the pre-flight report and return the pairs to train and validate on; raise if bad pairs must stop the run."""
    try:
        report = preflight(
            loaded,
            train,
            validation,
            settings,
            progress=bars.stage("Checking pairs", "pairs"),
            max_input_tokens=_document_limits(args).max_input_tokens,
            world_size=world_size,
        )
    finally:
        bars.close()
    for line in format_report(report):
        print(line)
    if not validation:
        print(
            "Note:        no validation pairs, so no evaluation runs and best/ is not written; "
            "pass --validation or --val-fraction."
        )
    sys.stdout.flush()

    _check_rejected(report.rejected, args.skip_bad_pairs, str(args.pairs))
    train, validation = usable_pairs(report, train, validation)
    if not train:
        raise BadPairsError(args.pairs, "no training pairs are left to train on.")
    return train, validation


def _check_output_folder(output: Path, resume: bool) -> None:
    """Raise before any slow work when a new run would start in a folder that contains one.

    The trainer makes the same check, but only after the model has loaded.
    """
    if output.exists() and not output.is_dir():
        raise SettingsError(f"--output {output} is a file: give a folder for the run.")
    if resume or not output.is_dir():
        return
    checkpoints = output / "checkpoints"
    if (output / "metrics.jsonl").exists() or (checkpoints.is_dir() and any(checkpoints.iterdir())):
        raise SettingsError(
            f"{output} already contains a training run: continue it with --resume, or choose an empty folder."
        )


class _TrainingReporter:
    """Shows the latest loss on the bar and prints a line per evaluation."""

    def __init__(self, bars: Bars) -> None:
        self.bars = bars

    def __call__(self, event: TrainingEvent) -> None:
        if isinstance(event, StepEvent):
            loss = "skipped" if event.skipped else f"{event.loss:.4f}"
            self.bars.postfix(f"loss {loss}, lr {event.learning_rate:.2e}")
        elif isinstance(event, EvaluationEvent):
            metrics = ", ".join(f"{name} {value:.4f}" for name, value in event.metrics.items())
            best = " (best so far)" if event.is_best else ""
            self.bars.write(f"Step {event.step}: {metrics}{best}")


def _report_result(result: TrainingResult, cli, world_size: int = 1) -> int:
    if result.cancelled:
        # Name the process count too: resuming with another one changes the plan.
        processes = f" --nproc {world_size}" if world_size > 1 else ""
        print(
            f"Cancelled after step {result.steps} of {result.total_steps}; the checkpoint is saved. "
            f"Continue with: synopsis train ... --output {result.output_dir} --resume{processes}",
            file=sys.stderr,
        )
        return cli.EXIT_CANCELLED
    ending = "stopped early (no improvement)" if result.stopped_early else "finished"
    print(f"Training {ending} after {result.steps} of {count(result.total_steps, 'step')}.")
    if result.skipped_steps:
        print(f"Skipped steps: {result.skipped_steps} (loss or gradient not finite)")
    if result.best_dir is not None:
        print(f"Best model:  {result.best_dir} (step {result.best_step}, {result.best_value:.4f})")
    if result.last_dir is not None:
        print(f"Last model:  {result.last_dir}")
    print(f"Metrics:     {result.output_dir / 'metrics.jsonl'}")
    return cli.EXIT_OK


# evaluate ---------------------------------------------------------------------


def command_evaluate(args: argparse.Namespace) -> int:
    from . import cli

    settings = _generation_settings(args, args.max_tokens, args.beams)
    settings.validate()
    bars = Bars(enabled=not args.quiet)
    try:
        loaded_pairs = _load_pair_file(args.pairs, args, bars, "Reading pairs")
    finally:
        bars.close()
    _check_rejected(loaded_pairs.rejected, args.skip_bad_pairs, str(args.pairs))
    if not loaded_pairs.pairs:
        raise BadPairsError(args.pairs, "no pairs to evaluate.")

    loaded = cli._load_model_for(args)
    limits = _document_limits(args)
    for pair in loaded_pairs.pairs:
        # The special tokens of each window are left out, so this may undercount slightly.
        tokens = len(loaded.tokenizer(pair.document, add_special_tokens=False)["input_ids"])
        check_input_tokens(Path(pair.source), tokens, limits)
    token = CancellationToken()
    try:
        with CtrlC(token, "stopping"):
            report = evaluate_pairs(
                loaded, loaded_pairs.pairs, settings, progress=bars.stage("Evaluating", "pairs"), cancel=token
            )
    finally:
        bars.close()
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        print(format_evaluation(report))
    return cli.EXIT_OK


def format_evaluation(report: EvaluationReport) -> str:
    """Return the mean ROUGE F1 scores as a small table, in percent."""
    labels = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
    lines = [f"Model:       {report.model}", f"Pairs:       {len(report.pairs)} in {report.seconds:.1f} s"]
    lines += [f"{labels[key] + ':':<12} {100 * report.mean[key]:.2f}" for key in ROUGE_KEYS]
    return "\n".join(lines)


# Arguments --------------------------------------------------------------------


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {number}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {number}")
    return number


def _add_pair_options(parser: argparse.ArgumentParser) -> None:
    from .cli import _add_limit_options  # noqa: PLC0415 - cli is loaded by now, see the module docstring

    parser.add_argument(
        "--document-field",
        default=DEFAULT_DOCUMENT_FIELD,
        metavar="NAME",
        help=f"CSV column or JSON key of the document text or file path (default: {DEFAULT_DOCUMENT_FIELD})",
    )
    parser.add_argument(
        "--summary-field",
        default=DEFAULT_SUMMARY_FIELD,
        metavar="NAME",
        help=f"CSV column or JSON key of the reference summary (default: {DEFAULT_SUMMARY_FIELD})",
    )
    parser.add_argument(
        "--skip-bad-pairs",
        action="store_true",
        help="leave out pairs that cannot be used, listing them (default: stop and list them)",
    )
    _add_limit_options(parser)


def add_training_commands(commands: argparse._SubParsersAction, model_options: argparse.ArgumentParser) -> None:
    """Add the ``train`` and ``evaluate`` subcommands to ``commands``."""
    from .cli import _non_negative, _positive  # noqa: PLC0415 - cli is loaded by now, see the module docstring
    from .models import DEFAULT_MODEL

    defaults = TrainingSettings()
    pairs_help = (
        "a folder of documents with summaries beside them (report.pdf + report.summary.txt, or documents/ "
        "and summaries/ subfolders), a .csv/.tsv file or a .jsonl file"
    )
    train = commands.add_parser(
        "train",
        parents=[model_options],
        help="fine-tune a model on your document/summary pairs",
        description=(
            "Fine-tune an encoder-decoder on whole documents with gradient caching. A pre-flight check "
            "runs first and prints token counts and memory and time estimates. The output folder "
            "receives metrics.jsonl, checkpoints/, last/ and best/ (best/ needs validation pairs)."
        ),
    )
    train.add_argument("--pairs", type=Path, required=True, metavar="PATH", help=f"training pairs: {pairs_help}")
    validation = train.add_mutually_exclusive_group()
    validation.add_argument("--validation", type=Path, metavar="PATH", help="validation pairs, in any pairs format")
    validation.add_argument(
        "--val-fraction",
        type=_fraction,
        metavar="F",
        help="hold out this fraction of --pairs for validation, chosen by --seed",
    )
    train.add_argument(
        "--model", metavar="M", default=DEFAULT_MODEL, help=f"model folder or hub id to start from (default: {DEFAULT_MODEL})"
    )
    train.add_argument("--output", "-o", type=Path, required=True, metavar="DIR", help="run folder")
    train.add_argument("--epochs", type=_positive, metavar="N", help=f"passes over the training pairs (default: {defaults.epochs})")
    train.add_argument(
        "--max-steps",
        type=_positive,
        metavar="N",
        help="stop after N optimizer steps in total, counting the steps before a --resume",
    )
    train.add_argument("--lr", type=_positive_float, metavar="X", help=f"peak learning rate (default: {defaults.learning_rate:g})")
    train.add_argument(
        "--accumulate",
        type=_positive,
        metavar="N",
        help=(
            f"documents per optimizer step and process, so N times --nproc per step in all "
            f"(default: {defaults.accumulate})"
        ),
    )
    train.add_argument(
        "--nproc",
        type=_positive,
        default=1,
        metavar="N",
        help=(
            "train in N processes with DistributedDataParallel, one per GPU (or N shares of the CPU cores), "
            "started by PyTorch's elastic launcher; see docs/scaling.md (default: 1)"
        ),
    )
    train.add_argument(
        "--chunk-windows",
        type=_positive,
        metavar="N",
        help=f"windows re-encoded with gradients at once; more is faster and uses more memory (default: {defaults.chunk_windows})",
    )
    train.add_argument(
        "--eval-every", type=_positive, metavar="N", help=f"optimizer steps between evaluations and checkpoints (default: {defaults.eval_every})"
    )
    train.add_argument(
        "--patience", type=_positive, metavar="N", help="stop after N evaluations without improvement (default: never)"
    )
    train.add_argument(
        "--best-metric",
        choices=ROUGE_METRICS + ("loss",),
        help=f"metric that picks the best checkpoint (default: {defaults.best_metric})",
    )
    train.add_argument("--seed", type=_non_negative, metavar="N", help=f"random seed for the split, order and dropout (default: {defaults.seed})")
    train.add_argument("--precision", choices=PRECISIONS, help=f"auto: bf16 or fp16 on a CUDA GPU, fp32 elsewhere (default: {defaults.precision})")
    train.add_argument("--eval-max-tokens", type=_positive, metavar="N", help="maximum tokens generated per validation summary")
    train.add_argument("--eval-beams", type=_positive, metavar="N", help="beam width when generating validation summaries")
    train.add_argument("--max-eval-pairs", type=_positive, metavar="N", help="validation pairs used per evaluation (default: all)")
    train.add_argument("--resume", action="store_true", help="continue the run in --output from its newest checkpoint")
    train.add_argument("--dry-run", action="store_true", help="run the pre-flight check only")
    train.add_argument("--device", metavar="D", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    train.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    _add_pair_options(train)
    train.set_defaults(handler=command_train)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[model_options],
        help="score a model's summaries of your pairs with ROUGE",
        description=(
            "Summarize the document of every pair and print the mean ROUGE-1, ROUGE-2, ROUGE-L and "
            "ROUGE-Lsum F1 against the reference summaries; with --json, each pair's scores too."
        ),
    )
    evaluate.add_argument("--pairs", type=Path, required=True, metavar="PATH", help=f"pairs to evaluate on: {pairs_help}")
    evaluate.add_argument(
        "--model", metavar="M", default=DEFAULT_MODEL, help=f"model folder or hub id (default: {DEFAULT_MODEL})"
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON with each pair's summary and scores")
    evaluate.add_argument("--max-tokens", type=_positive, metavar="N", help="maximum number of summary tokens")
    evaluate.add_argument("--beams", type=_positive, metavar="N", help="beam search width (1 is greedy)")
    evaluate.add_argument("--device", metavar="D", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    evaluate.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _add_pair_options(evaluate)
    evaluate.set_defaults(handler=command_evaluate)

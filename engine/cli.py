"""The ``synopsis`` command: inspect and summarize documents from a terminal.

Exit codes: 0 success, 1 output could not be written, 2 usage error,
3 document error, 4 model error, 130 cancelled. With several files, each is
processed and the exit code is the first failure's.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Callable, TextIO

from . import __version__
from .counts import count
from .cli_train import add_training_commands
from .documents import SUPPORTED_SUFFIXES, DocumentLimits, load_document
from .documents.limits import USER_LIMITS, check_input_tokens, format_number
from .errors import Cancelled, DocumentError, ModelError, SettingsError, SynopsisError
from .files import write_text_atomic
from .generation import GenerationSettings
from .logs import configure_logging
from .models import DEFAULT_MODEL, LoadedModel, load_model
from .speed import PRECISION_HELP, PRECISIONS
from .summarize import Summary, document_windows, summarize_document

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_OUTPUT = 1
EXIT_USAGE = 2
EXIT_DOCUMENT = 3
EXIT_MODEL = 4
EXIT_CANCELLED = 130

FORMATS = ("txt", "md", "json")


def exit_code_for(error: BaseException) -> int:
    if isinstance(error, (Cancelled, KeyboardInterrupt)):
        return EXIT_CANCELLED
    if isinstance(error, DocumentError):
        return EXIT_DOCUMENT
    if isinstance(error, SettingsError):
        return EXIT_USAGE
    if isinstance(error, ModelError):
        return EXIT_MODEL
    return 1


# Progress -------------------------------------------------------------------


class StageBars:
    """A tqdm bar on stderr per stage; a report with a new unit starts a new bar."""

    LABELS = {"pages": "Reading", "windows": "Encoding", "tokens": "Generating"}

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        self.unit = None

    def __call__(self, done: int, total: int, unit: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if unit != self.unit or self.bar is None:
            self.close()
            self.unit = unit
            self.bar = tqdm(
                total=total, unit=f" {unit}", desc=self.LABELS.get(unit, unit), file=self.stream, leave=False
            )
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.unit = None


# Output ---------------------------------------------------------------------


def render_summary(summary: Summary, output_format: str) -> str:
    if output_format == "json":
        return json.dumps(summary.to_json(), ensure_ascii=False, indent=2) + "\n"
    if output_format == "md":
        pages = f"{count(summary.pages, 'page')}, " if summary.pages else ""
        facts = (
            f"{pages}{count(summary.total_tokens, 'token')} in {count(len(summary.windows), 'window')}, "
            f"all of them read; model {summary.model}"
        )
        return f"# Summary of {summary.file.name}\n\n{summary.text}\n\n_{facts}._\n"
    return summary.text + "\n"


def output_path_for(source: Path, output: Path, several: bool, output_format: str) -> Path:
    """Return where a summary of ``source`` goes: ``output`` itself, or a file inside it for several inputs.

    The file name keeps the input's extension (``report.pdf.summary.txt``),
    so ``report.pdf`` and ``report.md`` in one call do not overwrite each other.
    """
    if several or output.is_dir():
        return output / f"{source.name}.summary.{output_format}"
    return output


def _check_output_not_an_input(paths: list[Path], output: Path, several: bool, output_format: str) -> None:
    inputs = {path.resolve() for path in paths}
    for path in paths:
        if output_path_for(path, output, several, output_format).resolve() in inputs:
            raise SettingsError(
                f"--output {output} would overwrite an input document: choose another path."
            )


# Commands -------------------------------------------------------------------


def _limits(args: argparse.Namespace) -> DocumentLimits:
    """Build the document limits from the --max-* flags; a flag left out keeps the default."""
    chosen = {name: getattr(args, name) for name in USER_LIMITS if getattr(args, name, None) is not None}
    return DocumentLimits(**chosen)


def _load_model_for(args: argparse.Namespace) -> LoadedModel:
    return load_model(args.model, device=getattr(args, "device", None), cache_dir=args.cache_dir)


def _print_error(path: Path | None, error: BaseException) -> None:
    message = str(error) or type(error).__name__
    if path is not None:
        # Document errors start with the file name; show the path as the user typed it.
        own_prefix = f"{path.name or path}: "
        if isinstance(error, DocumentError) and message.startswith(own_prefix):
            message = message[len(own_prefix) :]
        message = f"{path}: {message}"
    print("synopsis: error: " + message, file=sys.stderr)


def command_inspect(args: argparse.Namespace) -> int:
    loaded = _load_model_for(args) if args.model else None
    first_failure = EXIT_OK
    for path in args.files:
        try:
            report = inspect_file(path, args, loaded)
        except SynopsisError as error:
            log.warning("inspect failed for %s: %s", path, error)
            _print_error(path, error)
            first_failure = first_failure or exit_code_for(error)
            if isinstance(error, Cancelled):
                return first_failure
            continue
        if args.json and len(args.files) > 1:
            # JSON Lines: one object per document, so the output stays parseable.
            print(json.dumps(report, ensure_ascii=False))
        elif args.json:
            print(json.dumps(report, ensure_ascii=False, indent=2))
        else:
            print(format_inspection(report))
    return first_failure


def inspect_file(path: Path, args: argparse.Namespace, loaded: LoadedModel | None) -> dict:
    document = load_document(path, password=args.password, limits=_limits(args))
    report = {
        "file": str(path),
        "format": document.format,
        "pages": document.page_count,
        "characters": document.characters,
        "words": document.words,
        "warnings": list(document.warnings),
    }
    if loaded is not None:
        windows = document_windows(document, loaded, args.window_tokens)
        check_input_tokens(path, windows.total_tokens, _limits(args))
        report["tokens"] = windows.total_tokens
        report["windows"] = windows.to_json()
    return report


def format_inspection(report: dict) -> str:
    lines = [
        f"File:        {report['file']}",
        f"Format:      {report['format']}",
        f"Pages:       {report['pages'] if report['pages'] is not None else '-'}",
        f"Characters:  {report['characters']:,}",
        f"Words:       {report['words']:,}",
    ]
    if "tokens" in report:
        lines.append(f"Tokens:      {report['tokens']:,} in {count(len(report['windows']), 'window')} (nothing truncated)")
        for window in report["windows"]:
            pages = window["pages"]
            where = f"pages {pages[0]}-{pages[1]}" if pages else "no page numbers"
            lines.append(f"  window {window['index'] + 1:>4}: {window['tokens']:>5} tokens, {where}")
    for warning in report["warnings"]:
        lines.append(f"Warning:     {warning}")
    return "\n".join(lines)


def command_summarize(args: argparse.Namespace) -> int:
    settings = GenerationSettings(
        max_tokens=args.max_tokens,
        min_tokens=args.min_tokens,
        beams=args.beams,
        length_penalty=args.length_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        window_tokens=args.window_tokens,
        batch_windows=args.batch_windows,
        precision=args.precision,
    )
    settings.validate()
    several = len(args.files) > 1
    if args.output is not None:
        _check_output_not_an_input(args.files, args.output, several, args.format)
        _check_output_names_unique(args.files, args.output, several, args.format)
        if several:
            _prepare_output_folder(args.output)
        _check_output_writable(output_path_for(args.files[0], args.output, several, args.format))

    # Files that cannot be opened fail now, before a model is loaded or downloaded for them.
    first_failure = EXIT_OK
    readable = []
    for path in args.files:
        problem = _unreadable_input(path)
        if problem is None:
            readable.append(path)
            continue
        _print_error(path, problem)
        first_failure = first_failure or EXIT_DOCUMENT
    if not readable:
        return first_failure

    loaded = _load_model_for(args)
    bars = StageBars(enabled=not args.quiet)
    for path in readable:
        try:
            document = load_document(path, password=args.password, limits=_limits(args), progress=bars)
            _print_reading_warnings(path, document.warnings, bars)
            windows = document_windows(document, loaded, settings.window_tokens)
            check_input_tokens(path, windows.total_tokens, _limits(args))
            summary = summarize_document(document, loaded, settings, progress=bars, windows=windows)
        except SynopsisError as error:
            bars.close()
            log.warning("summarize failed for %s: %s", path, error)
            _print_error(path, error)
            first_failure = first_failure or exit_code_for(error)
            if isinstance(error, Cancelled):
                return first_failure
            continue
        bars.close()
        try:
            emit_summary(summary, args, several)
        except OSError as error:
            log.error("writing the summary of %s failed: %s", path, error)
            _print_error(path, OSError(f"the summary could not be written: {error}. Choose another --output."))
            first_failure = first_failure or EXIT_OUTPUT
    return first_failure


def _print_reading_warnings(path: Path, warnings: list[str], bars: StageBars) -> None:
    """Print what reading ``path`` skipped or could not read (slow or image-only pages, tracked changes)."""
    if not warnings:
        return
    bars.close()
    for warning in warnings:
        print(f"synopsis: {path}: warning: {warning}", file=sys.stderr)


def _unreadable_input(path: Path) -> DocumentError | None:
    """Return the error for an input that does not exist or is not a file, else None."""
    if not path.exists():
        return DocumentError(path, "file not found. Check the path.")
    if not path.is_file():
        return DocumentError(path, "not a file. Give the path of a PDF, DOCX, TXT or MD document.")
    return None


def _check_output_names_unique(paths: list[Path], output: Path, several: bool, output_format: str) -> None:
    seen: dict[Path, Path] = {}
    for path in paths:
        target = output_path_for(path, output, several, output_format).resolve()
        if target in seen:
            raise SettingsError(
                f"{seen[target]} and {path} would both be written to {target}: "
                "summarize them in separate calls or rename one."
            )
        seen[target] = path


def _check_output_writable(target: Path) -> None:
    """Fail before any work when the folder of ``target`` cannot be written."""
    folder = target.parent if not target.is_dir() else target
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise SettingsError(f"--output {target} cannot be written: {probe} is not a writable folder.")


def _prepare_output_folder(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise SettingsError(f"--output {output} is a file, but several inputs need a folder: give a folder path.")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SettingsError(f"--output folder {output} could not be created: {error}.") from error


def emit_summary(summary: Summary, args: argparse.Namespace, several: bool) -> None:
    if args.output is not None:
        target = output_path_for(summary.file, args.output, several, args.format)
        write_text_atomic(target, render_summary(summary, args.format))
        log.info("wrote %s", target)
        if not args.quiet:
            print(f"Wrote {target}", file=sys.stderr)
        return
    if args.format == "json" and several:
        # JSON Lines: one object per document, so the output stays parseable.
        print(json.dumps(summary.to_json(), ensure_ascii=False))
    elif args.format == "txt" and several:
        print(f"==> {summary.file} <==")
        print(render_summary(summary, "txt"))
    else:
        sys.stdout.write(render_summary(summary, args.format))
    sys.stdout.flush()


def _no_display() -> bool:
    """Return whether this is Linux without a graphical session, where Qt would abort."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def command_gui(args: argparse.Namespace) -> int:
    files = getattr(args, "files", None) or []
    if _no_display():
        print(
            "synopsis: error: no graphical display found (DISPLAY and WAYLAND_DISPLAY are unset), so the "
            "desktop window cannot open. Use the command line instead: synopsis summarize FILE "
            "(see synopsis --help).",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        from synopsis.app.main import run_gui  # noqa: PLC0415 - Qt loads only for the GUI
    except ImportError as error:
        log.info("GUI not available: %s", error)
        print(
            "synopsis: the desktop window is not available in this build; "
            "use 'synopsis summarize FILE' (see 'synopsis --help').",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return run_gui(files)


# Arguments ------------------------------------------------------------------


def _whole_number(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{value}'") from None


def _positive(value: str) -> int:
    number = _whole_number(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _non_negative(value: str) -> int:
    number = _whole_number(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def _finite(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{value}'") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
    return number


def _positive_number(value: str) -> float:
    number = _finite(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {value}")
    return number


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    """Add a --max-* flag for each document limit the user may change."""
    defaults = DocumentLimits()
    group = parser.add_argument_group("document limits (reading stops with an error when one is exceeded)")
    for name, setting in USER_LIMITS.items():
        default = getattr(defaults, name)
        group.add_argument(
            setting.flag,
            dest=name,
            type=_positive_number if isinstance(default, float) else _positive,
            metavar="N",
            help=f"maximum {setting.description} (default: {format_number(default)} {setting.unit})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synopsis",
        description="Summarize very long documents whole: every page is read, nothing is truncated.",
    )
    parser.add_argument("--version", action="version", version=f"synopsis {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    model_options = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps a -v given before the command from being reset here.
    model_options.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress details to stderr"
    )
    model_options.add_argument(
        "--password", help="password of an encrypted PDF (applies to every file given)"
    )
    model_options.add_argument(
        "--window-tokens",
        type=_positive,
        metavar="N",
        help="tokens per encoder window, special tokens included (default: the model's maximum)",
    )
    model_options.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="folder for downloaded models (default: the Hugging Face cache)",
    )

    inspect = commands.add_parser(
        "inspect",
        parents=[model_options],
        help="show what Synopsis reads from a document",
        description="Show format, pages, characters, words and warnings; with --model, tokens and windows.",
    )
    inspect.add_argument("files", nargs="+", type=Path, metavar="FILE")
    inspect.add_argument("--model", metavar="M", help="model folder or hub id, to count tokens and windows")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=command_inspect)

    summarize = commands.add_parser(
        "summarize",
        parents=[model_options],
        help="summarize documents",
        description=(
            f"Summarize each FILE ({', '.join(SUPPORTED_SUFFIXES)}). The summary goes to stdout "
            "or to --output; with several files, --output is a folder, and JSON on stdout is "
            "one object per line."
        ),
    )
    summarize.add_argument("files", nargs="+", type=Path, metavar="FILE")
    summarize.add_argument(
        "--model", metavar="M", default=DEFAULT_MODEL, help=f"model folder or hub id (default: {DEFAULT_MODEL})"
    )
    summarize.add_argument("--output", "-o", type=Path, metavar="PATH", help="write the summary to PATH")
    summarize.add_argument("--format", choices=FORMATS, default="txt", help="output format (default: txt)")
    summarize.add_argument("--max-tokens", type=_positive, metavar="N", help="maximum number of summary tokens")
    summarize.add_argument(
        "--min-tokens", type=_non_negative, metavar="N", help="minimum number of summary tokens"
    )
    summarize.add_argument("--beams", type=_positive, metavar="N", help="beam search width (1 is greedy)")
    summarize.add_argument("--length-penalty", type=_finite, metavar="F", help="beam length penalty")
    summarize.add_argument(
        "--no-repeat-ngram-size", type=_non_negative, metavar="N", help="forbid repeating n-grams of this size"
    )
    summarize.add_argument(
        "--batch-windows", type=_positive, metavar="N", help="windows encoded at once (default: 4 on CPU, 8 on GPU)"
    )
    summarize.add_argument("--device", metavar="D", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    summarize.add_argument("--precision", choices=PRECISIONS, default="auto", help=f"{PRECISION_HELP} (default: auto)")
    summarize.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    summarize.set_defaults(handler=command_summarize)

    for command in (inspect, summarize):
        _add_limit_options(command)
    add_training_commands(commands, model_options)

    gui = commands.add_parser("gui", help="open the desktop window (the default with no command)")
    gui.add_argument("files", nargs="*", type=Path, metavar="FILE", help="documents to queue for summarizing")
    gui.set_defaults(handler=command_gui)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(logging.INFO if args.verbose else None)
    _quiet_libraries()
    handler: Callable[[argparse.Namespace], int] = getattr(args, "handler", command_gui)
    try:
        return handler(args)
    except KeyboardInterrupt:
        log.info("cancelled with Ctrl-C")
        print("\nsynopsis: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:
        # The reader of stdout went away (for example `| head`). Point stdout at
        # devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OUTPUT
    except OSError as error:
        # Writing to stdout failed (a full disk behind a redirect, for example).
        log.error("output failed: %s", error)
        print(f"synopsis: error: {error}", file=sys.stderr)
        return EXIT_OUTPUT
    except SynopsisError as error:
        log.error("%s", error)
        _print_error(None, error)
        return exit_code_for(error)


def _quiet_libraries() -> None:
    """Keep transformers' own warnings and progress bars out of the terminal, because our messages cover the same ground."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())

"""Drive the frozen Synopsis window without a user: show it, summarize, export a .docx, close.

The spec file freezes this module as the ``synopsis-smoke`` executable, next
to ``synopsis`` in the same bundle, so it runs with exactly the Python
modules, Qt plugins and data files that the shipped app has. It checks the
traps of a frozen PySide6 + torch + transformers app:

- a Qt platform plugin loads (the offscreen or the xcb one);
- the icons in synopsis.resources load, SVG included (iconengines plugin);
- a PDF is read and summarized by a local model, so transformers' lazily
  imported model, configuration and tokenizer modules are all present;
- python-docx finds its default template when the summary is exported;
- closing the window stops the worker thread and the process exits with 0.

Settings and history go to a temporary folder, never to the user's own.
Exit code 0 means every check passed; 1 means a check failed, with the
reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

PROCESS_STARTED = time.time()  # the bootloader's unpacking is not included; --launched-at covers it

log = logging.getLogger("synopsis.smoke")


class SmokeFailure(Exception):
    """A check of the frozen app failed."""


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="synopsis-smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--document", type=Path, help="document to summarize (omit with --startup-only)")
    parser.add_argument("--model", type=Path, help="local model folder in save_pretrained layout")
    parser.add_argument("--output-dir", type=Path, help="folder for the .docx, the screenshot and report.json (default: a temporary folder)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before the run counts as failed (default: 600)")
    parser.add_argument("--launched-at", type=float, help="Unix time at which the shell started this executable, to report start-up time")
    parser.add_argument("--startup-only", action="store_true", help="show the window, report start-up time and close")
    parser.add_argument("--expect-platform", help="fail unless Qt uses this platform plugin (offscreen, xcb, wayland, windows, cocoa)")
    arguments = parser.parse_args(argv)
    if not arguments.startup_only and (arguments.document is None or arguments.model is None):
        parser.error("--document and --model are required unless --startup-only is given")
    return arguments


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def check_icon(app) -> None:
    """Fail unless the window icon has a PNG and an SVG that Qt can render."""
    from synopsis.app.main import RESOURCES  # noqa: PLC0415 - after QApplication exists

    for name in ("synopsis.png", "synopsis.svg", "synopsis.desktop"):
        check((RESOURCES / name).is_file(), f"{RESOURCES / name} is missing from the bundle")
    check(not app.windowIcon().isNull(), "the window icon is empty: no image plugin could read the icons")

    from PySide6.QtGui import QIcon  # noqa: PLC0415

    svg = QIcon(str(RESOURCES / "synopsis.svg"))
    check(not svg.pixmap(64, 64).isNull(), "synopsis.svg renders as an empty pixmap: the SVG icon engine plugin is missing")


def wait_until(app, condition, timeout_s: float, what: str) -> None:
    """Process Qt events until ``condition()`` is true; raise SmokeFailure after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SmokeFailure(f"timed out after {timeout_s:.0f} s waiting for {what}")
        app.processEvents()
        time.sleep(0.01)


def check_docx(path: Path, document_name: str) -> int:
    """Reopen the exported .docx with python-docx; return its paragraph count."""
    import docx  # noqa: PLC0415

    word = docx.Document(str(path))
    paragraphs = [paragraph.text for paragraph in word.paragraphs]
    check(bool(paragraphs) and paragraphs[0] == f"Summary of {document_name}", f"{path} does not start with the summary heading: {paragraphs[:1]}")
    check(any(text.strip() for text in paragraphs[1:]), f"{path} has a heading but no summary text")
    return len(paragraphs)


def run(arguments: argparse.Namespace, output_dir: Path) -> dict:
    from synopsis.app.main import create_application  # noqa: PLC0415 - imports Qt
    from synopsis.engine.history import HistoryStore  # noqa: PLC0415
    from synopsis.engine.logs import configure_logging  # noqa: PLC0415

    configure_logging(logging.INFO)
    app = create_application(["synopsis-smoke"])
    report: dict = {"platform": app.platformName()}
    if arguments.expect_platform:
        check(app.platformName() == arguments.expect_platform, f"Qt uses the {app.platformName()!r} platform plugin, expected {arguments.expect_platform!r}")
    check_icon(app)

    from synopsis.app import actions  # noqa: PLC0415 - after QApplication exists
    from synopsis.app.window import MainWindow  # noqa: PLC0415

    window = MainWindow(settings_path=output_dir / "settings.json", history=HistoryStore(output_dir / "history"))
    window.show()
    wait_until(app, lambda: window.windowHandle() is not None and window.windowHandle().isExposed(), 60, "the window to be exposed")
    shown_at = time.time()
    report["window_shown_s_after_process_start"] = round(shown_at - PROCESS_STARTED, 2)
    if arguments.launched_at is not None:
        report["window_shown_s_after_launch"] = round(shown_at - arguments.launched_at, 2)

    if not arguments.startup_only:
        report.update(summarize_and_export(app, window, actions, arguments, output_dir))

    window.grab().save(str(output_dir / "window.png"))
    window.close()
    wait_until(app, lambda: not window.isVisible(), 60, "the window to close")
    check(not window.runner.thread_running(), "the worker thread is still running after the window closed")
    app.quit()
    return report


def summarize_and_export(app, window, actions, arguments: argparse.Namespace, output_dir: Path) -> dict:
    """Queue the document as a user would, wait for its summary and export it as .docx."""
    settings = window.settings
    settings.model = str(arguments.model.resolve())
    settings.device = "cpu"
    settings.length = "exact"
    settings.min_tokens, settings.max_tokens, settings.beams = 10, 40, 1
    outcome: dict = {}
    window.runner.sig_finished.connect(lambda job_id, result: outcome.setdefault("finished", job_id))
    window.runner.sig_failed.connect(lambda job_id, error, details: outcome.setdefault("failed", f"{error}\n{details}"))

    started = time.monotonic()
    (job_id,) = window.add_files([arguments.document.resolve()])
    wait_until(app, lambda: outcome, arguments.timeout, f"the summary of {arguments.document.name}")
    check("failed" not in outcome, f"summarizing {arguments.document.name} failed: {outcome.get('failed')}")
    seconds = time.monotonic() - started

    item = window.queue_panel.model.item(job_id)
    check(item is not None and item.summary is not None, "the queue has no summary for the finished job")
    check(window.current_summary() is item.summary, "the summary pane does not show the finished summary")
    check(bool(item.summary.text.strip()), "the summary text is empty")

    written = actions.export_to(window, output_dir / "summary.docx", "docx")
    check(written is not None and written.is_file(), "exporting the summary as .docx failed; the log names the error")
    return {
        "document": arguments.document.name,
        "pages": item.summary.pages,
        "tokens": item.summary.total_tokens,
        "windows": len(item.summary.windows),
        "summarize_s": round(seconds, 2),
        "summary_characters": len(item.summary.text),
        "docx": str(written),
        "docx_bytes": written.stat().st_size,
        "docx_paragraphs": check_docx(written, arguments.document.name),
    }


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    temporary = None
    if arguments.output_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="synopsis-smoke-")
        output_dir = Path(temporary.name)
    else:
        output_dir = arguments.output_dir
        output_dir.mkdir(parents=True, exist_ok=True)
    try:
        report = run(arguments, output_dir)
        report["frozen"] = bool(getattr(sys, "frozen", False))
        (output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except SmokeFailure as failure:
        print(f"synopsis-smoke: FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        if temporary is not None:
            temporary.cleanup()
    print(json.dumps(report))
    return 0

if __name__ == "__main__":
    sys.exit(main())

"""Smoke-test a frozen Synopsis bundle as a user would run it, on Linux, Windows or macOS.

Run it with any Python that has Synopsis's dependencies (the build venv), from
the repository root:

    python packaging/smoke_test.py dist/synopsis            # Linux, Windows
    python packaging/smoke_test.py dist/Synopsis.app        # macOS

Checks, each against the frozen executables only:

1. ``synopsis --version`` runs (the whole engine, torch and transformers import);
2. ``synopsis summarize DOCUMENT --model FOLDER`` writes a summary;
3. ``synopsis-smoke`` (packaging/smoke_gui.py) shows the window on Qt's
   offscreen platform, summarizes the document, exports a .docx and closes;
4. on Linux with Xvfb installed, the same on the real xcb platform plugin;
5. start-up time: cold (Linux only: the bundle's files are evicted from the
   page cache first) and warm, as the time until the window is exposed.

The model defaults to the tiny random BART of tests/tiny.py, built into a
temporary folder. The document defaults to tracemonkey.pdf of the shared
corpus when that exists, else a PDF written here with Qt. Exit code 0 means
every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS_PDF = ROOT.parent / "shared" / "corpus" / "documents" / "mozilla_pdf.js__tracemonkey.pdf"
SUMMARY_OPTIONS = ["--max-tokens", "40", "--min-tokens", "10", "--beams", "1", "--device", "cpu"]


class SmokeTestError(Exception):
    """A check failed; the message names the command and what it printed."""


def executables(bundle: Path) -> dict[str, Path]:
    """Return the command-line and test-driver executables inside ``bundle``."""
    if sys.platform == "win32":
        found = {"cli": bundle / "synopsis-cli.exe", "smoke": bundle / "synopsis-smoke.exe", "window": bundle / "Synopsis.exe"}
    elif sys.platform == "darwin":
        macos = bundle / "Contents" / "MacOS"
        found = {"cli": macos / "synopsis-cli", "smoke": macos / "synopsis-smoke", "window": macos / "Synopsis"}
    else:
        found = {"cli": bundle / "synopsis", "smoke": bundle / "synopsis-smoke", "window": bundle / "synopsis"}
    missing = [str(path) for path in found.values() if not path.is_file()]
    if missing:
        raise SmokeTestError(f"not found in the bundle: {', '.join(missing)}; build it with the packaging/build-* script first")
    return found


def isolated_environment(home: Path) -> dict[str, str]:
    """Return an environment whose settings, history, logs and caches live under ``home``, offline."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "QT_", "XDG_"))}
    environment.update(
        HOME=str(home),
        USERPROFILE=str(home),
        APPDATA=str(home / "AppData" / "Roaming"),
        LOCALAPPDATA=str(home / "AppData" / "Local"),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_STATE_HOME=str(home / "state"),
        XDG_CACHE_HOME=str(home / "cache"),
        HF_HOME=str(home / "huggingface"),
        HF_HUB_OFFLINE="1",
        QT_QPA_PLATFORM="offscreen",
    )
    return environment


def run(command: list[str], environment: dict[str, str], timeout: float, what: str) -> subprocess.CompletedProcess:
    started = time.monotonic()
    try:
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise SmokeTestError(f"{what} timed out after {timeout:.0f} s: {' '.join(command)}") from error
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SmokeTestError(
            f"{what} failed with exit code {result.returncode}: {' '.join(command)}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )
    print(f"ok   {what} ({seconds:.1f} s)", flush=True)
    result.seconds = seconds  # type: ignore[attr-defined]
    return result


def write_test_pdf(path: Path) -> Path:
    """Write a PDF of several pages of real text (Python's own documentation of argparse) with Qt."""
    import pydoc  # noqa: PLC0415

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication, QPageSize, QPdfWriter, QTextDocument  # noqa: PLC0415

    app = QGuiApplication.instance() or QGuiApplication(["smoke-test"])
    writer = QPdfWriter(str(path))
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    document = QTextDocument()
    document.setPlainText(pydoc.render_doc("argparse", renderer=pydoc.plaintext))
    document.print_(writer)
    del writer, app
    if not path.is_file() or path.stat().st_size == 0:
        raise SmokeTestError(f"Qt could not write the test PDF {path}")
    return path


def evict_from_page_cache(folder: Path) -> bool:
    """Drop ``folder``'s files from the Linux page cache, so the next start reads them from disk; False elsewhere."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)
    return True


def measure_startup(smoke: Path, bundle: Path, environment: dict[str, str], runs: int) -> dict:
    """Return seconds from launch until the window is exposed: one cold start (Linux), then warm ones."""
    def start_once() -> float:
        launched = time.time()
        result = run([str(smoke), "--startup-only", "--launched-at", f"{launched:.3f}"], environment, 300, "window start-up")
        return json.loads(result.stdout.strip().splitlines()[-1])["window_shown_s_after_launch"]

    timings: dict = {}
    if evict_from_page_cache(bundle):
        timings["cold_s"] = start_once()
    warm = [start_once() for _ in range(runs)]
    timings["warm_median_s"] = statistics.median(warm)
    timings["warm_runs_s"] = warm
    return timings


def measure_window_under_x(window: Path, environment: dict[str, str], display: str) -> float | None:
    """Return seconds until ``synopsis gui`` maps its window on an X display, or None without xwininfo.

    The window is then ended with SIGTERM: this measures start-up only; the
    clean exit is checked by synopsis-smoke.
    """
    if shutil.which("xwininfo") is None:
        return None
    environment = dict(environment, DISPLAY=display, QT_QPA_PLATFORM="xcb")
    launched = time.monotonic()
    process = subprocess.Popen([str(window), "gui"], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while time.monotonic() - launched < 120:
            tree = subprocess.run(["xwininfo", "-root", "-tree"], env=environment, capture_output=True, text=True).stdout
            if '"Synopsis"' in tree:
                return time.monotonic() - launched
            if process.poll() is not None:
                raise SmokeTestError(f"synopsis gui exited with code {process.returncode} before showing a window:\n{process.stderr.read()[-4000:]}")
            time.sleep(0.05)
        raise SmokeTestError("synopsis gui showed no window within 120 s")
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


class XvfbDisplay:
    """An Xvfb server on a free display number, started and stopped by this script."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.display = ""

    def __enter__(self) -> "XvfbDisplay":
        for number in range(90, 110):
            if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
                self.display = f":{number}"
                break
        else:
            raise SmokeTestError("no free X display number between :90 and :109 for Xvfb")
        self.process = subprocess.Popen(["Xvfb", self.display, "-screen", "0", "1600x1000x24", "-nolisten", "tcp"], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not Path(f"/tmp/.X11-unix/X{self.display[1:]}").exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SmokeTestError(f"Xvfb did not start on display {self.display}")
            time.sleep(0.1)
        return self

    def __exit__(self, *exception) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def prepare_model(model: Path | None, work: Path) -> Path:
    if model is not None:
        return model
    folder = work / "tiny-model"
    run([sys.executable, "-m", "tests.tiny", str(folder)], dict(os.environ, PYTHONPATH=str(ROOT)), 600, "building the tiny test model (tests/tiny.py)")
    return folder


def prepare_document(document: Path | None, work: Path) -> Path:
    if document is not None:
        return document
    if CORPUS_PDF.is_file():
        return CORPUS_PDF
    return write_test_pdf(work / "argparse-documentation.pdf")


def smoke_test(bundle: Path, model: Path | None, document: Path | None, startup_runs: int, work: Path) -> dict:
    found = executables(bundle)
    model = prepare_model(model, work)
    document = prepare_document(document, work)
    environment = isolated_environment(work / "home")
    report: dict = {"bundle": str(bundle), "document": str(document), "model": str(model)}

    version = run([str(found["cli"]), "--version"], environment, 300, "synopsis --version")
    report["version"] = version.stdout.strip()
    report["cli_start_s"] = round(version.seconds, 2)

    summary_file = work / "cli-summary.txt"
    run([str(found["cli"]), "summarize", str(document), "--model", str(model), "--output", str(summary_file), "--quiet", *SUMMARY_OPTIONS], environment, 900, "synopsis summarize")
    text = summary_file.read_text(encoding="utf-8").strip() if summary_file.is_file() else ""
    if not text:
        raise SmokeTestError(f"synopsis summarize wrote no summary to {summary_file}")
    report["cli_summary_characters"] = len(text)

    gui_run = run(
        [str(found["smoke"]), "--document", str(document), "--model", str(model), "--output-dir", str(work / "gui-offscreen"), "--expect-platform", "offscreen"],
        environment, 900, "window on the offscreen platform: summarize, export .docx, close",
    )
    report["gui_offscreen"] = json.loads(gui_run.stdout.strip().splitlines()[-1])

    if sys.platform.startswith("linux") and shutil.which("Xvfb"):
        with XvfbDisplay() as x_server:
            x_environment = dict(environment, DISPLAY=x_server.display, QT_QPA_PLATFORM="xcb")
            x_run = run(
                [str(found["smoke"]), "--document", str(document), "--model", str(model), "--output-dir", str(work / "gui-xcb"), "--expect-platform", "xcb"],
                x_environment, 900, "window on the xcb platform under Xvfb: summarize, export .docx, close",
            )
            report["gui_xcb"] = json.loads(x_run.stdout.strip().splitlines()[-1])
            report["startup_xcb"] = measure_startup(found["smoke"], bundle, x_environment, startup_runs)
            seconds = measure_window_under_x(found["window"], environment, x_server.display)
            if seconds is not None:
                report["synopsis_gui_window_mapped_s"] = round(seconds, 2)
    else:
        print("skip window on a real display: Linux with Xvfb only", flush=True)
        report["startup_offscreen"] = measure_startup(found["smoke"], bundle, environment, startup_runs)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Smoke-test a frozen Synopsis bundle.")
    parser.add_argument("bundle", type=Path, help="dist/synopsis (Linux, Windows) or dist/Synopsis.app (macOS)")
    parser.add_argument("--model", type=Path, help="local model folder (default: build the tiny test model)")
    parser.add_argument("--document", type=Path, help="document to summarize (default: tracemonkey.pdf of the corpus, else a generated PDF)")
    parser.add_argument("--startup-runs", type=int, default=3, help="warm start-up measurements (default: 3)")
    parser.add_argument("--report", type=Path, help="write the results as JSON to this file")
    arguments = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="synopsis-smoke-test-") as folder:
        try:
            report = smoke_test(arguments.bundle.resolve(), arguments.model, arguments.document, arguments.startup_runs, Path(folder))
        except SmokeTestError as error:
            print(f"FAIL {error}", file=sys.stderr)
            return 1
    text = json.dumps(report, indent=2)
    print(text)
    if arguments.report is not None:
        arguments.report.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

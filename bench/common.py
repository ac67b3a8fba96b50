"""Helpers shared by the benchmark scripts: machine description, child processes, tables, docs sections."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FIGURES = DOCS / "benchmarks"
BENCHMARKS_PAGE = DOCS / "benchmarks.md"
GIB = 1024**3
CORPUS_VARIABLE = "SYNOPSIS_CORPUS"
MIB = 1024**2

# facebook/bart-base and facebook/bart-large sizes, as BartConfig arguments.
BART_VOCAB = 50265
BART_SIZES = {
    "base": dict(
        d_model=768,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=12,
        decoder_attention_heads=12,
        encoder_ffn_dim=3072,
        decoder_ffn_dim=3072,
    ),
    "large": dict(
        d_model=1024,
        encoder_layers=12,
        decoder_layers=12,
        encoder_attention_heads=16,
        decoder_attention_heads=16,
        encoder_ffn_dim=4096,
        decoder_ffn_dim=4096,
    ),
}


def random_bart(size: str, max_positions: int):
    """Return a BART of the named size with seeded random weights and BART's vocabulary, in eval mode."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(vocab_size=BART_VOCAB, max_position_embeddings=max_positions, **BART_SIZES[size])
    torch.manual_seed(0)
    return BartForConditionalGeneration(config).eval()


def corpus_dir() -> Path:
    """Return the corpus folder (with documents/ and pairs/): $SYNOPSIS_CORPUS, else ../shared/corpus beside the checkout.

    Exits with a message naming both places when the folder is missing, so a
    benchmark never prints a table of failures for a corpus it could not find.
    """
    folder = Path(os.environ.get(CORPUS_VARIABLE) or ROOT.parent / "shared" / "corpus")
    if not (folder / "documents").is_dir():
        raise SystemExit(
            f"corpus not found at {folder}: set {CORPUS_VARIABLE} to a folder that has documents/ and pairs/, "
            "or place the checkout next to shared/corpus."
        )
    return folder


def peak_rss_bytes() -> int:
    """Return this process's peak resident memory (VmHWM in /proc/self/status, so Linux only)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _proc_bytes(path: str, field: str) -> int:
    """Return ``field`` of a /proc file such as /proc/meminfo, given there in kB, as bytes (Linux only)."""
    with open(path, encoding="ascii") as lines:
        for line in lines:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in {path}")


def current_rss_bytes() -> int:
    """Return this process's resident memory now (VmRSS)."""
    return _proc_bytes("/proc/self/status", "VmRSS")


def available_bytes() -> int:
    """Return the memory available to new work (MemAvailable)."""
    return _proc_bytes("/proc/meminfo", "MemAvailable")


def machine() -> dict:
    """Describe the CPU, cores, RAM, torch build and load average, for the record beside a result."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        total = int(meminfo.readline().split()[1]) * 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(total / GIB, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": [round(value, 1) for value in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d"),
    }


def describe_machine(info: dict) -> str:
    """Return one Markdown sentence naming the command, date, machine and load."""
    return (
        f"`{info['command']}`, run on {info['date']}: {info['cpu']}, {info['cores']} cores, "
        f"{info['ram_gib']} GiB RAM, torch {info['torch']} ({info['torch_threads']} thread{'s' if info['torch_threads'] != 1 else ''}), "
        f"Python {info['python']}. Load average at the end of the run: {info['load_average']}; "
        "other jobs shared the cores, so absolute times are upper bounds and the ratios between "
        "alternatives measured side by side are the figures to compare."
    )


def run_child(script: str, arguments: list[str], timeout: float) -> dict:
    """Run ``script --child ARGUMENTS`` in a fresh interpreter; return the JSON of its last output line.

    On a timeout, a signal or a non-zero exit, the result contains an ``error`` key instead.
    """
    command = [sys.executable, script, "--child", *arguments]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"took longer than {timeout:.0f} s"}
    if done.returncode < 0:
        return {"error": f"killed by signal {-done.returncode}, probably out of memory"}
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        return {"error": f"failed: {last_line}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown_table(header: list[str], align: str, rows: list[list[str]]) -> str:
    """Return a Markdown table; ``align`` has one character per column, ``l`` or ``r``."""
    rules = ["---:" if side == "r" else "---" for side in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rules) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str) -> None:
    """Replace the section between ``<!-- name:start -->`` and ``<!-- name:end -->``, or append it."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{body.rstrip()}\n{end}"
    page = BENCHMARKS_PAGE.read_text(encoding="utf-8") if BENCHMARKS_PAGE.is_file() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(page):
        page = pattern.sub(lambda _match: section, page)
    else:
        page = page.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS_PAGE.write_text(page, encoding="utf-8")


def save_results(name: str, results: list[dict], info: dict) -> Path:
    """Write the raw results and machine description as docs/benchmarks/NAME.json."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{name}.json"
    path.write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n", encoding="utf-8")
    return path


def pyplot():
    """Return matplotlib.pyplot with the file-only Agg backend (matplotlib is a benchmark-only dependency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> None:
    """Lay out ``figure`` and write it to ``path`` as a PNG at 100 dpi, creating the folder."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)

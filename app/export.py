"""Writing a summary to .txt, .md or .docx, atomically."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from synopsis.engine.counts import count
from synopsis.engine.files import write_bytes_atomic, write_text_atomic
from synopsis.engine.summarize import Summary, printable

log = logging.getLogger(__name__)

FORMATS = {"txt": "Plain text (*.txt)", "md": "Markdown (*.md)", "docx": "Word document (*.docx)"}
SENTENCES_NOTE = "Pages each sentence drew on, an indication from the model's attention, not a citation."


def _pages(pages: tuple[int, int] | None) -> str:
    if not pages:
        return "no page numbers"
    return f"p. {pages[0]}" if pages[0] == pages[1] else f"pp. {pages[0]}–{pages[1]}"


def facts_line(summary: Summary) -> str:
    """Return one line on what the summary was made from."""
    pages = f"{count(summary.pages, 'page')}, " if summary.pages else ""
    return (
        f"{pages}{count(summary.total_tokens, 'token')} in {count(len(summary.windows), 'window')}, "
        f"all of them read; model {summary.model}"
    )


def render_text(summary: Summary) -> str:
    return summary.text + "\n"


def render_markdown(summary: Summary) -> str:
    lines = [f"# Summary of {summary.file.name}", "", summary.text, "", f"_{facts_line(summary)}._", ""]
    if summary.sentences:
        lines += ["## Sentence sources", "", f"_{SENTENCES_NOTE}_", ""]
        lines += [f"- {_pages(sentence.pages)}: {sentence.text}" for sentence in summary.sentences]
        lines.append("")
    lines += ["## Windows", "", "| window | pages | tokens |", "|---:|---|---:|"]
    lines += [f"| {w.index + 1} | {_pages(w.pages)} | {w.tokens:,} |" for w in summary.windows]
    return "\n".join(lines) + "\n"


def render_docx(summary: Summary) -> bytes:
    from docx import Document as WordDocument  # noqa: PLC0415 - python-docx loads only when exporting

    word = WordDocument()
    word.add_heading(f"Summary of {summary.file.name}", level=1)
    # Summaries kept in the history from before control characters were
    # removed may still carry them, and XML cannot hold them.
    for paragraph in printable(summary.text).split("\n"):
        if paragraph.strip():
            word.add_paragraph(paragraph)
    facts = word.add_paragraph()
    facts.add_run(facts_line(summary) + ".").italic = True
    if summary.sentences:
        word.add_heading("Sentence sources", level=2)
        word.add_paragraph().add_run(SENTENCES_NOTE).italic = True
        for sentence in summary.sentences:
            word.add_paragraph(f"{_pages(sentence.pages)}: {printable(sentence.text)}", style="List Bullet")
    buffer = io.BytesIO()
    word.save(buffer)
    return buffer.getvalue()


def format_for(path: Path, default: str = "md") -> str:
    """Return the export format named by ``path``'s extension, else ``default``."""
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else default


def export_summary(summary: Summary, path: str | Path, export_format: str | None = None) -> Path:
    """Write ``summary`` to ``path`` in ``export_format`` (from the extension when None); return the path."""
    path = Path(path)
    export_format = export_format or format_for(path)
    if export_format not in FORMATS:
        raise ValueError(f"unknown export format {export_format!r}: use one of {', '.join(FORMATS)}")
    if path.suffix.lower() != f".{export_format}":
        path = path.with_name(path.name + f".{export_format}")
    if export_format == "docx":
        write_bytes_atomic(path, render_docx(summary))
    elif export_format == "md":
        write_text_atomic(path, render_markdown(summary))
    else:
        write_text_atomic(path, render_text(summary))
    log.info("exported summary of %s to %s", summary.file, path)
    return path

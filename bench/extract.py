"""Pages per second and peak memory of PDF text extraction: pdfplumber against the engine's reader.

For each PDF, one fresh subprocess extracts the text with pdfplumber's default
``page.extract_text()`` page by page, and another with
``synopsis.engine.documents.load_document``. Each reports its wall time and
peak resident memory (VmHWM, Linux only). The texts are then compared word by
word, where a word is a run of letters, digits and underscores (``\\w+``), so
that the comparison ignores line breaks, spacing and punctuation:

- overlap: the Jaccard index of the two word multisets, the sum of the smaller
  of the two counts of each word over the sum of the larger;
- recall: the share of pdfplumber's words (with multiplicity) found in ours;
- precision: the share of our words found in pdfplumber's;
- character 4-gram overlap and recall: the same two measures on the multisets
  of 4-character sequences of the text with all whitespace removed. pdfplumber's
  default tolerances glue words together on some PDFs ("AndreasGal"), which
  the word measures count as missing words; the 4-grams do not depend on spacing;
- body recall and body 4-gram recall: the two recalls against pdfplumber's
  text without the running headers and footers, found with the rule in
  ``synopsis.engine.documents.cleanup``, because the engine drops them on purpose.

    python bench/extract.py            # the three long PDFs; writes docs/
    python bench/extract.py --quick    # the 14-page paper only; prints the table
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DOCS,
    FIGURES,
    MIB,
    ROOT,
    describe_machine,
    machine,
    markdown_table,
    peak_rss_bytes,
    pyplot,
    run_child,
    save_results,
    write_section,
)

SECTION = "extract"
CORPUS = ROOT.parent / "shared" / "corpus" / "documents"
DOCUMENTS = (
    "mozilla_pdf.js__tracemonkey.pdf",
    "pdfminer_pdfminer.six__i1040nr.pdf",
    "Unstructured-IO_unstructured__pdf2image-memory-error-test-400p.pdf",
)
QUICK_DOCUMENT = "mozilla_pdf.js__tracemonkey.pdf"
GOAL_DOCUMENT = "Unstructured-IO_unstructured__pdf2image-memory-error-test-400p.pdf"
GOAL_SPEEDUP = 20.0
METHODS = ("pdfplumber", "engine")
WORD = re.compile(r"\w+")
WHITESPACE = re.compile(r"\s+")
GRAM = 4


def run_case(method: str, path: Path) -> dict:
    """Extract the text of ``path`` with ``method``; return time, pages, peak memory and the text."""
    if method == "pdfplumber":
        import pdfplumber

        started = time.perf_counter()
        with pdfplumber.open(path) as pdf:
            page_texts = [page.extract_text() or "" for page in pdf.pages]
            pages = len(pdf.pages)
        text = "\n".join(page_texts)
    else:
        from synopsis.engine.documents import load_document

        started = time.perf_counter()
        document = load_document(path)
        text = document.text
        page_texts = [text[span.start : span.end] for span in document.pages]
        pages = document.page_count or len(document.pages)
    seconds = time.perf_counter() - started
    return {
        "method": method,
        "document": path.name,
        "pages": pages,
        "seconds": seconds,
        "pages_per_second": pages / seconds,
        "peak_bytes": peak_rss_bytes(),
        "text": text,
        "page_texts": page_texts,
    }


def drop_running_lines(page_texts: list[str]) -> str:
    """Join ``page_texts`` without the running headers and footers that the engine's clean-up detects.

    Applies the rule in ``synopsis.engine.documents.cleanup`` to pdfplumber's
    pages, so the body-text recall compares like with like.
    """
    from synopsis.engine.documents.cleanup import edge_indices, find_running_keys, line_key

    pages = [text.splitlines() for text in page_texts]
    edge_keys = [
        {line_key(lines[index]) for index in edge_indices(len(lines))} for lines in pages if any(lines)
    ]
    running = find_running_keys(edge_keys)
    body_lines = []
    for lines in pages:
        edges = set(edge_indices(len(lines)))
        body_lines += [line for index, line in enumerate(lines) if index not in edges or line_key(line) not in running]
    return "\n".join(body_lines)


def compare_words(reference: str, candidate: str) -> dict:
    """Return the overlap, recall and precision of ``candidate``'s words against ``reference``'s."""
    expected = Counter(WORD.findall(reference))
    found = Counter(WORD.findall(candidate))
    common = sum((expected & found).values())
    union = sum((expected | found).values())
    reference_grams = character_grams(reference)
    candidate_grams = character_grams(candidate)
    common_grams = sum((reference_grams & candidate_grams).values())
    union_grams = sum((reference_grams | candidate_grams).values())
    return {
        "reference_words": sum(expected.values()),
        "candidate_words": sum(found.values()),
        "overlap": common / union if union else 1.0,
        "recall": common / sum(expected.values()) if expected else 1.0,
        "precision": common / sum(found.values()) if found else 1.0,
        "gram_overlap": common_grams / union_grams if union_grams else 1.0,
        "gram_recall": common_grams / sum(reference_grams.values()) if reference_grams else 1.0,
    }


def character_grams(text: str) -> Counter:
    """Return the multiset of GRAM-character sequences of ``text`` with its whitespace removed."""
    joined = WHITESPACE.sub("", text)
    return Counter(joined[start : start + GRAM] for start in range(len(joined) - GRAM + 1))


# Report --------------------------------------------------------------------------


def summarize(results: list[dict]) -> list[dict]:
    """Pair each document's two results and compare their texts; drop the texts."""
    rows = []
    for name in dict.fromkeys(row["document"] for row in results):
        by_method = {row["method"]: row for row in results if row["document"] == name}
        plumber, engine = by_method["pdfplumber"], by_method["engine"]
        row = {"document": name, "pdfplumber": plumber, "engine": engine}
        if "error" not in plumber and "error" not in engine:
            row["words"] = compare_words(plumber["text"], engine["text"])
            body = compare_words(drop_running_lines(plumber["page_texts"]), engine["text"])
            row["words"]["body_recall"] = body["recall"]
            row["words"]["body_gram_recall"] = body["gram_recall"]
            row["speedup"] = engine["pages_per_second"] / plumber["pages_per_second"]
        for side in (plumber, engine):
            side.pop("text", None)
            side.pop("page_texts", None)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        plumber, engine = row["pdfplumber"], row["engine"]
        if "words" not in row:
            errors = "; ".join(f"{m}: {row[m]['error']}" for m in METHODS if "error" in row[m])
            lines.append([row["document"]] + ["-"] * 14 + [errors])
            continue
        words = row["words"]
        lines.append(
            [
                row["document"],
                str(engine["pages"]),
                f"{plumber['pages_per_second']:.1f}",
                f"{engine['pages_per_second']:.1f}",
                f"{row['speedup']:.1f}x",
                f"{plumber['peak_bytes'] / MIB:.0f}",
                f"{engine['peak_bytes'] / MIB:.0f}",
                f"{words['reference_words']:,}",
                f"{words['candidate_words']:,}",
                f"{words['overlap']:.3f}",
                f"{words['recall']:.3f}",
                f"{words['precision']:.3f}",
                f"{words['gram_overlap']:.3f}",
                f"{words['gram_recall']:.3f}",
                f"{words['body_recall']:.3f}",
                f"{words['body_gram_recall']:.3f}",
                "",
            ]
        )
    header = [
        "document",
        "pages",
        "pdfplumber pages/s",
        "engine pages/s",
        "speed-up",
        "pdfplumber peak MiB",
        "engine peak MiB",
        "pdfplumber words",
        "engine words",
        "overlap",
        "recall",
        "precision",
        "4-gram overlap",
        "4-gram recall",
        "body recall",
        "body 4-gram recall",
        "note",
    ]
    return markdown_table(header, "lrrrrrrrrrrrrrrrl", lines)


def goal_line(rows: list[dict]) -> str:
    for row in rows:
        if row["document"] == GOAL_DOCUMENT and "speedup" in row:
            verdict = "met" if row["speedup"] >= GOAL_SPEEDUP else "missed"
            return (
                f"- Speed on the 400-page PDF, goal at least {GOAL_SPEEDUP:.0f}x pdfplumber's pages per second: "
                f"{row['speedup']:.1f}x, {verdict}. Recall of pdfplumber's words: {row['words']['recall']:.3f}, "
                f"of its character 4-grams: {row['words']['gram_recall']:.3f}; without the running headers and "
                f"footers: {row['words']['body_recall']:.3f} and {row['words']['body_gram_recall']:.3f}."
            )
    return "- The 400-page PDF was not measured in this run."


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    measured = [row for row in rows if "words" in row]
    labels = [f"{row['document'][:24]}...\n{row['engine']['pages']} pages" for row in measured]
    positions = range(len(measured))
    figure, (speed_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for axis, key, scale, label in (
        (speed_axis, "pages_per_second", 1, "pages per second (log)"),
        (memory_axis, "peak_bytes", MIB, "peak RSS (MiB)"),
    ):
        for offset, method in ((-0.2, "pdfplumber"), (0.2, "engine")):
            values = [row[method][key] / scale for row in measured]
            axis.bar([x + offset for x in positions], values, width=0.4, label=method)
        axis.set_xticks(list(positions), labels, fontsize=7)
        axis.set_ylabel(label)
        axis.grid(True, axis="y", alpha=0.3)
        axis.legend()
    speed_axis.set_yscale("log")
    figure.suptitle("PDF text extraction: pdfplumber extract_text() against load_document")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def write_docs(rows: list[dict], info: dict) -> None:
    from synopsis.engine.documents.cleanup import EDGE_LINES, ENOUGH_REPEATS, MIN_PAGE_SHARE, MIN_REPEATS

    plot_path = FIGURES / f"{SECTION}.png"
    plot(rows, plot_path)
    save_results(SECTION, rows, info)
    body = "\n".join(
        [
            "## PDF text extraction: pdfplumber against the engine's reader",
            "",
            describe_machine(info),
            "",
            "Each extraction runs in a fresh process: pdfplumber's default `page.extract_text()` on every "
            "page, against `synopsis.engine.documents.load_document`, which returns the cleaned text of the "
            "whole document. Peak RSS is the process's VmHWM, Python and imports included. Words are runs "
            "of `\\w+`, compared as multisets: overlap is the Jaccard index of the two multisets, recall the "
            "share of pdfplumber's words found in the engine's text, precision the share of the engine's "
            "words found in pdfplumber's. The engine drops running headers and footers and "
            "rejoins words hyphenated across lines, so a recall a little below 1 is expected. The character "
            "4-gram columns repeat the comparison on the text with whitespace removed, which does not "
            "penalize words that one extractor glues together and the other separates. A 4-gram that spans "
            "a line break changes when the two extractors order lines differently, so reading-order "
            "differences lower the 4-gram figures. The body columns "
            "compare against pdfplumber's text with the running headers and footers removed by the rule in "
            "`synopsis.engine.documents.cleanup`, so they measure the body text only. By that rule a line is "
            f"running when it is among the first or last {EDGE_LINES} of a page and its text, numbers aside, "
            f"repeats on {MIN_PAGE_SHARE:.0%} of the pages (at least {MIN_REPEATS}, at most {ENOUGH_REPEATS}).",
            "",
            format_table(rows),
            "",
            goal_line(rows),
            "",
            f"![Pages per second and peak memory]({plot_path.relative_to(DOCS).as_posix()})",
        ]
    )
    write_section(SECTION, body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="run the 14-page paper only and print the table")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating docs/")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per extraction (default: 600)")
    parser.add_argument(
        "--rewrite-docs", action="store_true", help="render docs/ again from the saved results, running nothing"
    )
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.rewrite_docs:
        saved = json.loads((FIGURES / f"{SECTION}.json").read_text(encoding="utf-8"))
        write_docs(saved["results"], saved["machine"])
        return 0

    if args.child:
        method, path = args.child
        print(json.dumps(run_case(method, Path(path))))
        return 0

    names = (QUICK_DOCUMENT,) if args.quick else DOCUMENTS
    results = []
    for name in names:
        path = CORPUS / name
        for method in METHODS:
            print(f"{method}: {name}", file=sys.stderr, flush=True)
            row = run_child(__file__, [method, str(path)], args.timeout)
            results.append({"method": method, "document": name, **row})
    rows = summarize(results)

    info = {**machine(), "command": ("python bench/extract.py " + " ".join(sys.argv[1:])).strip()}
    print(format_table(rows))
    print(goal_line(rows))
    if not args.quick and not args.no_write:
        write_docs(rows, info)
        print(f"wrote {DOCS / 'benchmarks.md'} and {FIGURES}/{SECTION}.*", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

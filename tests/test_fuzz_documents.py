"""Fuzz test of load_document on mutated copies of small corpus PDF and .docx files.

Contract checked for every mutant: ``load_document`` returns a Document or
raises a DocumentError subclass, within LOAD_TIMEOUT_S seconds and with the
loading process's peak resident memory under PEAK_MEMORY_LIMIT_MIB.

Loads run in one long-lived worker subprocess, so that a hang can be stopped
(the worker is killed and restarted) and a crash inside PDFium shows up as
a dead worker rather than killing pytest. A mutant that breaks the contract
fails the test with its mutation described. Once the reader is fixed, add it
to REGRESSION_FLIPS (or a test of its own). Those cases are rebuilt from the
corpus at test time, so no copy of a corpus file is kept in the repository.
"""

from __future__ import annotations

import io
import json
import queue
import struct
import subprocess
import sys
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "documents"
# Mutations that once broke the contract: corpus file, byte offset, new byte
# value, and what the reader then raised instead of a DocumentError.
REGRESSION_FLIPS = [
    ("apache_tika__testWORD_various.docx", 3617, 0xAD, "zlib.error from a corrupt deflate stream"),
    ("apache_tika__testWORD_various.docx", 2979, 0x01, "UnicodeDecodeError from a member name flagged UTF-8"),
    ("apache_tika__testWORD_various.docx", 13292, 0x01, "NotImplementedError from an unknown compression method"),
    ("mozilla_pdf.js__copy_paste_ligatures.pdf", 31838, 0x3D, "PdfiumError from a page that fails to load"),
]
FUZZED_FILES = [
    "mozilla_pdf.js__copy_paste_ligatures.pdf",
    "jsvine_pdfplumber__password-example.pdf",
    "apache_tika__testWORD_various.docx",
    "jgm_pandoc__track_changes_insertion.docx",
]
EXAMPLES_PER_FILE = 150

LOAD_TIMEOUT_S = 30.0
"""Time bound for one load. The files are under 50 kB, and a whole run of 150
mutants per file took about 10 s on a shared 2-core machine. The bound is
generous because the test machines' cores are shared."""
PEAK_MEMORY_LIMIT_MIB = 1024
"""Bound on the worker's peak resident set size (VmHWM, Linux only). The peak
is the maximum over all loads so far, so the first mutant that pushes it over
the bound is the one reported."""

# Worker: reads one path per line on stdin and writes one JSON result line per
# path on stdout, tagged so that stray output from native libraries is skipped.
RESULT_TAG = "FUZZ-RESULT "
WORKER_SOURCE = f"""
import json, sys, traceback
from synopsis.engine.documents import load_document
from synopsis.engine.errors import DocumentError

def peak_memory_kib():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None

for line in sys.stdin:
    path = line.rstrip("\\n")
    try:
        document = load_document(path)
        outcome, detail = "document", f"{{len(document.text)}} characters"
    except DocumentError as error:
        outcome, detail = "document_error", f"{{type(error).__name__}}: {{error}}"
    except BaseException:
        outcome, detail = "other_exception", traceback.format_exc()
    result = {{"outcome": outcome, "detail": detail, "peak_kib": peak_memory_kib()}}
    sys.stdout.write({RESULT_TAG!r} + json.dumps(result) + "\\n")
    sys.stdout.flush()
"""


class LoaderWorker:
    """A subprocess that loads documents on request, restarted after a hang or crash."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def _start(self) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER_SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._lines = queue.Queue()
        threading.Thread(target=self._read, args=(process, self._lines), daemon=True).start()
        return process

    @staticmethod
    def _read(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        for line in process.stdout:
            if line.startswith(RESULT_TAG):
                lines.put(line[len(RESULT_TAG) :])
        lines.put(None)  # end of output: the worker exited

    def load(self, path: Path) -> dict:
        """Load ``path`` in the worker and return its result, or a timeout or crash outcome."""
        if self._process is None or self._process.poll() is not None:
            self._process = self._start()
        self._process.stdin.write(f"{path}\n")
        self._process.stdin.flush()
        try:
            line = self._lines.get(timeout=LOAD_TIMEOUT_S)
        except queue.Empty:
            self.stop()
            return {"outcome": "timeout", "detail": f"no result after {LOAD_TIMEOUT_S} s", "peak_kib": None}
        if line is None:
            code = self._process.wait()
            self._process = None
            return {"outcome": "crash", "detail": f"worker exited with code {code}", "peak_kib": None}
        return json.loads(line)

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


@pytest.fixture(scope="module")
def worker():
    loader = LoaderWorker()
    yield loader
    loader.stop()


def contract_violation(result: dict) -> str | None:
    """Return why ``result`` breaks the loading contract, or None when it keeps it."""
    if result["outcome"] not in ("document", "document_error"):
        return f"{result['outcome']}: {result['detail']}"
    peak = result["peak_kib"]
    if peak is not None and peak > PEAK_MEMORY_LIMIT_MIB * 1024:
        return f"peak resident memory {peak // 1024} MiB exceeds {PEAK_MEMORY_LIMIT_MIB} MiB"
    return None


# Mutations -----------------------------------------------------------------------


@dataclass(frozen=True)
class Truncate:
    keep_fraction: float

    def apply(self, data: bytes) -> bytes:
        return data[: int(len(data) * self.keep_fraction)]


@dataclass(frozen=True)
class FlipBytes:
    flips: tuple[tuple[float, int], ...]
    """(position as a fraction of the file length, XOR mask from 1 to 255)."""

    def apply(self, data: bytes) -> bytes:
        mutated = bytearray(data)
        for fraction, mask in self.flips:
            mutated[min(int(len(data) * fraction), len(data) - 1)] ^= mask
        return bytes(mutated)


def read_members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info, archive.read(info.filename)) for info in archive.infolist()]


def write_members(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore", UserWarning)  # a renamed member may duplicate another's name
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


@dataclass(frozen=True)
class RenameMember:
    member: int
    new_name: str

    def apply(self, data: bytes) -> bytes:
        members = read_members(data)
        target = self.member % len(members)
        return write_members(
            [(self.new_name if i == target else info.filename, content) for i, (info, content) in enumerate(members)]
        )


@dataclass(frozen=True)
class InflateMember:
    """Replace a member's content with a repetition of it, followed by ``padding_count`` copies of ``padding``."""

    member: int
    repeat: int
    padding: bytes
    padding_count: int

    def apply(self, data: bytes) -> bytes:
        members = read_members(data)
        target = self.member % len(members)
        return write_members(
            [
                (info.filename, self._inflate(content) if i == target else content)
                for i, (info, content) in enumerate(members)
            ]
        )

    def _inflate(self, content: bytes) -> bytes:
        return content * self.repeat + self.padding * self.padding_count


@dataclass(frozen=True)
class FlipMemberBytes:
    """Flip bytes inside a member's uncompressed content, so the XML (not the zip) is damaged."""

    member: int
    flips: FlipBytes

    def apply(self, data: bytes) -> bytes:
        members = read_members(data)
        target = self.member % len(members)
        return write_members(
            [
                (info.filename, self.flips.apply(content) if i == target and content else content)
                for i, (info, content) in enumerate(members)
            ]
        )


@dataclass(frozen=True)
class MisstateMemberSize:
    """Overwrite the uncompressed size a central directory entry declares."""

    entry: int
    declared_size: int

    def apply(self, data: bytes) -> bytes:
        offsets = []
        position = data.find(b"PK\x01\x02")
        while position >= 0:
            offsets.append(position)
            position = data.find(b"PK\x01\x02", position + 4)
        if not offsets:
            return data
        at = offsets[self.entry % len(offsets)] + 24  # uncompressed size field of the entry
        return data[:at] + struct.pack("<I", self.declared_size) + data[at + 4 :]


fractions = st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False)
flip_bytes = st.builds(
    FlipBytes, st.lists(st.tuples(fractions, st.integers(1, 255)), min_size=1, max_size=8).map(tuple)
)
byte_mutations = st.one_of(st.builds(Truncate, fractions), flip_bytes)
member_names = st.sampled_from(
    [
        "word/document.xml",
        "word/styles.xml",
        "word/_rels/document.xml.rels",
        "[Content_Types].xml",
        "_rels/.rels",
        "word/document.xml.bak",
        "WORD/DOCUMENT.XML",
        "../outside.xml",
        "/absolute.xml",
        "word/",
    ]
)
docx_mutations = st.one_of(
    byte_mutations,
    st.builds(RenameMember, st.integers(0, 50), member_names),
    st.builds(
        InflateMember,
        st.integers(0, 50),
        st.integers(1, 200),
        st.sampled_from([b"\0", b"<w:p>", b"\xff\xfe garbage"]),
        st.sampled_from([0, 1, 100_000, 2_000_000]),
    ),
    st.builds(FlipMemberBytes, st.integers(0, 50), flip_bytes),
    st.builds(MisstateMemberSize, st.integers(0, 50), st.sampled_from([0, 1, 100, 2**31, 2**32 - 1])),
)


def check_mutant(worker: LoaderWorker, source: Path, mutation, folder: Path) -> None:
    mutant = folder / f"mutant{source.suffix}"
    mutant.write_bytes(mutation.apply(source.read_bytes()))
    result = worker.load(mutant)
    problem = contract_violation(result)
    if problem is not None:
        # Hypothesis replays the shrunk failing example last, so the file left
        # here is the smallest mutant found.
        pytest.fail(f"{mutation} of {source.name} broke the contract (mutant kept at {mutant}): {problem}")


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"document corpus not found at {CORPUS}")
@pytest.mark.parametrize("name", FUZZED_FILES)
def test_mutants_keep_contract(name, worker, tmp_path_factory):
    source = CORPUS / name
    if not source.is_file():
        pytest.skip(f"corpus file {source} not found")
    folder = tmp_path_factory.mktemp("mutants")
    mutations = docx_mutations if source.suffix == ".docx" else byte_mutations

    @settings(
        max_examples=EXAMPLES_PER_FILE,
        deadline=None,
        database=None,
        # A fixed sequence of examples: CI must not turn red on a new random draw.
        # Set it to False locally to explore new random mutants.
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(mutation=mutations)
    def run(mutation) -> None:
        check_mutant(worker, source, mutation, folder)

    run()


@pytest.mark.parametrize(("name", "offset", "value", "broke"), REGRESSION_FLIPS)
def test_found_mutants_keep_contract(worker, tmp_path, name, offset, value, broke):
    source = CORPUS / name
    if not source.is_file():
        pytest.skip(f"corpus file {source} not found")
    data = bytearray(source.read_bytes())
    data[offset] = value
    mutant = tmp_path / name
    mutant.write_bytes(bytes(data))
    problem = contract_violation(worker.load(mutant))
    assert problem is None, f"{name} with byte {offset} set to {value:#x} (once: {broke}): {problem}"

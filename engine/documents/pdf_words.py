"""Words and segments of a PDF page, read from PDFium in bulk.

A segment is a run of words on one line with no gap wider than about one line
height (see :mod:`.pdf_layout`, which puts segments in reading order). The
reader keeps the number of Python-level steps per character low, because a
loop over characters dominated the reading time:

* one ``FPDFText_GetText`` call fetches the page's characters;
* numpy finds the words, the runs of characters between white space;
* PDFium's loose box is fetched for the first and last character of each
  word only, through ``map`` over a C function pointer, and numpy groups the
  words into segments.

A word's box is the union of the loose boxes of its first and last
characters.

NOTE: PDFium makes the loose box of a character that reaches above the
font's ascent, such as "/", taller than its neighbours'. Such a character
inside a word does not widen the word's box. So line heights and gaps can be
a fraction of a point off those of a reader that measures every character,
and a few paragraph breaks and table layouts on the corpus PDFs shift.
"""

from __future__ import annotations

import ctypes
import math
import re
import time
from itertools import repeat

import numpy as np
import pypdfium2.raw as pdfium_c

from .pdf_layout import SEGMENT_GAP, PageTimeout, Segment

ANGLE_SAMPLE = 16
"""Number of words whose first character's angle is sampled to find a page's text direction."""
WIDE_WORD = 0.8
"""A word wider than this many line heights per character is read one character at a time."""
BOX_BATCH = 4096
"""Character boxes fetched between two checks of the page's deadline."""

# Character classes, indexed by code point up to U+FFFF.
_WORD, _SPACE, _BREAK, _SKIP, _HYPHEN = range(5)


def _character_classes() -> np.ndarray:
    table = np.full(0x10000, _WORD, dtype=np.uint8)
    # Every character that str.isspace() accepts lies below U+3001.
    table[[code for code in range(0x3001) if chr(code).isspace()]] = _SPACE
    # PDFium ends each line it finds with "\r\n".
    table[[0x0D, 0x0A]] = _BREAK
    # NUL is PDFium's "no Unicode"; surrogate halves have no box of their own.
    table[0] = _SKIP
    table[0xD800:0xE000] = _SKIP
    # PDFium writes U+FFFE (U+0002 through FPDFText_GetUnicode) for a hyphen
    # it found at the end of a line, often with no line break after it, so
    # the hyphen ends the word. The clean-up decides about joining.
    table[[0xFFFE, 0x02]] = _HYPHEN
    return table


_CLASSES = _character_classes()
_SEGMENT_TEXT = str.maketrans(
    {"\ufffe": "-", "\x02": "-", "\x00": None} | {chr(code): None for code in range(0xD800, 0xE000)}
)
_SEGMENT_TEXT_KEEP_NUL = str.maketrans({"\ufffe": "-", "\x02": "-"})
_WHITESPACE_RUN = re.compile(r"\s+")

# FPDFText_GetLooseCharBox and FPDFText_GetCharAngle with plain addresses as
# arguments, so that ``map`` can call them without a Python-level loop.
# pypdfium2 loads PDFium with ctypes.CDLL, so its functions use the C calling
# convention, as CFUNCTYPE prototypes do.
_LOOSE_BOX = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)(
    ctypes.cast(pdfium_c.FPDFText_GetLooseCharBox, ctypes.c_void_p).value
)
_CHAR_ANGLE = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_void_p, ctypes.c_int)(
    ctypes.cast(pdfium_c.FPDFText_GetCharAngle, ctypes.c_void_p).value
)


def page_characters(textpage: pdfium_c.FPDF_TEXTPAGE) -> str:
    """Return the characters of ``textpage``, one ``str`` character per PDFium character index.

    One ``FPDFText_GetText`` call fetches them all. That call leaves out some
    characters, such as control characters that are not hyphens, and writes a
    character outside the Basic Multilingual Plane as two UTF-16 code units.
    When the result does not line up with the character indices, the page is
    read one ``FPDFText_GetUnicode`` call per character instead, one code unit
    per character.
    """
    count = pdfium_c.FPDFText_CountChars(textpage)
    if count <= 0:
        return ""
    buffer = (ctypes.c_ushort * (count + 1))()
    written = pdfium_c.FPDFText_GetText(textpage, 0, count, buffer)
    if written == count + 1:  # the count includes the terminating NUL
        text = ctypes.string_at(buffer, 2 * count).decode("utf-16-le", "surrogatepass")
        if len(text) == count and all(_same_character(textpage, text, index) for index in (count // 2, count - 1)):
            return text
    return "".join(chr(pdfium_c.FPDFText_GetUnicode(textpage, index)) for index in range(count))


def _same_character(textpage: pdfium_c.FPDF_TEXTPAGE, text: str, index: int) -> bool:
    """Return whether ``text[index]`` is the character PDFium reports at ``index``."""
    code = pdfium_c.FPDFText_GetUnicode(textpage, index)
    # GetText writes a line-end hyphen as U+FFFE where GetUnicode returns U+0002.
    return ord(text[index]) == code or (code == 0x02 and text[index] == "\ufffe")


def read_segments(textpage: pdfium_c.FPDF_TEXTPAGE, text: str, deadline: float = math.inf) -> list[Segment]:
    """Group the words of ``textpage`` into segments, in stream order, in upright display coordinates.

    ``text`` is the page's characters from :func:`page_characters`. Raises
    :class:`PageTimeout` after ``deadline`` (a ``time.monotonic()`` value).
    """
    if not text:
        return []
    # One code point per character: FPDFText_GetUnicode may report code
    # points above U+FFFF, which count as word characters.
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    classes = _CLASSES[np.minimum(codes, 0xFFFF)]
    starts, ends = _word_spans(classes)
    if not len(starts):
        return []
    rotation = text_rotation(textpage, starts)
    starts, ends, first, last = _word_boxes(textpage, starts, ends, rotation, deadline)

    # PDFium writes a space between characters that are apart, yet not
    # always, for example between two table cells. A word much wider than its
    # characters can be is read again one character at a time, so that the
    # gap can end a segment.
    width = np.maximum(first[2], last[2]) - np.minimum(first[0], last[0])
    wide = (ends - starts > 1) & (width > WIDE_WORD * (ends - starts) * (first[3] - first[1]))
    if wide.any():
        starts, ends = _word_spans(classes, _inside(len(classes), starts[wide], ends[wide]))
        starts, ends, first, last = _word_boxes(textpage, starts, ends, rotation, deadline)
    if not len(starts):
        return []
    return _group_words(text, classes, starts, ends, first, last)


def _word_spans(classes: np.ndarray, split: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return the start and end indices of the words; every character in ``split`` is a word of its own."""
    in_word = (classes == _WORD) | (classes == _HYPHEN)
    hyphen = classes == _HYPHEN
    before = np.concatenate(([False], in_word[:-1] & ~hyphen[:-1]))
    after = np.concatenate((in_word[1:], [False]))
    begins = in_word & ~before
    finishes = in_word & (~after | hyphen)
    if split is not None:
        begins |= in_word & split
        finishes |= in_word & split
    return np.flatnonzero(begins), np.flatnonzero(finishes) + 1


def _inside(length: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Return a mask of the characters that lie in one of the spans ``[starts[i], ends[i])``."""
    change = np.zeros(length + 1, dtype=np.int32)
    np.add.at(change, starts, 1)
    np.add.at(change, ends, -1)
    return np.cumsum(change[:-1]) > 0


def text_rotation(textpage: pdfium_c.FPDF_TEXTPAGE, starts: np.ndarray) -> int:
    """Return the clockwise turn (0, 90, 180 or 270) that makes most sampled words upright.

    The turn comes from the angle of the first character of up to
    ANGLE_SAMPLE words spread over the page (``starts`` contains the index
    of each word's first character).
    """
    sample = starts[:: max(1, len(starts) // ANGLE_SAMPLE)].tolist()
    address = ctypes.cast(textpage, ctypes.c_void_p).value
    angles = np.fromiter(map(_CHAR_ANGLE, repeat(address, len(sample)), sample), dtype=np.float64, count=len(sample))
    angles = angles[angles >= 0]  # pdfium returns -1 on error
    if not len(angles):
        return 0
    votes = np.bincount(np.round(np.degrees(angles) / 90).astype(np.int64) % 4, minlength=4)
    # pdfium measures the angle clockwise, so text at 270 needs a 90 turn.
    quadrant = int(np.argmax(votes))
    return (4 - quadrant) % 4 * 90


def _word_boxes(
    textpage: pdfium_c.FPDF_TEXTPAGE, starts: np.ndarray, ends: np.ndarray, rotation: int, deadline: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the words whose boxes PDFium reports, with the display boxes of their first and last characters.

    Each box is an array of shape (4, words): x0, y0, x1, y1 in display
    coordinates, y growing upwards.
    """
    # A word of one character needs one box, so its last character's box
    # is taken from the first half of ``indices``.
    several = np.flatnonzero(ends - starts > 1)
    indices = np.concatenate((starts, ends[several] - 1))
    boxes = np.empty((len(indices), 4), dtype=np.float32)  # FS_RECTF: left, top, right, bottom
    found = np.empty(len(indices), dtype=bool)
    address = ctypes.cast(textpage, ctypes.c_void_p).value
    base = boxes.ctypes.data
    for batch in range(0, len(indices), BOX_BATCH):
        if time.monotonic() > deadline:
            raise PageTimeout
        chunk = indices[batch : batch + BOX_BATCH].tolist()
        first_address = base + 16 * batch
        box_addresses = range(first_address, first_address + 16 * len(chunk), 16)
        calls = map(_LOOSE_BOX, repeat(address, len(chunk)), chunk, box_addresses)
        found[batch : batch + len(chunk)] = np.fromiter(calls, dtype=np.int32, count=len(chunk)) != 0
    words = len(starts)
    last_of_word = np.arange(words)
    last_of_word[several] = words + np.arange(len(several))
    display = _to_display(boxes.astype(np.float64), rotation)
    keep = found[:words] & found[last_of_word]
    first, last = display[:, :words], display[:, last_of_word]
    return starts[keep], ends[keep], first[:, keep], last[:, keep]


def _to_display(boxes: np.ndarray, rotation: int) -> np.ndarray:
    """Turn boxes (rows of left, top, right, bottom in PDF user space) clockwise by ``rotation`` degrees.

    Returns an array of shape (4, boxes): x0, y0, x1, y1, y growing upwards.
    """
    left, top, right, bottom = boxes.T
    if rotation == 90:
        return np.stack((bottom, -right, top, -left))
    if rotation == 180:
        return np.stack((-right, -top, -left, -bottom))
    if rotation == 270:
        return np.stack((-top, left, -bottom, right))
    return np.stack((left, bottom, right, top))


def _group_words(
    text: str, classes: np.ndarray, starts: np.ndarray, ends: np.ndarray, first: np.ndarray, last: np.ndarray
) -> list[Segment]:
    """Group consecutive words into segments.

    A word starts a new segment after a line break, or when it overlaps the
    previous word vertically by less than half the smaller height. It also
    starts one when it lies further from the previous word than SEGMENT_GAP
    times the smaller of the two neighbouring characters' heights.

    NOTE: a reader that compares each character with the whole open segment
    joins a little more: in the corpus, only a heading whose second line
    starts far left of the first line's last word splits differently.
    """
    x0 = np.minimum(first[0], last[0])
    y0 = np.minimum(first[1], last[1])
    x1 = np.maximum(first[2], last[2])
    y1 = np.maximum(first[3], last[3])
    first_height = np.maximum(first[3] - first[1], 0.1)
    last_height = np.maximum(last[3] - last[1], 0.1)

    breaks = np.concatenate(([0], np.cumsum(classes == _BREAK)))
    line_break = breaks[starts[1:]] > breaks[ends[:-1]]
    # The smaller height of the two characters sets the limit, so a large
    # heading does not swallow a gutter next to body text.
    limit = SEGMENT_GAP * np.minimum(first_height[1:], last_height[:-1])
    same_line = _vertical_overlap(y0[:-1], y1[:-1], first[1][1:], first[3][1:]) >= 0.5
    near = (first[0][1:] - x1[:-1] <= limit) & (x0[:-1] - first[2][1:] <= limit)
    begins = np.flatnonzero(np.concatenate(([True], line_break | ~same_line | ~near)))

    lefts = np.minimum.reduceat(x0, begins).tolist()
    bottoms = np.minimum.reduceat(y0, begins).tolist()
    rights = np.maximum.reduceat(x1, begins).tolist()
    tops = np.maximum.reduceat(y1, begins).tolist()
    texts = _segment_texts(text, classes, starts[begins], ends[np.concatenate((begins[1:], [len(starts)])) - 1])
    return [Segment(*fields) for fields in zip(lefts, bottoms, rights, tops, texts)]


def _segment_texts(text: str, classes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[str]:
    """Return the texts ``text[starts[i]:ends[i]]``, each white-space run as one space, hyphens written as "-"."""
    slices = [text[start:end] for start, end in zip(starts.tolist(), ends.tolist())]
    if (classes == _SKIP).any():
        return [_WHITESPACE_RUN.sub(" ", piece.translate(_SEGMENT_TEXT)) for piece in slices]
    # One substitution over all segments, joined by NUL, which the page lacks.
    return _WHITESPACE_RUN.sub(" ", "\x00".join(slices).translate(_SEGMENT_TEXT_KEEP_NUL)).split("\x00")


def _vertical_overlap(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """Return the overlap of the ranges [a0, a1] and [b0, b1] as a share of the smaller one.

    Where the smaller range is empty, the share is 1 if the ranges touch and 0 otherwise.
    """
    smaller = np.minimum(a1 - a0, b1 - b0)
    shared = np.maximum(0.0, np.minimum(a1, b1) - np.maximum(a0, b0))
    touching = ((a0 <= b0) & (b0 <= a1)) | ((b0 <= a0) & (a0 <= b1))
    return np.where(smaller > 0, shared / np.where(smaller > 0, smaller, 1.0), touching.astype(np.float64))

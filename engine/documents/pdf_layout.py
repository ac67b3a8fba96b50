"""Reading order for a PDF page from pdfium's characters and their boxes.

pdfium returns characters in content-stream order. That order is right for
most single-column pages, but some producers draw a line of every column
before moving down (the IRS instructions in the corpus do), and reading it
as-is interleaves the columns. So the page is rebuilt from geometry:

1. Characters are grouped into *segments*: runs on one line with no gap wider
   than about one line height. A column gutter therefore ends a segment, while
   word spaces, even in justified text, do not.
2. The segments are split by recursive XY-cut. A region is cut at its
   widest blank vertical strip (a gutter) if it has one, else at its widest
   blank horizontal band. The parts are read left to right or top to bottom. A vertical cut is only taken when both sides look like columns
   of prose (long segments). That keeps a table's columns together, so a
   table reads row by row.
3. The segments of each final region are grouped into lines by vertical
   overlap and each line is read left to right.

Boxes are first turned so that most characters stand upright. The turn
comes from the characters' own angle, not the page's /Rotate entry, because
producers use /Rotate both ways. In the corpus, one page with /Rotate 90 draws
rotated text that the entry turns upright. Another draws upright text that
the entry turns on its side.
"""

from __future__ import annotations

import ctypes
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field

import pypdfium2.raw as pdfium_c

SEGMENT_GAP = 1.0
"""A horizontal gap wider than this many line heights ends a segment."""
MIN_GUTTER = 0.5
"""A vertical cut needs a blank strip at least this many line heights wide."""
COLUMN_MIN_WIDTH = 6.0
"""Segment width, in line heights, from which a segment counts as a line of prose."""
COLUMN_MIN_PROSE_SHARE = 0.3
"""Share of prose segments that one side of a vertical cut needs. It is below
one half so that a column with a code listing or figure labels still counts."""
COLUMN_MIN_SEGMENTS = 3
PARAGRAPH_GAP = 0.8
"""A blank band taller than this many line heights between regions becomes an empty line."""
MAX_SEGMENTS_FOR_CUT = 4000
"""Pages with more segments skip the XY-cut (it is quadratic) and read line by line."""


@dataclass
class Segment:
    x0: float
    y0: float
    x1: float
    y1: float
    parts: list[str] = field(default_factory=list)

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def text(self) -> str:
        return "".join(self.parts).strip()


def _to_display(left: float, bottom: float, right: float, top: float, rotation: int) -> tuple[float, float, float, float]:
    """Turn a box in PDF user space clockwise by ``rotation`` degrees (y grows upwards)."""
    if rotation == 90:
        return bottom, -right, top, -left
    if rotation == 180:
        return -right, -top, -left, -bottom
    if rotation == 270:
        return -top, left, -bottom, right
    return left, bottom, right, top


ANGLE_SAMPLE = 400
"""Number of characters whose angle is sampled to find a page's text direction."""


def text_rotation(textpage: pdfium_c.FPDF_TEXTPAGE) -> int:
    """Return the clockwise turn (0, 90, 180 or 270) that makes most text upright."""
    count = pdfium_c.FPDFText_CountChars(textpage)
    if count <= 0:
        return 0
    step = max(1, count // ANGLE_SAMPLE)
    votes: Counter[int] = Counter()
    for index in range(0, count, step):
        code = pdfium_c.FPDFText_GetUnicode(textpage, index)
        if code == 0 or chr(code).isspace() or pdfium_c.FPDFText_IsGenerated(textpage, index) == 1:
            continue
        angle = pdfium_c.FPDFText_GetCharAngle(textpage, index)
        if angle < 0:  # pdfium returns -1 on error
            continue
        votes[round(math.degrees(angle) / 90) % 4] += 1
    if not votes:
        return 0
    # pdfium measures the angle clockwise, so text at 270 needs a 90 turn.
    quadrant = votes.most_common(1)[0][0]
    return (4 - quadrant) % 4 * 90


def _vertical_overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    smaller = min(a1 - a0, b1 - b0)
    if smaller <= 0:
        return 1.0 if (a0 <= b0 <= a1 or b0 <= a0 <= b1) else 0.0
    return max(0.0, min(a1, b1) - max(a0, b0)) / smaller


def read_segments(textpage: pdfium_c.FPDF_TEXTPAGE, rotation: int) -> list[Segment]:
    """Group the characters of ``textpage`` into segments, in stream order.

    ``rotation`` is the clockwise turn from :func:`text_rotation`.
    """
    count = pdfium_c.FPDFText_CountChars(textpage)
    rect = pdfium_c.FS_RECTF()
    rect_ref = ctypes.byref(rect)
    segments: list[Segment] = []
    current: Segment | None = None
    pending_space = False
    last_height = 0.0

    for index in range(count):
        code = pdfium_c.FPDFText_GetUnicode(textpage, index)
        if code == 0 or 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        if char in "\r\n":
            current = None
            pending_space = False
            continue
        if char.isspace():
            pending_space = current is not None
            continue
        if char in "\ufffe\x02":
            # pdfium writes U+FFFE (older builds U+0002) for a hyphen it
            # found at the end of a line; the clean-up decides about joining.
            char = "-"
        if not pdfium_c.FPDFText_GetLooseCharBox(textpage, index, rect_ref):
            continue
        x0, y0, x1, y1 = _to_display(rect.left, rect.bottom, rect.right, rect.top, rotation)
        height = max(y1 - y0, 0.1)

        if current is not None:
            # The smaller height of the two characters sets the limit, so a
            # large heading does not swallow a gutter next to body text.
            limit = SEGMENT_GAP * min(height, last_height)
            same_line = _vertical_overlap(current.y0, current.y1, y0, y1) >= 0.5
            near = x0 - current.x1 <= limit and current.x0 - x1 <= limit
            if same_line and near:
                if pending_space:
                    current.parts.append(" ")
                current.parts.append(char)
                current.x0, current.x1 = min(current.x0, x0), max(current.x1, x1)
                current.y0, current.y1 = min(current.y0, y0), max(current.y1, y1)
                pending_space = False
                last_height = height
                continue
        current = Segment(x0, y0, x1, y1, [char])
        segments.append(current)
        pending_space = False
        last_height = height
    return segments


def _largest_gap(intervals: list[tuple[float, float]]) -> tuple[float, float]:
    """Return (width, position) of the widest gap between the covered intervals."""
    intervals.sort()
    best_width, best_position = 0.0, 0.0
    reach = intervals[0][1]
    for start, end in intervals[1:]:
        if start > reach and start - reach > best_width:
            best_width, best_position = start - reach, (start + reach) / 2
        reach = max(reach, end)
    return best_width, best_position


def _looks_like_prose(segments: list[Segment], line_height: float) -> bool:
    if len(segments) < COLUMN_MIN_SEGMENTS:
        return False
    long_segments = sum(1 for segment in segments if segment.width >= COLUMN_MIN_WIDTH * line_height)
    return long_segments >= COLUMN_MIN_PROSE_SHARE * len(segments)


def _split(region: list[Segment], line_height: float) -> list[list[Segment]] | None:
    """Cut ``region`` in two at its widest gap, in reading order, or return None for a leaf."""
    if len(region) < 2:
        return None
    vertical_width, vertical_at = _largest_gap([(s.x0, s.x1) for s in region])
    horizontal_width, horizontal_at = _largest_gap([(s.y0, s.y1) for s in region])

    if vertical_width >= MIN_GUTTER * line_height:
        left = [s for s in region if s.x1 <= vertical_at]
        right = [s for s in region if s.x1 > vertical_at]
        if _looks_like_prose(left, line_height) and _looks_like_prose(right, line_height):
            return [left, right]
    if horizontal_width > 0:
        top = [s for s in region if s.y0 >= horizontal_at]
        bottom = [s for s in region if s.y0 < horizontal_at]
        return [top, bottom]
    return None


def physical_lines(region: list[Segment]) -> list[list[Segment]]:
    """Group segments into lines by vertical overlap, top to bottom, each left to right."""
    ordered = sorted(region, key=lambda s: -s.y1)
    lines: list[list[Segment]] = []
    bounds: list[list[float]] = []
    for segment in ordered:
        if bounds and _vertical_overlap(bounds[-1][0], bounds[-1][1], segment.y0, segment.y1) >= 0.5:
            lines[-1].append(segment)
            bounds[-1][0] = min(bounds[-1][0], segment.y0)
            bounds[-1][1] = max(bounds[-1][1], segment.y1)
        else:
            lines.append([segment])
            bounds.append([segment.y0, segment.y1])
    return [sorted(line, key=lambda s: s.x0) for line in lines]


def line_text(line: list[Segment]) -> str:
    return " ".join(segment.text for segment in line)


def _region_lines(region: list[Segment]) -> list[str]:
    return [line_text(line) for line in physical_lines(region)]


def layout_lines(segments: list[Segment]) -> list[str]:
    """Return the lines of a page in reading order; empty strings mark paragraph gaps."""
    if not segments:
        return []
    line_height = statistics.median(segment.height for segment in segments)
    if len(segments) > MAX_SEGMENTS_FOR_CUT:
        return _region_lines(segments)

    leaves: list[list[Segment]] = []
    stack = [segments]
    while stack:
        region = stack.pop()
        parts = _split(region, line_height)
        if parts is None:
            leaves.append(region)
        else:
            stack.extend(reversed(parts))

    lines: list[str] = []
    previous: tuple[float, float, float] | None = None  # x0, x1, y0 of the last leaf
    for leaf in leaves:
        x0 = min(s.x0 for s in leaf)
        x1 = max(s.x1 for s in leaf)
        y0 = min(s.y0 for s in leaf)
        y1 = max(s.y1 for s in leaf)
        if previous is not None and lines and lines[-1]:
            same_column = x0 < previous[1] and previous[0] < x1
            if same_column and previous[2] - y1 > PARAGRAPH_GAP * line_height:
                lines.append("")
        lines.extend(_region_lines(leaf))
        previous = (x0, x1, y0)
    return lines

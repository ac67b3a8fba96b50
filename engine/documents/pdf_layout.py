"""Reading order for a PDF page from the segments that :mod:`.pdf_words` reads.

pdfium returns characters in content-stream order. That order is right for
most single-column pages, but some producers draw a line of every column
before moving down (the IRS instructions in the corpus do), and reading it
as-is interleaves the columns. So the page is rebuilt from geometry:

1. Words are grouped into *segments*: runs on one line with no gap wider
   than about one line height (in :mod:`.pdf_words`). A column gutter
   therefore ends a segment, while word spaces, even in justified text, do not.
2. The segments are split by recursive XY-cut. A region is cut at its
   widest blank vertical strip (a gutter) if it has one, else at its widest
   blank horizontal band. The parts are read left to right or top to bottom.
   A vertical cut is only taken when both sides look like columns
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

import math
import statistics
import time
from dataclasses import dataclass
from operator import attrgetter

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


@dataclass(slots=True)
class Segment:
    """A run of words on one line with no wide gap, and its box in display coordinates (y grows upwards)."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def width(self) -> float:
        return self.x1 - self.x0


class PageTimeout(Exception):
    """Raised when reading or laying out a page runs past its deadline (a ``time.monotonic()`` value)."""


def _vertical_overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    smaller = min(a1 - a0, b1 - b0)
    if smaller <= 0:
        return 1.0 if (a0 <= b0 <= a1 or b0 <= a0 <= b1) else 0.0
    return max(0.0, min(a1, b1) - max(a0, b0)) / smaller


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


def _cannot_cut_vertically(region: list[Segment], line_height: float) -> bool:
    """Return True when no vertical cut is possible in ``region`` or in any part of it.

    A vertical cut puts at least one prose segment on each side of a blank
    strip at least MIN_GUTTER line heights wide. So it needs two prose
    segments, one ending at least that far left of where the other starts,
    and a part of the region has no pair that the whole region lacks.
    """
    if len(region) < 2 * COLUMN_MIN_SEGMENTS:
        return True
    prose = [segment for segment in region if segment.width >= COLUMN_MIN_WIDTH * line_height]
    if len(prose) < 2:
        return True
    return max(segment.x0 for segment in prose) - min(segment.x1 for segment in prose) < MIN_GUTTER * line_height


def _bands(region: list[Segment]) -> list[list[Segment]]:
    """Split ``region`` at every blank horizontal band, top to bottom; each band keeps the region's order.

    These are the leaves that horizontal cuts alone would produce.
    """
    order = sorted(range(len(region)), key=lambda index: region[index].y0)
    band_of = [0] * len(region)
    band = 0
    reach = region[order[0]].y1
    for index in order:
        if region[index].y0 > reach:
            band += 1
        band_of[index] = band
        reach = max(reach, region[index].y1)
    bands: list[list[Segment]] = [[] for _ in range(band + 1)]
    for segment, number in zip(region, band_of):
        bands[number].append(segment)
    bands.reverse()
    return bands


def physical_lines(region: list[Segment]) -> list[list[Segment]]:
    """Group segments into lines by vertical overlap, top to bottom, each left to right."""
    if len(region) <= 1:
        return [region] if region else []
    # Sorting is stable, also with reverse=True, so equal keys keep the stream order.
    ordered = sorted(region, key=attrgetter("y1"), reverse=True)
    lines: list[list[Segment]] = [[ordered[0]]]
    bottom, top = ordered[0].y0, ordered[0].y1  # the last line's vertical extent
    for segment in ordered[1:]:
        if _vertical_overlap(bottom, top, segment.y0, segment.y1) >= 0.5:
            lines[-1].append(segment)
            bottom, top = min(bottom, segment.y0), max(top, segment.y1)
        else:
            lines.append([segment])
            bottom, top = segment.y0, segment.y1
    return [sorted(line, key=attrgetter("x0")) if len(line) > 1 else line for line in lines]


def line_text(line: list[Segment]) -> str:
    return " ".join(segment.text for segment in line)


def _region_lines(region: list[Segment]) -> list[str]:
    return [line_text(line) for line in physical_lines(region)]


def _bounds(region: list[Segment]) -> tuple[float, float, float, float]:
    """Return x0, y0, x1, y1 of the box around the segments of ``region``."""
    if len(region) == 1:
        only = region[0]
        return only.x0, only.y0, only.x1, only.y1
    return (
        min([segment.x0 for segment in region]),
        min([segment.y0 for segment in region]),
        max([segment.x1 for segment in region]),
        max([segment.y1 for segment in region]),
    )


def layout_lines(segments: list[Segment], deadline: float = math.inf) -> list[str]:
    """Return the lines of a page in reading order; empty strings mark paragraph gaps.

    Raises :class:`PageTimeout` when the XY-cut runs past ``deadline`` (a
    ``time.monotonic()`` value).
    """
    if not segments:
        return []
    line_height = statistics.median(segment.height for segment in segments)
    if len(segments) > MAX_SEGMENTS_FOR_CUT:
        return _region_lines(segments)

    leaves: list[list[Segment]] = []
    stack = [segments]
    while stack:
        if time.monotonic() > deadline:
            raise PageTimeout
        region = stack.pop()
        if _cannot_cut_vertically(region, line_height):
            leaves.extend(_bands(region))
            continue
        parts = _split(region, line_height)
        if parts is None:
            leaves.append(region)
        else:
            stack.extend(reversed(parts))

    lines: list[str] = []
    previous: tuple[float, float, float] | None = None  # x0, x1, y0 of the last leaf
    for leaf in leaves:
        x0, y0, x1, y1 = _bounds(leaf)
        if previous is not None and lines and lines[-1]:
            same_column = x0 < previous[1] and previous[0] < x1
            if same_column and previous[2] - y1 > PARAGRAPH_GAP * line_height:
                lines.append("")
        lines.extend(_region_lines(leaf))
        previous = (x0, x1, y0)
    return lines

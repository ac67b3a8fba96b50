"""Text normalization shared by the readers.

Three clean-ups run on extracted text:

* Compatibility characters become plain letters: Latin ligatures (U+FB00 to
  U+FB06, such as "ﬁ" and "ﬄ"), the long s, no-break spaces. Only these get
  NFKC, because NFKC on all text would also flatten superscripts, fractions
  and full-width letters that carry meaning.
* Hyphenated line breaks are joined (see :func:`join_hyphenated_lines`).
* Running headers and footers of paginated text are removed
  (see :func:`remove_running_lines`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

# Characters mapped through NFKC: the Latin and Armenian ligature block, the
# long s, the Dutch ij, the Latin digraphs (Ǆ, ǆ, Ǉ ...).
_NFKC_RANGES = ((0xFB00, 0xFB17), (0x017F, 0x017F), (0x0132, 0x0133), (0x01C4, 0x01CC), (0x01F1, 0x01F3))

_TRANSLATION: dict[int, str] = {}
for _low, _high in _NFKC_RANGES:
    for _code in range(_low, _high + 1):
        _TRANSLATION[_code] = unicodedata.normalize("NFKC", chr(_code))
_TRANSLATION.update(
    {
        0x00A0: " ",  # no-break space
        0x202F: " ",  # narrow no-break space
        0x2007: " ",  # figure space
        0x00AD: "",  # soft hyphen: an invisible break opportunity
        0x200B: "",  # zero-width space
        0xFEFF: "",  # byte order mark or zero-width no-break space
        0xFFFD: "",  # replacement character: a glyph without a Unicode mapping
    }
)
# C0 control characters other than tab and newline, and DEL.
for _code in list(range(0x00, 0x09)) + [0x0B, 0x0C] + list(range(0x0E, 0x20)) + [0x7F]:
    _TRANSLATION[_code] = ""

# pdfminer, and so pdfplumber, writes "(cid:NN)" for a glyph it cannot map.
_CID = re.compile(r"\(cid:\d+\)")


# TeX-made PDFs draw an accent as a separate spacing glyph before the letter
# ("na¨ıve"); these map each spacing accent to its combining form.
_SPACING_ACCENTS = {"\u00a8": "\u0308", "\u00b4": "\u0301", "\u02c6": "\u0302", "\u02dc": "\u0303", "\u00b8": "\u0327", "\u02da": "\u030a"}
_ACCENT_BEFORE_LETTER = re.compile("([" + "".join(_SPACING_ACCENTS) + "])([a-zA-Z\u0131])")


def _combine_accent(match: re.Match[str]) -> str:
    letter = "i" if match.group(2) == "\u0131" else match.group(2)  # dotless i takes the accent
    return unicodedata.normalize("NFC", letter + _SPACING_ACCENTS[match.group(1)])


def normalize_characters(text: str) -> str:
    """Replace ligatures and compatibility characters, and drop unmapped glyphs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CID.sub("", text)
    text = _ACCENT_BEFORE_LETTER.sub(_combine_accent, text)
    return text.translate(_TRANSLATION)


# Hyphenation ----------------------------------------------------------------

_LETTER = r"[^\W\d_]"
_HYPHEN_BREAK = re.compile(rf"({_LETTER}+)-[ \t]*\n[ \t]*(\w+)")
_INLINE_COMPOUND = re.compile(rf"{_LETTER}+-{_LETTER}+")
_WORD = re.compile(rf"{_LETTER}+")


def collect_vocabulary(text: str) -> tuple[set[str], set[str]]:
    """Return the lowercase words and the hyphenated compounds written on one line."""
    words = {match.lower() for match in _WORD.findall(text)}
    compounds = {match.lower() for match in _INLINE_COMPOUND.findall(text)}
    return words, compounds


def join_hyphenated_lines(text: str, words: set[str] | None = None, compounds: set[str] | None = None) -> str:
    """Join words split across lines by a hyphen.

    ``dan-⏎gerous`` becomes ``dangerous``. In two cases the hyphen stays and
    only the line break goes. One is a part after the break that does not
    start with a lowercase letter (``Anglo-⏎Saxon``, ``2017-⏎2023``). The other
    is a compound the document writes hyphenated on one line elsewhere
    (``well-known``) but never joined. ``words`` and ``compounds`` come from
    :func:`collect_vocabulary`, usually over the whole document.
    """
    if words is None or compounds is None:
        words, compounds = collect_vocabulary(text)

    def replace(match: re.Match[str]) -> str:
        first, second = match.group(1), match.group(2)
        if not second[0].islower():
            return f"{first}-{second}"
        head = _WORD.match(second)
        second_word = head.group(0) if head else second
        joined = (first + second_word).lower()
        compound = f"{first}-{second_word}".lower()
        if compound in compounds and joined not in words:
            return f"{first}-{second}"
        return first + second

    return _HYPHEN_BREAK.sub(replace, text)


# Running headers and footers -----------------------------------------------

EDGE_LINES = 5
"""How many lines at the top and at the bottom of a page may be a running header or footer."""
MIN_REPEATS = 3
MIN_PAGE_SHARE = 0.25
ENOUGH_REPEATS = 8
"""A line is running when it repeats on MIN_PAGE_SHARE of the pages with text,
but never needs more than ENOUGH_REPEATS pages nor fewer than MIN_REPEATS.
The cap matters in long documents whose footer names the current section:
each variant then covers only a few percent of the pages."""

# A run of digits with the punctuation inside numbers, dates and section
# numbers: "7", "2.3.59.8", "12-12-2022", "1,234".
_NUMBER = re.compile(r"\d(?:[\d.,:/-]*\d)?")
_SPACES = re.compile(r"\s+")


def line_key(line: str) -> str:
    """Return ``line`` lowercased with each number as ``#``, so "Page 3" and "Page 4" match."""
    return _SPACES.sub(" ", _NUMBER.sub("#", line.lower())).strip()


def edge_indices(line_count: int) -> list[int]:
    """Return the indices of the first and last ``EDGE_LINES`` of ``line_count`` lines."""
    if line_count <= 2 * EDGE_LINES:
        return list(range(line_count))
    return list(range(EDGE_LINES)) + list(range(line_count - EDGE_LINES, line_count))


def find_running_keys(edge_keys: list[set[str]]) -> set[str]:
    """Return the line keys that are running headers or footers.

    ``edge_keys`` holds, for each page with text, the :func:`line_key` of the
    lines at its top and bottom. A key is running when it appears on
    ``MIN_PAGE_SHARE`` of the pages, bounded by ``MIN_REPEATS`` and
    ``ENOUGH_REPEATS``. So the alternating headers of odd and even pages (half
    of the pages each) count, and a 2-page document keeps all its lines.
    """
    threshold = max(MIN_REPEATS, min(ENOUGH_REPEATS, math.ceil(MIN_PAGE_SHARE * len(edge_keys))))
    counts: Counter[str] = Counter()
    for keys in edge_keys:
        counts.update(keys)
    return {key for key, count in counts.items() if count >= threshold and key}

"""ROUGE scoring, and evaluation of a model on document/summary pairs.

Scores come from Google's ``rouge-score`` package with Porter stemming, as
most summarization papers report them, with two changes so that they work
offline and in every language:

- Its default tokenizer keeps only ``[a-z0-9]`` and so drops every non-ASCII
  letter: a Japanese or Arabic summary scores 0 even against itself.
  :class:`UnicodeTokenizer` keeps Unicode letters and digits, splits scripts
  written without spaces into characters and stems ASCII words only, which
  gives the default tokenizer's tokens on ASCII text.
- ROUGE-Lsum needs sentences. rouge-score splits them with NLTK's punkt
  model, which must be downloaded, so :func:`split_sentences` does it with a
  regular expression instead and the sentences reach rouge-score one per line.
"""

from __future__ import annotations

import bisect
import logging
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from nltk.stem.porter import PorterStemmer
from rouge_score import rouge_scorer

from .documents.model import Document
from .generation import GenerationSettings
from .models import LoadedModel
from .pairs import Pair
from .progress import CancellationToken, ProgressFn, ignore_progress
from .summarize import summarize_document

log = logging.getLogger(__name__)

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# rouge-score's default tokenizer leaves words of 3 characters or fewer unstemmed.
_MIN_STEM_LENGTH = 4

# Code point ranges of scripts written without spaces between words, where a
# character is the practical unit to match: CJK ideographs, kana, Thai, Lao,
# Khmer, Myanmar. Hangul is absent because Korean puts spaces between words.
_UNSPACED_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # halfwidth Katakana
    (0x20000, 0x3134F),  # CJK extensions B to G
)
_UNSPACED_STARTS = [start for start, _ in _UNSPACED_RANGES]


def _is_unspaced(character: str) -> bool:
    code = ord(character)
    index = bisect.bisect_right(_UNSPACED_STARTS, code) - 1
    return index >= 0 and code <= _UNSPACED_RANGES[index][1]


class UnicodeTokenizer:
    """ROUGE tokenizer for any script, in the ``tokenize(text)`` form rouge-score accepts.

    The text is NFKC-normalized and lowercased. Tokens are runs of Unicode
    letters, digits and combining marks, so an Arabic or Devanagari word keeps
    its vowel signs. In scripts written without spaces (CJK, kana, Thai, Lao,
    Khmer, Myanmar) each character, with any marks that follow it, is a token.
    ASCII words of 4 or more characters are Porter-stemmed when ``stem`` is
    true, as rouge-score's own tokenizer does, and other words are left as
    they are. On ASCII text the tokens equal rouge-score's. A Latin word with
    an accent differs: rouge-score splits ``naïve`` into ``na`` and ``ve``,
    while here it stays one token.
    """

    def __init__(self, stem: bool = True) -> None:
        self._stemmer = PorterStemmer() if stem else None

    def tokenize(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text).lower()
        tokens: list[str] = []
        current: list[str] = []
        current_unspaced = False

        def flush() -> None:
            if current:
                tokens.append(self._finish("".join(current)))
                current.clear()

        for character in text:
            category = unicodedata.category(character)
            if category[0] == "M" and current:
                # A combining mark belongs to the character before it.
                current.append(character)
            elif category[0] in "LN":
                unspaced = _is_unspaced(character)
                if unspaced or current_unspaced:
                    flush()
                current.append(character)
                current_unspaced = unspaced
            else:
                flush()
                current_unspaced = False
        flush()
        return tokens

    def _finish(self, token: str) -> str:
        if self._stemmer is not None and token.isascii() and len(token) >= _MIN_STEM_LENGTH:
            return self._stemmer.stem(token)
        return token


# Sentences ------------------------------------------------------------------

# Words that end in a period without ending a sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e cf al fig figs eq eqs no vol pp ch sec approx inc ltd co".split()
)
# A sentence ends after ., ! or ? (with any closing quotes or brackets) when
# whitespace follows, and after a CJK full stop, exclamation or question mark
# at once, because CJK text puts no space after them.
_SENTENCE_END = re.compile(r"""(?<=[.!?])["'”’)\]]*\s+|(?<=[。！？])["'”’」』）]*\s*""")
_WORD_BEFORE = re.compile(r"(\S+)$")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences at ., !, ?, 。, ！, ？ and line breaks.

    A period after a single letter (an initial) or a common abbreviation
    (``Dr.``, ``e.g.``, ``et al.``) does not end a sentence, and neither does
    one inside a number (``3.5``) because no space follows it.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for match in _SENTENCE_END.finditer(line):
            candidate = line[start : match.start()]
            if _ends_with_abbreviation(candidate):
                continue
            sentences.append(line[start : match.end()].strip())
            start = match.end()
        sentences.append(line[start:].strip())
    return [sentence for sentence in sentences if sentence]


def _ends_with_abbreviation(text: str) -> bool:
    if not text.endswith("."):
        return False
    match = _WORD_BEFORE.search(text[:-1])
    if match is None:
        return False
    word = match.group(1).lower().lstrip("(\"'")
    return (len(word) == 1 and word.isalpha()) or word in _ABBREVIATIONS


# Scores ---------------------------------------------------------------------


def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), tokenizer=UnicodeTokenizer(stem=True))


def rouge_pair_scores(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """Return ROUGE-1/2/L/Lsum F1 for each prediction against its reference, each in [0, 1]."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; they must pair up.")
    scorer = _scorer()
    results = []
    for prediction, reference in zip(predictions, references):
        # rouge-score reads one sentence per line for rougeLsum; the other
        # types ignore line breaks.
        scores = scorer.score("\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction)))
        results.append({key: float(scores[key].fmeasure) for key in ROUGE_KEYS})
    return results


def mean_scores(per_pair: list[dict[str, float]]) -> dict[str, float]:
    """Return the mean of each ROUGE key over ``per_pair``."""
    if not per_pair:
        raise ValueError("no scores to average: pass at least one prediction and reference.")
    return {key: sum(scores[key] for scores in per_pair) / len(per_pair) for key in ROUGE_KEYS}


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Return mean ROUGE-1/2/L/Lsum F1 (keys rouge1, rouge2, rougeL, rougeLsum), each in [0, 1]."""
    return mean_scores(rouge_pair_scores(predictions, references))


# Evaluation -----------------------------------------------------------------


@dataclass
class PairEvaluation:
    """The generated summary of one pair and its scores against the reference."""

    source: str
    prediction: str
    reference: str
    scores: dict[str, float]
    seconds: float

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "prediction": self.prediction,
            "reference": self.reference,
            "scores": self.scores,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class EvaluationReport:
    """Scores of a model over a set of pairs: the mean and each pair's."""

    model: str
    mean: dict[str, float]
    pairs: list[PairEvaluation] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "pairs": len(self.pairs),
            "mean": self.mean,
            "seconds": round(self.seconds, 3),
            "per_pair": [pair.to_json() for pair in self.pairs],
        }


def summarize_pair(
    loaded: LoadedModel,
    pair: Pair,
    settings: GenerationSettings,
    cancel: CancellationToken | None = None,
) -> str:
    """Generate a summary of ``pair.document`` through the same windows and fused memory as ``summarize``."""
    document = Document(path=Path(pair.source), format="txt", text=pair.document)
    return summarize_document(document, loaded, settings, cancel=cancel).text


def evaluate_pairs(
    loaded: LoadedModel,
    pairs: list[Pair],
    generation_settings: GenerationSettings = GenerationSettings(),
    progress: ProgressFn | None = None,
    cancel: CancellationToken | None = None,
) -> EvaluationReport:
    """Summarize every pair's document with ``loaded`` and score it against the pair's summary.

    Progress is reported in pairs summarized, and ``cancel`` is checked
    between windows and decoding steps. Raises ValueError for an empty list.
    """
    if not pairs:
        raise ValueError("no pairs to evaluate.")
    generation_settings.validate()
    progress = progress or ignore_progress
    started = time.perf_counter()
    results: list[PairEvaluation] = []
    progress(0, len(pairs), "pairs")
    for done, pair in enumerate(pairs, start=1):
        pair_started = time.perf_counter()
        prediction = summarize_pair(loaded, pair, generation_settings, cancel)
        scores = rouge_pair_scores([prediction], [pair.summary])[0]
        results.append(PairEvaluation(pair.source, prediction, pair.summary, scores, time.perf_counter() - pair_started))
        log.info("evaluated %s: %s", pair.source, _format_scores(scores))
        progress(done, len(pairs), "pairs")

    report = EvaluationReport(
        model=loaded.name,
        mean=mean_scores([result.scores for result in results]),
        pairs=results,
        seconds=time.perf_counter() - started,
    )
    log.info("evaluated %s on %d pairs in %.1f s: %s", loaded.name, len(pairs), report.seconds, _format_scores(report.mean))
    return report


def _format_scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{key} {scores[key]:.4f}" for key in ROUGE_KEYS)

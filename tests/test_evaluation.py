"""ROUGE scoring in any script, sentence splitting, and evaluating a model on pairs."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from synopsis.engine.errors import Cancelled
from synopsis.engine.evaluation import (
    ROUGE_KEYS,
    UnicodeTokenizer,
    evaluate_pairs,
    rouge_pair_scores,
    rouge_scores,
    split_sentences,
)
from synopsis.engine.generation import GenerationSettings
from synopsis.engine.models import load_model
from synopsis.engine.pairs import Pair
from synopsis.engine.progress import CancellationToken

# Two unrelated sentences per language: each scores 1.0 against itself and
# shares no token with the other. In Japanese, Chinese and Thai every
# character is a token, so those pairs share no character.
NON_LATIN = {
    "japanese": ("東京は日本の首都。", "猫が窓辺で静かに眠っていた。"),
    "chinese": ("北京是中国的首都。", "我们明天去海边游泳吧！"),
    "arabic": ("القاهرة هي عاصمة مصر وأكبر مدنها.", "يحب الأطفال اللعب في الحديقة"),
    "russian": ("Москва является столицей России.", "Кошка спала на тёплом подоконнике."),
    "greek": ("Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.", "Ο σκύλος τρέχει γρήγορα στο πάρκο."),
    "thai": ("เชียงใหม่สวย", "ฝนตกทุกวัน"),
    "hindi": ("दिल्ली भारत की राजधानी है।", "बच्चे बगीचे में खेलते हैं"),
}

ENGLISH = [
    ("The cats were running quickly across the gardens.", "A cat ran quickly through the garden."),
    (
        "The committee approved the budget on Monday. Spending on roads will rise by 3.5%.",
        "On Monday the budget was approved by the committee; road spending rises 3.5 percent.",
    ),
    ("Researchers studied 1,200 patients with diabetes.", "The study followed patients who had diabetes."),
    ("Don't panic! The U.S. markets recovered.", "Markets in the U.S. recovered, so don't panic."),
]


# Tokenizer -------------------------------------------------------------------------


def test_tokenizer_splits_unspaced_scripts():
    tokens = UnicodeTokenizer().tokenize("東京は2024年")
    assert tokens == ["東", "京", "は", "2024", "年"]


def test_tokenizer_keeps_words_with_marks():
    assert UnicodeTokenizer().tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert UnicodeTokenizer().tokenize("كَتَبَ الوَلَدُ") == ["كَتَبَ", "الوَلَدُ"]


def test_tokenizer_stems_ascii_only():
    tokens = UnicodeTokenizer().tokenize("Running cats, Бегущие кошки, naïve")
    assert tokens == ["run", "cat", "бегущие", "кошки", "naïve"]


def test_tokenizer_normalizes_compatibility_forms():
    assert UnicodeTokenizer(stem=False).tokenize("ＡＢＣ ﬁnal") == ["abc", "final"]


@pytest.mark.parametrize("reference,prediction", ENGLISH)
def test_tokenizer_matches_default_on_english(reference, prediction):
    default = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)._tokenizer
    ours = UnicodeTokenizer(stem=True)
    for text in (reference, prediction):
        assert ours.tokenize(text) == default.tokenize(text)


# Scores ------------------------------------------------------------------------------


@pytest.mark.parametrize("language", sorted(NON_LATIN))
def test_identical_non_latin_scores_one(language):
    text, _ = NON_LATIN[language]
    scores = rouge_scores([text], [text])
    assert scores == {key: 1.0 for key in ROUGE_KEYS}


@pytest.mark.parametrize("language", sorted(NON_LATIN))
def test_disjoint_non_latin_scores_zero(language):
    first, second = NON_LATIN[language]
    scores = rouge_scores([first], [second])
    for key in ROUGE_KEYS:
        assert scores[key] == 0.0, key


@pytest.mark.parametrize("reference,prediction", ENGLISH)
def test_english_matches_rouge_score(reference, prediction):
    ours = rouge_pair_scores([prediction], [reference])[0]
    default = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    # The default scorer reads one sentence per line for rougeLsum.
    expected = default.score("\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction)))
    for key in ROUGE_KEYS:
        assert ours[key] == pytest.approx(expected[key].fmeasure, abs=1e-12), key


def test_scores_are_means_of_pairs():
    predictions = [ENGLISH[0][1], ENGLISH[1][1]]
    references = [ENGLISH[0][0], ENGLISH[1][0]]
    per_pair = rouge_pair_scores(predictions, references)
    mean = rouge_scores(predictions, references)
    for key in ROUGE_KEYS:
        assert mean[key] == pytest.approx((per_pair[0][key] + per_pair[1][key]) / 2)
        assert 0 <= mean[key] <= 1


def test_lsum_uses_sentences():
    reference = "The cat sat on the mat. The dog ran in the park."
    reordered = "The dog ran in the park. The cat sat on the mat."
    scores = rouge_scores([reordered], [reference])
    assert scores["rougeLsum"] == pytest.approx(1.0)
    assert scores["rougeL"] < 1.0


def test_scores_reject_mismatched_lists():
    with pytest.raises(ValueError, match="pair up"):
        rouge_scores(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        rouge_scores([], [])


def test_empty_prediction_scores_zero():
    assert rouge_scores([""], ["Something to say."])["rouge1"] == 0.0


# Sentences ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ("Dr. Smith met Mr. Jones, e.g. at noon. Then he left.", ["Dr. Smith met Mr. Jones, e.g. at noon.", "Then he left."]),
        ("J. R. R. Tolkien wrote it. Done.", ["J. R. R. Tolkien wrote it.", "Done."]),
        ("Growth was 3.5 percent. Costs fell.", ["Growth was 3.5 percent.", "Costs fell."]),
        ('He said "stop." Then silence.', ['He said "stop."', "Then silence."]),
        ("今日は晴れ。明日は雨！本当？", ["今日は晴れ。", "明日は雨！", "本当？"]),
        ("First line\nsecond line", ["First line", "second line"]),
        ("  \n ", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


# Evaluating a model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


def _pairs() -> list[Pair]:
    return [
        Pair("a", "The council met to discuss the new library. " * 30, "The council discussed the library."),
        Pair("b", "Rain fell across the region for three days. " * 30, "Three days of rain."),
    ]


def test_evaluate_pairs_reports_each_pair(tiny):
    reports = []
    report = evaluate_pairs(
        tiny, _pairs(), GenerationSettings(max_tokens=8, beams=1, window_tokens=128),
        progress=lambda done, total, unit: reports.append((done, total, unit)),
    )
    assert [pair.source for pair in report.pairs] == ["a", "b"]
    assert reports == [(0, 2, "pairs"), (1, 2, "pairs"), (2, 2, "pairs")]
    for pair in report.pairs:
        assert set(pair.scores) == set(ROUGE_KEYS)
        assert all(0 <= value <= 1 for value in pair.scores.values())
        assert pair.reference in {p.summary for p in _pairs()}
    for key in ROUGE_KEYS:
        assert report.mean[key] == pytest.approx(sum(p.scores[key] for p in report.pairs) / 2)
    data = report.to_json()
    assert data["pairs"] == 2
    assert len(data["per_pair"]) == 2


def test_evaluate_pairs_cancels(tiny):
    token = CancellationToken()
    token.cancel()
    with pytest.raises(Cancelled):
        evaluate_pairs(tiny, _pairs(), GenerationSettings(max_tokens=4), cancel=token)


def test_evaluate_pairs_needs_pairs(tiny):
    with pytest.raises(ValueError, match="no pairs"):
        evaluate_pairs(tiny, [], GenerationSettings())

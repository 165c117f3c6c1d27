"""BLEU / ROUGE / BERTScore wrappers equal the libraries' own output, plus hand-checkable extremes."""

from __future__ import annotations

import bert_score
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from ldlm.evaluation.conditional import bertscore, bleu, conditional_metrics, rouge
from ldlm.storage.resources import resolve_model

HYPS = ["the cat sat on the mat today", "a quick brown fox jumps", "he said the plan would work", ""]
REFS = ["the cat was sitting on the mat", "the quick brown fox jumped over it", "he said that the plan works", "x"]


def test_bleu_equals_sacrebleu_corpus_bleu():
    assert bleu(HYPS, REFS) == sacrebleu.corpus_bleu(HYPS, [REFS]).score
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert bleu(["a b c d"], ["w x y z"]) == 0.0


def test_rouge_equals_rouge_score_mean_fmeasure():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    per_pair = [scorer.score(r, h) for h, r in zip(HYPS, REFS, strict=True)]
    ours = rouge(HYPS, REFS)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert ours[key] == pytest.approx(sum(s[key].fmeasure for s in per_pair) / len(per_pair), abs=1e-12)
    # by hand: "a b c" vs "a b d": unigram P = R = 2/3; bigrams {ab, bc} vs {ab, bd}: 1/2; LCS "a b": 2/3
    assert rouge(["a b c"], ["a b d"]) == pytest.approx({"rouge1": 2 / 3, "rouge2": 1 / 2, "rougeL": 2 / 3})


def test_bertscore_equals_bert_score_with_local_model_and_explicit_layer():
    ours = bertscore(HYPS[:3], REFS[:3], model="minilm-l6", num_layers=4)
    p, r, f = bert_score.score(HYPS[:3], REFS[:3], model_type=resolve_model("minilm-l6"), num_layers=4)
    assert ours["bertscore_f1"] == pytest.approx(f.mean().item(), abs=1e-6)
    assert ours["bertscore_precision"] == pytest.approx(p.mean().item(), abs=1e-6)
    assert ours["bertscore_recall"] == pytest.approx(r.mean().item(), abs=1e-6)
    assert ours["bertscore_num_layers"] == 4
    assert bertscore(["the cat sat"], ["the cat sat"], num_layers=4)["bertscore_f1"] == pytest.approx(1.0, abs=1e-5)


def test_conditional_metrics_bundle_counts_empty_hypotheses():
    out = conditional_metrics(HYPS, REFS, bertscore_model=None)
    assert out["num_pairs"] == 4 and out["num_empty"] == 1
    assert out["bleu"] == bleu(HYPS, REFS) and out["rougeL"] == rouge(HYPS, REFS)["rougeL"]
    assert "bertscore_f1" not in out


@pytest.mark.parametrize(
    ("hyps", "refs", "error", "match"),
    [
        ([], [], ValueError, "no hypotheses"),
        (["a"], ["a", "b"], ValueError, "pair one to one"),
        ("a b", "a b", TypeError, "single string"),
        ([None], ["a"], TypeError, "only strings"),
    ],
)
def test_bad_pairs_are_refused(hyps, refs, error, match):
    with pytest.raises(error, match=match):
        bleu(hyps, refs)
    with pytest.raises(error, match=match):
        rouge(hyps, refs)

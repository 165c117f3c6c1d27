"""MAUVE and the one-pass scoring judge: same distribution scores ~1, different ones clearly lower, and the
shared forward pass reproduces JudgeLM's perplexity and the standalone MAUVE featuriser exactly."""

from __future__ import annotations

import numpy as np
import pytest

from ldlm.data import load_texts
from ldlm.evaluation.judge import JudgeLM
from ldlm.evaluation.mauve import MauveProtocol, judge_features, mauve_from_features, mauve_texts
from ldlm.evaluation.scoring import ScoringJudge


@pytest.fixture(scope="module")
def judge() -> ScoringJudge:
    return ScoringJudge("smollm2-135m", batch_size=16, max_length=32)  # short: keeps the tests fast


@pytest.fixture(scope="module")
def news() -> list[str]:
    return load_texts("news", max_texts=40, seed=0)


def gaussian(n: int, shift: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 16)) + shift  # (n, 16)


def test_mauve_same_distribution_near_one_different_clearly_lower():
    ref = gaussian(100, 0.0, seed=0)
    same = mauve_from_features(gaussian(100, 0.0, seed=1), ref)
    shifted = mauve_from_features(gaussian(100, 0.4, seed=1), ref)  # the same draw, moved
    far = mauve_from_features(gaussian(100, 3.0, seed=1), ref)
    assert same > 0.9
    assert shifted < 0.75 * same
    assert far < 0.05 < shifted  # monotone in the distance between the distributions


def test_mauve_is_reproducible_with_its_fixed_seed():
    p, q = gaussian(100, 0.3, seed=4), gaussian(100, 0.0, seed=5)
    assert mauve_from_features(p, q) == mauve_from_features(p, q)


def test_mauve_bad_inputs_are_refused():
    ref = gaussian(50, 0.0, seed=0)
    with pytest.raises(ValueError, match="smaller than the sample set"):
        mauve_from_features(gaussian(60, 0.0, seed=1), ref)
    with pytest.raises(ValueError, match="at least 2 samples"):
        mauve_from_features(gaussian(1, 0.0, seed=1), ref)
    with pytest.raises(ValueError, match="equal H"):
        mauve_from_features(gaussian(10, 0.0, seed=1)[:, :8], ref)
    with pytest.raises(ValueError, match="pooling"):
        MauveProtocol(pooling="max")
    with pytest.raises(ValueError, match="max_len"):
        MauveProtocol(max_len=1)


def test_scoring_judge_matches_judge_perplexity_and_mauve_features(judge, news):
    texts = [*news[:2], "", "word"]  # an empty text: no NLL, but a start-token feature
    shared, direct = judge.token_nll(texts), JudgeLM.token_nll(judge, texts)
    assert shared[2] is None and direct[2] is None
    for i in (0, 1, 3):  # (summed NLL, token count) per text; approx does not take nested tuples
        assert shared[i][0] == pytest.approx(direct[i][0], rel=1e-5) and shared[i][1] == direct[i][1]
    ppl = judge.perplexity(texts)
    assert ppl["num_dropped"] == 1 and ppl["num_texts"] == 3
    for pooling in ("last", "mean"):
        judge.pooling, judge._features = pooling, {}
        protocol = MauveProtocol(max_len=judge.max_length, pooling=pooling)
        np.testing.assert_allclose(judge.features(texts), judge_features(judge, texts, protocol), rtol=1e-4, atol=1e-4)
    judge.pooling, judge._features = "last", {}


def test_scoring_judge_memoises(judge, news, monkeypatch):
    judge.features(news[:3])
    monkeypatch.setattr(judge, "model", None)  # any new forward pass would now fail
    assert judge.features(news[:3]).shape == (3, 576)  # SmolLM2-135M hidden size
    assert judge.perplexity(news[:3])["num_texts"] == 3


def test_mauve_on_texts_real_vs_real_beats_real_vs_degenerate(judge, news):
    real_a, real_b = news[:16], news[16:32]
    degenerate = [" ".join([w] * 12) for w in " ".join(news[32:]).split()[:16]]  # one word repeated
    protocol = MauveProtocol(max_len=judge.max_length)
    ref = judge.features(real_b)  # (16, 576) precomputed reference features
    same = mauve_texts(judge, real_a, ref, protocol)
    different = mauve_texts(judge, degenerate, ref, protocol)
    assert same["mauve"] > 0.9 and same["num_reference"] == 16 and same["pooling"] == "last"
    assert different["mauve"] < 0.5 * same["mauve"]
    with pytest.raises(ValueError, match="smaller than the sample set"):
        mauve_texts(judge, news[:20], ref, protocol)
    with pytest.raises(ValueError, match="empty"):
        mauve_texts(judge, [], ref, protocol)

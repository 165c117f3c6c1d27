"""Model-free text metrics on lowercased whitespace words (``text.lower().split()``).

These match the diversity/entropy/memorisation numbers reported by COSMOS and LDLM; n-grams never
cross text boundaries.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["distinct_ngrams_product", "memorization", "unigram_entropy"]


def _words(text: str) -> list[str]:
    if not isinstance(text, str):
        raise TypeError(f"texts must be strings, got {type(text).__name__}")
    return text.lower().split()


def _check_texts(texts: Sequence[str] | Iterable[str], what: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings, not a single string")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{what} is empty")
    return texts


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_ngrams_product(texts: Sequence[str], ns: Iterable[int] = (2, 3, 4)) -> float:
    """Div = prod over n in ``ns`` of (#unique n-grams / #n-grams), pooled over the whole set of texts.

    1.0 means no n-gram repeats anywhere; repetitive or mode-collapsed samples push it toward 0.
    Raises ValueError if the texts contain no n-gram of some requested order.
    """
    texts = _check_texts(texts)
    words = [_words(t) for t in texts]
    ns = tuple(ns)
    if not ns or any(int(n) != n or n < 1 for n in ns):
        raise ValueError(f"ns must be positive integers, got {ns}")
    div = 1.0
    for n in ns:
        grams = [g for w in words for g in _ngrams(w, n)]
        if not grams:
            raise ValueError(f"no {n}-grams in the texts (all shorter than {n} words): Div is undefined")
        div *= len(set(grams)) / len(grams)
    return div


def unigram_entropy(texts: Sequence[str]) -> float:
    """Mean over samples of the entropy (nats) of each sample's own word distribution.

    For sample i with word counts c_w over N_i words: H_i = -sum_w (c_w/N_i) ln(c_w/N_i).
    Samples with no words are skipped; ValueError if every sample is empty.
    """
    texts = _check_texts(texts)
    entropies = []
    for t in texts:
        w = _words(t)
        if not w:
            continue
        total = len(w)
        entropies.append(-sum((c / total) * math.log(c / total) for c in Counter(w).values()))
    if not entropies:
        raise ValueError("all texts are empty: unigram entropy is undefined")
    return sum(entropies) / len(entropies)


def memorization(texts: Sequence[str], train_texts: Iterable[str], n: int = 4) -> float:
    """Share of the generated n-grams (counted with multiplicity) that occur among the training n-grams.

    0 means no generated n-gram was copied from training data; 1 means every one was.
    ValueError if either side is empty or the generated texts contain no n-gram.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    texts = _check_texts(texts)
    train_texts = _check_texts(train_texts, "train_texts")
    train = {g for t in train_texts for g in _ngrams(_words(t), n)}
    if not train:
        raise ValueError(f"train_texts contain no {n}-grams")
    grams = [g for t in texts for g in _ngrams(_words(t), n)]
    if not grams:
        raise ValueError(f"texts contain no {n}-grams (all shorter than {n} words)")
    return sum(g in train for g in grams) / len(grams)

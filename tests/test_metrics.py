"""Text metrics checked against values computed by hand on tiny fixed inputs."""

import math

import pytest

from ldlm.evaluation import distinct_ngrams_product, memorization, unigram_entropy


def test_distinct_ngrams_product_by_hand():
    texts = ["a b a b", "A B c"]  # lowercased: [a b a b], [a b c]
    # 2-grams: ab ba ab | ab bc -> 5 total, unique {ab, ba, bc} = 3
    # 3-grams: aba bab | abc -> 3 total, 3 unique
    assert distinct_ngrams_product(texts, ns=(2, 3)) == pytest.approx(3 / 5 * 3 / 3)
    # 1-grams: a b a b a b c -> 7 total, 3 unique; 4-grams: only "a b a b" -> 1/1
    assert distinct_ngrams_product(texts, ns=(1,)) == pytest.approx(3 / 7)
    assert distinct_ngrams_product(texts, ns=(2, 3, 4)) == pytest.approx(3 / 5)


def test_distinct_ngrams_do_not_cross_texts_and_all_unique_is_one():
    assert distinct_ngrams_product(["a b c d e", "f g h i j"]) == 1.0
    # "x y" + "z" would form the 3-gram "x y z" only if texts were concatenated
    with pytest.raises(ValueError, match="3-grams"):
        distinct_ngrams_product(["x y", "z"], ns=(3,))


def test_unigram_entropy_by_hand():
    # sample 1: a a b b -> p = 1/2, 1/2 -> ln 2; sample 2: c -> 0; sample 3: "x Y z" -> ln 3
    texts = ["a a b B", "c", "x Y z", "   "]
    assert unigram_entropy(texts) == pytest.approx((math.log(2) + 0 + math.log(3)) / 3)
    # skewed: a a a b -> -(3/4 ln 3/4 + 1/4 ln 1/4)
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert unigram_entropy(["a a a b"]) == pytest.approx(expected)


def test_memorization_by_hand():
    train = ["the cat sat on the mat", "a dog ran"]  # 4-grams: tcso, csot, sotm
    gen = ["The cat sat on a rug", "dog ran to the park"]
    # gen 4-grams: [the cat sat on]* [cat sat on a] [sat on a rug] | [dog ran to the] [ran to the park]
    assert memorization(gen, train, n=4) == pytest.approx(1 / 5)
    # multiplicity counts: the copied 4-gram twice out of 2 + 1 others
    assert memorization(["the cat sat on", "the cat sat on", "w x y z"], train) == pytest.approx(2 / 3)
    assert memorization(["a dog ran"], train, n=3) == 1.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: distinct_ngrams_product([]),
        lambda: unigram_entropy([]),
        lambda: unigram_entropy(["", " "]),
        lambda: memorization([], ["a b c d"]),
        lambda: memorization(["a b c d"], []),
        lambda: memorization(["a b"], ["a b c d"]),
    ],
)
def test_empty_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


def test_single_string_is_rejected():
    with pytest.raises(TypeError):
        distinct_ngrams_product("a b c d e")

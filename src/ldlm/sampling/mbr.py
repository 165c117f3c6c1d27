"""Minimum Bayes risk decoding (as the papers' seq2seq baselines did): of k candidates per source keep the one with
the highest mean sentence BLEU against the other k - 1 (the candidate the sample set agrees with most)."""

from __future__ import annotations


def mbr_choice(group: list[str]) -> str:
    """The candidate of ``group`` with the highest summed sentence BLEU to the others (ties: the earliest)."""
    import sacrebleu

    if not group:
        raise ValueError("mbr_choice got no candidates")
    others = lambda i: group[:i] + group[i + 1 :]  # noqa: E731
    scores = [sum(sacrebleu.sentence_bleu(c, [o]).score for o in others(i)) for i, c in enumerate(group)]
    return group[max(range(len(group)), key=lambda i: (scores[i], -i))]


def mbr_select(candidates: list[list[str]]) -> list[str]:
    """candidates: one list of k texts per source -> the MBR choice per source."""
    return [mbr_choice(group) for group in candidates]

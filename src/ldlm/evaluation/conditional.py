"""Reference-based metrics for conditional generation (COSMOS Tables 4-6): BLEU, ROUGE-1/2/L, BERTScore.

Each wraps the field's library so numbers match other papers' tooling exactly:

- BLEU: ``sacrebleu.corpus_bleu`` (BLEU-4, 13a tokenisation, exp smoothing), 0-100;
- ROUGE-1/2/L: ``rouge_score.RougeScorer`` F-measure per pair (Porter stemmer on), averaged, 0-1;
- BERTScore: ``bert_score.score`` with a local model directory and an explicit layer, no baseline
  rescaling (its baseline files exist only for hub models), precision/recall/F1 averaged, 0-1.

Empty hypotheses are scored as they are (they earn ~0) and counted in ``num_empty``, never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from ldlm.storage.resources import resolve_model

__all__ = ["bertscore", "bleu", "conditional_metrics", "rouge"]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    for what, xs in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(xs, str):
            raise TypeError(f"{what} must be a list of strings, not a single string")
    hyps, refs = list(hypotheses), list(references)
    if not hyps:
        raise ValueError("no hypotheses given: conditional metrics need at least one pair")
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references: they must pair one to one")
    if not all(isinstance(t, str) for t in hyps + refs):
        raise TypeError("hypotheses and references must contain only strings")
    return hyps, refs


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 (sacrebleu defaults), 0-100, one reference per hypothesis."""
    import sacrebleu

    hyps, refs = _check_pairs(hypotheses, references)
    return float(sacrebleu.corpus_bleu(hyps, [refs]).score)


def rouge(hypotheses: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure over pairs, each in [0, 1]."""
    from rouge_score import rouge_scorer

    hyps, refs = _check_pairs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    scores = [scorer.score(r, h) for h, r in zip(hyps, refs, strict=True)]  # score(target, prediction)
    return {k: sum(s[k].fmeasure for s in scores) / len(scores) for k in ROUGE_TYPES}


def bertscore(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    model: str = "minilm-l6",
    num_layers: int = 4,
    batch_size: int = 32,
    device: str = "cpu",
) -> dict[str, float | str | int]:
    """Mean BERTScore P/R/F1 with ``model`` (short name or local dir) at layer ``num_layers``, no rescaling.

    ``num_layers=4`` of MiniLM-L6's 6 sits at ~2/3 depth, as bert-score's default for roberta-large (17/24).
    """
    import bert_score

    hyps, refs = _check_pairs(hypotheses, references)
    if num_layers < 1:
        raise ValueError(f"bertscore num_layers must be >= 1, got {num_layers}")
    p, r, f = bert_score.score(
        hyps,
        refs,
        model_type=resolve_model(model),
        num_layers=num_layers,
        batch_size=batch_size,
        device=device,
        rescale_with_baseline=False,
        verbose=False,
    )
    return {
        "bertscore_precision": p.mean().item(),
        "bertscore_recall": r.mean().item(),
        "bertscore_f1": f.mean().item(),
        "bertscore_model": model,
        "bertscore_num_layers": num_layers,
    }


def conditional_metrics(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    bertscore_model: str | None = "minilm-l6",
    bertscore_layers: int = 4,
) -> dict:
    """BLEU, ROUGE-1/2/L and (unless ``bertscore_model`` is None) BERTScore of paired texts, in one dict."""
    hyps, refs = _check_pairs(hypotheses, references)
    out: dict = {"bleu": bleu(hyps, refs), **rouge(hyps, refs), "num_pairs": len(hyps)}
    out["num_empty"] = sum(not h.strip() for h in hyps)
    if bertscore_model is not None:
        out.update(bertscore(hyps, refs, model=bertscore_model, num_layers=bertscore_layers))
    return out

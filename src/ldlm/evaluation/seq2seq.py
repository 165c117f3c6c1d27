"""Held-out evaluation of a seq2seq model: each output against its own reference, against a permuted reference
(the same outputs paired with other sources' references: what an output that ignores its source would score), and
the copy-the-source baseline; plus the autoencoder's reconstruction of the references (the ceiling of any output).
"""

from __future__ import annotations

import time

import numpy as np

from ldlm.data.pairs import PairSet
from ldlm.evaluation.conditional import bleu, conditional_metrics, rouge

NUM_EXAMPLES = 8


def derange(texts: list[str], seed: int) -> list[str]:
    """A seeded permutation of ``texts`` with no element left in place (a shifted random cycle); needs >= 2 texts."""
    if len(texts) < 2:
        raise ValueError("a permuted-reference baseline needs at least 2 pairs")
    order = np.random.default_rng(seed).permutation(len(texts))
    out = [""] * len(texts)
    for i, j in zip(order, np.roll(order, -1), strict=True):
        out[i] = texts[j]
    return out


def evaluate_pairs(
    model,
    pairs: PairSet,
    *,
    num_pairs: int,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int = 0,
    guidance_scale: float | None = None,
    num_candidates: int | None = None,
    bertscore_model: str | None = "minilm-l6",
) -> dict:
    """Generate for the first ``num_pairs`` held-out sources and score them (BLEU 0-100, ROUGE/BERTScore 0-1)."""
    if not model.is_conditional:
        raise ValueError(f"{model.cfg.name!r} is not a seq2seq model (recipe={model.cfg.recipe})")
    n = min(num_pairs, len(pairs))
    sources, refs = pairs.sources[:n], pairs.targets[:n]
    start = time.perf_counter()
    hyps = model.generate(
        sources=sources,
        steps=steps,
        sampler=sampler,
        seed=seed,
        guidance_scale=guidance_scale,
        num_candidates=num_candidates,
    )
    seconds = time.perf_counter() - start
    own = conditional_metrics(hyps, refs, bertscore_model=bertscore_model)
    permuted_refs = derange(refs, seed)
    permuted = rouge(hyps, permuted_refs)
    copy = rouge(sources, refs)
    recon = model.decode(model.encode(refs))
    return {
        **own,
        "bleu_permuted_refs": bleu(hyps, permuted_refs),
        "bleu_copy_source": bleu(sources, refs),
        "rougeL_permuted_refs": permuted["rougeL"],
        "rouge1_permuted_refs": permuted["rouge1"],
        "rougeL_copy_source": copy["rougeL"],
        "bleu_autoencoder_reconstruction": bleu(recon, refs),
        "seconds_per_pair": seconds / n,
        "sampling": {
            "steps": steps or model.cfg.sample.steps,
            "sampler": sampler or model.cfg.sample.sampler,
            "seed": seed,
            "guidance_scale": model.cfg.seq2seq.guidance_scale if guidance_scale is None else guidance_scale,
            "num_candidates": num_candidates or model.cfg.seq2seq.num_candidates,
        },
        "examples": [
            {"source": s, "reference": r, "output": h}
            for s, r, h in zip(sources[:NUM_EXAMPLES], refs[:NUM_EXAMPLES], hyps[:NUM_EXAMPLES], strict=True)
        ],
    }

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


SEED_KEYS = ("bleu", "bleu_permuted_refs", "rougeL", "rougeL_permuted_refs")


def margin_bootstrap(
    hyps: list[str], refs: list[str], permuted_refs: list[str], *, resamples: int = 300, seed: int = 0
) -> dict[str, float]:
    """Paired bootstrap over pairs of "own reference minus permuted reference": corpus BLEU and mean ROUGE-L
    margins with 95% intervals. An interval above 0 says the outputs depend on their own source."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    gain = np.array(
        [
            scorer.score(r, h)["rougeL"].fmeasure - scorer.score(p, h)["rougeL"].fmeasure
            for h, r, p in zip(hyps, refs, permuted_refs, strict=True)
        ]
    )
    rng = np.random.default_rng(seed)
    bleu_gain, rouge_gain = [], []
    for _ in range(resamples):
        idx = rng.integers(0, len(hyps), len(hyps))
        h = [hyps[i] for i in idx]
        bleu_gain.append(bleu(h, [refs[i] for i in idx]) - bleu(h, [permuted_refs[i] for i in idx]))
        rouge_gain.append(gain[idx].mean())
    out = {}
    for name, point, draws in (
        ("bleu", bleu(hyps, refs) - bleu(hyps, permuted_refs), bleu_gain),
        ("rougeL", float(gain.mean()), rouge_gain),
    ):
        low, high = np.percentile(draws, [2.5, 97.5])
        out.update({f"{name}_margin": float(point), f"{name}_margin_ci95": [float(low), float(high)]})
    return out


def evaluate_pairs(
    model,
    pairs: PairSet,
    *,
    num_pairs: int,
    steps: int | None = None,
    sampler: str | None = None,
    seeds: tuple[int, ...] | list[int] = (0,),
    guidance_scale: float | None = None,
    num_candidates: int | None = None,
    bertscore_model: str | None = "minilm-l6",
    bootstrap_resamples: int = 300,
) -> dict:
    """Generate for the first ``num_pairs`` held-out sources once per seed and score them (BLEU 0-100,
    ROUGE/BERTScore 0-1). Top-level figures are means over seeds (``*_std`` beside the per-seed keys); the
    paired bootstrap margin (own minus permuted reference) is taken on the first seed's outputs."""
    if not model.is_conditional:
        raise ValueError(f"{model.cfg.name!r} is not a seq2seq model (recipe={model.cfg.recipe})")
    if not seeds:
        raise ValueError("evaluate_pairs needs at least one sampling seed")
    n = min(num_pairs, len(pairs))
    sources, refs = pairs.sources[:n], pairs.targets[:n]
    permuted_refs = derange(refs, 0)  # one fixed permutation, so seeds differ only in their outputs
    per_seed, outputs, seconds = [], [], 0.0
    for seed in seeds:
        start = time.perf_counter()
        hyps = model.generate(
            sources=sources,
            steps=steps,
            sampler=sampler,
            seed=seed,
            guidance_scale=guidance_scale,
            num_candidates=num_candidates,
        )
        seconds += time.perf_counter() - start
        permuted = rouge(hyps, permuted_refs)
        per_seed.append(
            {
                "seed": seed,
                **conditional_metrics(hyps, refs, bertscore_model=bertscore_model),
                "bleu_permuted_refs": bleu(hyps, permuted_refs),
                "rougeL_permuted_refs": permuted["rougeL"],
                "rouge1_permuted_refs": permuted["rouge1"],
            }
        )
        outputs.append(hyps)
    numeric = [k for k, v in per_seed[0].items() if isinstance(v, int | float) and k != "seed"]
    means = {k: float(np.mean([r[k] for r in per_seed])) for k in numeric}
    means["num_pairs"] = n
    hyps = outputs[0]
    recon = model.decode(model.encode(refs))
    return {
        **{k: v for k, v in per_seed[0].items() if k not in numeric and k != "seed"},  # e.g. bertscore_model
        **means,
        **{f"{k}_std": float(np.std([r[k] for r in per_seed])) for k in SEED_KEYS},
        **margin_bootstrap(hyps, refs, permuted_refs, resamples=bootstrap_resamples),
        "bleu_copy_source": bleu(sources, refs),
        "rougeL_copy_source": rouge(sources, refs)["rougeL"],
        "bleu_autoencoder_reconstruction": bleu(recon, refs),
        "seconds_per_pair": seconds / (n * len(seeds)),
        "seeds": list(seeds),
        "per_seed": per_seed,
        "sampling": {
            "steps": steps or model.cfg.sample.steps,
            "sampler": sampler or model.cfg.sample.sampler,
            "seeds": list(seeds),
            "guidance_scale": model.cfg.seq2seq.guidance_scale if guidance_scale is None else guidance_scale,
            "num_candidates": num_candidates or model.cfg.seq2seq.num_candidates,
        },
        "examples": [
            {"source": s, "reference": r, "output": h}
            for s, r, h in zip(sources[:NUM_EXAMPLES], refs[:NUM_EXAMPLES], hyps[:NUM_EXAMPLES], strict=True)
        ],
    }

"""Unconditional evaluation suite: judge PPL, MAUVE, Div, entropy and Mem as mean ± std over seeds.

Per seed, ``num_samples`` texts are generated and ``num_samples`` real held-out texts are drawn; both are
scored the same way, so the real-text "reference" row says what a perfect model would score under this
exact protocol. Held-out texts go through the model's own tokenizer first (lowercase, truncation to L
tokens) so casing or length never separates real from generated; they are split once, with a fixed
shuffle, into a MAUVE reference of ``num_samples`` texts and a pool for the reference row (disjoint:
real text is never compared with itself).

``source="reconstruction"`` (``ldlm evaluate --source reconstruction``) replaces the samples by the autoencoder
round trip of real held-out texts (text -> E_h -> E_z -> z -> D_h -> D_w -> argmax tokens -> text): per seed, the
very texts of that seed's reference row, so they come from the pool and never from the MAUVE reference. Nothing is
sampled; the row says what the decoder alone loses, the best any diffusion model on this autoencoder could score.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ldlm.diffusion import SAMPLERS
from ldlm.evaluation.mauve import MauveProtocol, check_sizes, mauve_from_features
from ldlm.evaluation.metrics import distinct_ngrams_product, memorization, unigram_entropy
from ldlm.evaluation.scoring import ScoringJudge

__all__ = [
    "METRICS",
    "SOURCES",
    "SuiteConfig",
    "TextScorer",
    "build_scorer",
    "collapse_check",
    "evaluate_model",
    "generate_texts",
    "model_info",
    "model_texts",
    "reconstruct_texts",
    "score_texts",
    "scoring_judge",
    "split_reference",
    "summarize",
]

log = logging.getLogger(__name__)

# the report's figures; judge_ppl is token-level, judge_ppl_per_sample the mean of per-text PPLs
METRICS = ("judge_ppl", "judge_ppl_per_sample", "mauve", "div", "entropy", "mem")
PAPER_SCALE = {"num_samples": 1000, "seeds": (0, 1, 2, 3, 4)}  # COSMOS / LDLM: 1,000 samples x 5 seeds
# what the model row scores: generated samples, or the autoencoder round trip of the reference row's held-out texts
SOURCES = ("samples", "reconstruction")


@dataclass(frozen=True)
class SuiteConfig:
    """Knobs of one evaluation; CPU-friendly defaults (the papers' scale is :data:`PAPER_SCALE`)."""

    num_samples: int = 128
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int | None = None  # sampling steps (None: the run's config)
    sampler: str | None = None  # None: the run's config
    judge: str = "smollm2-135m"
    judge_batch_size: int = 32
    mauve: MauveProtocol = field(default_factory=MauveProtocol)  # its max_len also truncates for the judge PPL
    mem_n: int = 4
    reference_seed: int = 0  # the fixed shuffle that splits held-out texts (MAUVE reference | reference row)
    gen_batch_size: int = 128
    device: str = "cpu"
    source: str = "samples"  # one of SOURCES

    def __post_init__(self) -> None:
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 (MAUVE and std need several texts), got {self.num_samples}")
        if not self.seeds:
            raise ValueError("seeds is empty: give at least one sampling seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {list(self.seeds)} repeat a seed: the std would be understated")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ValueError(f"sampler={self.sampler!r} is unknown: use {' | '.join(SAMPLERS)}")
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r} is unknown: use {' | '.join(SOURCES)}")


def summarize(values: Sequence[float | None]) -> dict:
    """``{mean, std, n, values}`` over the defined values; std is the sample std (ddof=1), 0.0 for n=1."""
    defined = [v for v in values if v is not None]
    if not defined:
        return {"mean": None, "std": None, "n": 0, "values": list(values)}
    std = statistics.stdev(defined) if len(defined) > 1 else 0.0
    return {"mean": statistics.fmean(defined), "std": std, "n": len(defined), "values": list(values)}


def model_texts(model, texts: Sequence[str], batch_size: int = 256) -> list[str]:
    """Real texts as the model's tokenizer represents them (tokenise, truncate to L, detokenise)."""
    out: list[str] = []
    for s in range(0, len(texts), batch_size):
        ids, _ = model.tokenize(list(texts[s : s + batch_size]))
        out += model.ids_to_texts(ids)
    return out


def reconstruct_texts(model, texts: Sequence[str], batch_size: int = 128) -> list[str]:
    """The autoencoder round trip of ``texts``: tokenise, E_h, E_z -> z, D_h, D_w -> argmax tokens -> texts
    (:meth:`~ldlm.pipeline.LatentDiffusionLM.encode` then ``decode``; no noise, no denoiser)."""
    if not hasattr(model, "encode") or not hasattr(model, "decode"):
        raise ValueError(
            f"model {model.cfg.name!r} has no autoencoder to round-trip texts through (source='reconstruction' "
            "needs a latent model, not recipe: ar)"
        )
    out: list[str] = []
    for s in range(0, len(texts), batch_size):
        out += model.decode(model.encode(list(texts[s : s + batch_size])))
    return out


def split_reference(texts: Sequence[str], num_samples: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Held-out texts -> (MAUVE reference of ``num_samples`` texts, disjoint pool for the reference row).

    A fixed shuffle (``seed``) decides the split; equal MAUVE set sizes are the field's usual setting.
    """
    texts = [t for t in dict.fromkeys(texts) if t.strip()]  # unique, non-empty, order kept
    random.Random(seed).shuffle(texts)
    if len(texts) < 2 * num_samples:
        raise ValueError(
            f"{len(texts)} distinct non-empty held-out texts, but the suite needs at least 2 x num_samples = "
            f"{2 * num_samples} ({num_samples} as the MAUVE reference, the rest for the real-text row): "
            "lower the number of samples or hold out more texts (data.validation_size)"
        )
    return texts[:num_samples], texts[num_samples:]


class TextScorer:
    """Scores one set of texts; holds what is fixed across seeds (judge, MAUVE reference features, train set)."""

    def __init__(
        self, judge: ScoringJudge, mauve_reference: Sequence[str], train_texts: Sequence[str], cfg: SuiteConfig
    ):
        if not train_texts:
            raise ValueError("no training texts: memorisation needs the run's training set")
        self.judge, self.cfg, self.train_texts = judge, cfg, list(train_texts)
        self.reference_features = judge.features(mauve_reference)  # (M, H)

    def _metric(self, name: str, fn, warnings: list[str]) -> float | None:
        """Run one metric; an undefined value (ValueError, e.g. no 4-grams) becomes None plus a warning."""
        try:
            return fn()
        except ValueError as err:
            warnings.append(f"{name}: {err}")
            return None

    def score(self, texts: list[str]) -> tuple[dict, list[str]]:
        """Texts -> ({metric: value or None, num_empty, ...}, warnings)."""
        check_sizes(len(texts), len(self.reference_features))
        warnings: list[str] = []
        ppl = self._metric("judge_ppl", lambda: self.judge.perplexity(texts), warnings) or {}
        if ppl.get("num_dropped"):
            warnings.append(f"judge_ppl: {ppl['num_dropped']} empty texts have no tokens to score and were left out")
        features = self.judge.features(texts)  # (n, H), from the same judge pass as the PPL
        values = {
            "judge_ppl": ppl.get("token_ppl"),
            "judge_ppl_per_sample": ppl.get("sample_ppl_mean"),
            "mauve": mauve_from_features(features, self.reference_features, self.cfg.mauve),
            "div": self._metric("div", lambda: distinct_ngrams_product(texts), warnings),
            "entropy": self._metric("entropy", lambda: unigram_entropy(texts), warnings),
            "mem": self._metric("mem", lambda: memorization(texts, self.train_texts, self.cfg.mem_n), warnings),
            "num_empty": sum(not t.strip() for t in texts),
            "mean_words": statistics.fmean(len(t.split()) for t in texts),
        }
        return values, warnings


def scoring_judge(cfg: SuiteConfig) -> ScoringJudge:
    """The judge ``cfg`` names, with its MAUVE pooling and truncation (build once, reuse across models)."""
    return ScoringJudge(
        cfg.judge,
        pooling=cfg.mauve.pooling,
        device=cfg.device,
        batch_size=cfg.judge_batch_size,
        max_length=cfg.mauve.max_len,
    )


def build_scorer(
    model, train_texts: Sequence[str], heldout_texts: Sequence[str], cfg: SuiteConfig, judge: ScoringJudge | None = None
) -> tuple[TextScorer, list[str]]:
    """Load the judge (unless given, from :func:`scoring_judge`) and featurise the MAUVE reference; returns the
    scorer and the reference-row pool."""
    mauve_ref, pool = split_reference(model_texts(model, heldout_texts), cfg.num_samples, cfg.reference_seed)
    return TextScorer(judge or scoring_judge(cfg), mauve_ref, train_texts, cfg), pool


def training_facts(run_dir) -> dict:
    """Recipe-independent facts from a run's ``summary.json`` (train minutes, texts); empty if there is none."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    keys = ("train_minutes", "train_texts", "heldout_token_accuracy", "parameters", "code")
    return {k: summary[k] for k in keys if k in summary}


def model_info(model) -> dict:
    """What the report needs to know about the model besides its texts (so scoring needs no model)."""
    return {
        "run": str(model.cfg.run_dir),
        "config": model.cfg.name,
        "sampling_steps": model.cfg.sample.steps,
        "sampler": model.cfg.sample.sampler,
        "max_length": model.max_length,
        "training": training_facts(model.cfg.run_dir),
    }


def protocol(cfg: SuiteConfig, info: dict, scorer: TextScorer, num_pool: int = 0) -> dict:
    """Everything that fixes the numbers, written into the report beside them (``info``: :func:`model_info`)."""
    judge, num_train, num_ref = scorer.judge, len(scorer.train_texts), len(scorer.reference_features)
    out = {
        "judge": judge.name,
        "judge_ppl": "token-level exp(total NLL / total tokens); judge_ppl_per_sample = mean of exp(mean NLL)",
        "judge_tokens": f"judge's own tokenizer, one BOS prepended, truncated to {judge.max_length} tokens",
        "eos": "samples are cut at the model's first end token ([SEP]/EOS); no EOS is appended for the judge",
        "num_samples": cfg.num_samples,
        "seeds": list(cfg.seeds),
        "sampling_steps": cfg.steps or info["sampling_steps"],
        "sampler": cfg.sampler or info["sampler"],
        "mauve_max_len": judge.max_length,  # = cfg.mauve.max_len unless the judge context is shorter
        "mauve": cfg.mauve.to_dict(),
        "mauve_reference_texts": num_ref,
        "reference_preprocessing": f"round trip through the model tokenizer (L={info['max_length']} tokens)",
        "word_metrics": "lowercased whitespace words; div = prod_{n=2..4} unique/total n-grams over the set; "
        "entropy = mean per-sample unigram entropy (nats)",
        "mem": f"share of generated {cfg.mem_n}-grams found in the {num_train} training texts",
        "std": "sample standard deviation (ddof=1) over seeds",
    }
    if num_pool:
        out["reference_row"] = f"{cfg.num_samples} texts per seed drawn from {num_pool} other held-out texts"
    if cfg.source == "reconstruction":
        out.update(sampling_steps=None, sampler=None)  # nothing is sampled
        out["source"] = (
            "reconstruction: the model row is the autoencoder round trip (tokens -> E_h -> E_z -> z -> D_h -> D_w -> "
            "argmax tokens) of each seed's reference-row texts (raw held-out texts, disjoint from the MAUVE "
            "reference); no sampling, no noise"
        )
    return out


def generate_texts(model, heldout_texts: Sequence[str], cfg: SuiteConfig) -> dict:
    """The suite's texts, unscored: per seed the samples (or, with ``cfg.source="reconstruction"``, the round trips
    of the reference-row texts) and the real reference-row texts, plus the MAUVE reference. JSON-serialisable, so
    sampling can run where no judge is (a GPU node) and scoring elsewhere."""
    start = time.perf_counter()
    shown = model_texts(model, heldout_texts)
    mauve_ref, pool = split_reference(shown, cfg.num_samples, cfg.reference_seed)
    raw: dict[str, str] = {}  # tokenizer round trip -> the first held-out text that gives it
    for text, original in zip(shown, heldout_texts, strict=True):
        raw.setdefault(text, original)
    per_seed = []
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        real = random.Random(seed).sample(pool, cfg.num_samples)
        if cfg.source == "reconstruction":  # the round trip of this seed's reference-row texts, from the raw text
            samples = reconstruct_texts(model, [raw[t] for t in real], cfg.gen_batch_size)
        else:
            samples = model.generate(
                cfg.num_samples, steps=cfg.steps, sampler=cfg.sampler, seed=seed, batch_size=cfg.gen_batch_size
            )
        gen_seconds = time.perf_counter() - t0
        per_seed.append({"seed": seed, "generation_seconds": gen_seconds, "model": samples, "reference": real})
    return {
        "model_info": model_info(model),
        "mauve_reference": mauve_ref,
        "pool_size": len(pool),
        "per_seed": per_seed,
        "seconds": time.perf_counter() - start,
    }


def score_texts(texts: dict, train_texts: Sequence[str], cfg: SuiteConfig, judge: ScoringJudge | None = None) -> dict:
    """The report (see module doc) of :func:`generate_texts`' output; ``judge`` as in :func:`evaluate_model`."""
    start = time.perf_counter()
    scorer = TextScorer(judge or scoring_judge(cfg), texts["mauve_reference"], train_texts, cfg)
    per_seed, warnings = [], []
    for gen in texts["per_seed"]:
        seed = gen["seed"]
        row = {"seed": seed, "generation_seconds": gen["generation_seconds"]}
        for name in ("model", "reference"):
            row[name], notes = scorer.score(list(gen[name]))
            warnings += [f"seed {seed}, {name}: {n}" for n in notes]
        row["samples"], row["reference_samples"] = gen["model"][:8], gen["reference"][:8]
        per_seed.append(row)
        log.info("seed %d: model %s | reference %s", seed, _brief(row["model"]), _brief(row["reference"]))
    info = texts["model_info"]
    report = {
        "run": info["run"],
        "config": info["config"],
        "protocol": protocol(cfg, info, scorer, texts["pool_size"]),
        "training": info.get("training", {}),
        "settings": {**asdict(cfg), "mauve": cfg.mauve.to_dict()},
    }
    for row in ("model", "reference"):
        report[row] = {m: summarize([r[row][m] for r in per_seed]) for m in METRICS}
        report[row]["num_empty"] = sum(r[row]["num_empty"] for r in per_seed)
    report["collapse"] = collapse_check(report["model"], report["reference"])
    if report["collapse"]["collapsed"]:
        c = report["collapse"]
        ratios = ", ".join(f"{m} {c[f'{m}_ratio']:.2f}x" for m in ("entropy", "div") if c[f"{m}_ratio"] is not None)
        warnings.append(
            f"samples collapsed: {ratios} the reference's (floors: entropy {c['entropy_ratio_min']}x, "
            f"div {c['div_ratio_min']}x): a low judge PPL here is repetition"
        )
        log.warning(warnings[-1])
    report.update(
        per_seed=per_seed,
        generation_seconds_per_sample=sum(r["generation_seconds"] for r in per_seed)
        / (len(per_seed) * cfg.num_samples),
        warnings=warnings,
        seconds=texts["seconds"] + time.perf_counter() - start,
    )
    return report


def collapse_check(model_row: dict, reference_row: dict, *, entropy_ratio: float = 0.9, div_ratio: float = 0.5) -> dict:
    """Flags samples that collapsed into repetition: mean entropy below ``entropy_ratio`` x the reference's or mean
    Div below ``div_ratio`` x the reference's (a low judge PPL from "she she she" must not read as fluency)."""
    out: dict = {"entropy_ratio_min": entropy_ratio, "div_ratio_min": div_ratio, "collapsed": False}
    for metric, floor in (("entropy", entropy_ratio), ("div", div_ratio)):
        ours, real = model_row[metric]["mean"], reference_row[metric]["mean"]
        ratio = ours / real if ours is not None and real else None
        out[f"{metric}_ratio"] = ratio
        out["collapsed"] |= ratio is not None and ratio < floor
    return out


def evaluate_model(
    model, train_texts: Sequence[str], heldout_texts: Sequence[str], cfg: SuiteConfig, judge: ScoringJudge | None = None
) -> dict:
    """Run the suite on a :class:`~ldlm.pipeline.LatentDiffusionLM`; returns the report dict (see module doc).
    ``judge``: a :func:`scoring_judge` of ``cfg`` to reuse (e.g. across the runs of an ablation)."""
    return score_texts(generate_texts(model, heldout_texts, cfg), train_texts, cfg, judge)


def _brief(values: dict) -> str:
    return ", ".join(f"{m}={values[m]:.3g}" if values[m] is not None else f"{m}=n/a" for m in METRICS)

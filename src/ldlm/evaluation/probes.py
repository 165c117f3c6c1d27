"""Latent-space probes (COSMOS §5, LDLM Fig. 3-4): how smooth and robust the latent space is.

All probes work in the diffusion's space (normalised latents ``z: (B, N, d)``, unit variance per coordinate),
so σ and ν are in units of the latents' std. Each returns ``{"probe", "x", x values, "curves": {label:
{metric: [value per x]}}, ...}``; :func:`write_probe` turns that into JSON + one PNG (a panel per metric).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ldlm.diffusion import SAMPLERS, diffusion_loss, sample_latents
from ldlm.evaluation.conditional import bleu
from ldlm.evaluation.judge import JudgeLM
from ldlm.evaluation.metrics import unigram_entropy
from ldlm.evaluation.suite import model_texts
from ldlm.reporting.figures import plot_curves
from ldlm.storage.io import atomic_write_json

__all__ = [
    "PROBES",
    "decoder_robustness_probe",
    "frequency_probe",
    "interpolation_probe",
    "interpolation_texts",
    "loss_vs_t_probe",
    "mismatch_probe",
    "position_probe",
    "token_frequency_ranks",
    "score_interpolation",
    "trajectory_probe",
    "write_probe",
]

DETERMINISTIC = ("euler", "ddim")


def _noise(shape: Sequence[int], seed: int, device: torch.device) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed)).to(device)


def _check_texts(texts: Sequence[str], least: int = 1) -> list[str]:
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if len(texts) < least:
        raise ValueError(f"this probe needs at least {least} non-empty texts, got {len(texts)}")
    return texts


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error of (B, N, d) tensors -> (B,)."""
    return ((a - b) ** 2).flatten(1).mean(1)


def denoise_from(model, z0: torch.Tensor, t: float, steps: int, seed: int = 0) -> torch.Tensor:
    """Noise clean latents z0: (B, N, d) to time ``t``, then run the run's sampler from t to 0 -> (B, N, d)."""
    eps = _noise(z0.shape, seed, model.device)
    z_t = model.schedule.add_noise(z0, torch.full((z0.shape[0],), t, device=model.device), eps)
    return sample_latents(
        model.denoiser,
        model.schedule,
        tuple(z0.shape),
        steps=steps,
        sampler=model.cfg.sample.sampler,
        generator=torch.Generator().manual_seed(seed + 1),
        device=model.device,
        z_init=z_t,
        t_start=t,
    )


def _judge_or_none(judge: JudgeLM, texts: list[str]) -> float | None:
    try:
        return judge.perplexity(texts)["token_ppl"]
    except ValueError:  # every decoded text empty: undefined, reported as null
        return None


def interpolation_texts(
    model,
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    *,
    mus: Sequence[float] = tuple(i / 10 for i in range(11)),
    noise_ts: Sequence[float] = (0.0, 0.5),
    denoise_steps: int = 1,
    seed: int = 0,
) -> dict:
    """Texts decoded from ``μ z1 + (1-μ) z2``, optionally noised to t and denoised, per curve and μ (unscored,
    JSON-serialisable: :func:`score_interpolation` judges them, possibly on another machine).

    ``denoise_steps=1`` is COSMOS §5.1: a single x0 prediction from ``z_t``; more steps run the sampler to 0.
    """
    a, b = _check_texts(texts_a), _check_texts(texts_b)
    if len(a) != len(b):
        raise ValueError(f"interpolation pairs texts one to one: got {len(a)} and {len(b)} non-empty texts")
    z1, z2 = model.encode(a), model.encode(b)  # (B, N, d)
    decoded = {}
    for t in noise_ts:
        label = "no noise" if t == 0 else f"noised to t={t:g}, denoised in {denoise_steps} step(s)"
        per_mu = []
        for mu in mus:
            z = mu * z1 + (1 - mu) * z2
            if t > 0:
                z = denoise_from(model, z, t, denoise_steps, seed)
            per_mu.append(model.decode(z))
        decoded[label] = per_mu
    return {"mu": list(mus), "texts": decoded, "num_pairs": len(a), "seed": seed}


def score_interpolation(decoded: dict, judge: JudgeLM) -> dict:
    """The interpolation probe's curves (judge PPL, entropy per μ) from :func:`interpolation_texts`' output."""
    curves, examples = {}, {}
    for label, per_mu in decoded["texts"].items():
        ppl = [_judge_or_none(judge, list(texts)) for texts in per_mu]
        ent = [unigram_entropy(texts) if any(x.strip() for x in texts) else None for texts in per_mu]
        curves[label] = {"judge_ppl": ppl, "entropy": ent}
        examples[label] = [texts[0] for texts in per_mu]
    return {
        "probe": "interpolation",
        "x": "mu",
        "mu": list(decoded["mu"]),
        "curves": curves,
        "examples_pair0": examples,
        "num_pairs": decoded["num_pairs"],
        "judge": judge.name,
        "seed": decoded["seed"],
    }


def interpolation_probe(model, judge: JudgeLM, texts_a: Sequence[str], texts_b: Sequence[str], **kwargs) -> dict:
    """Judge PPL and entropy of texts decoded along latent interpolations (COSMOS Fig. 3, LDLM Fig. 3);
    ``kwargs``: those of :func:`interpolation_texts`."""
    return score_interpolation(interpolation_texts(model, texts_a, texts_b, **kwargs), judge)


def decoder_robustness_probe(
    model, texts: Sequence[str], *, sigmas: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0), seed: int = 0
) -> dict:
    """Corpus BLEU of ``decode(z + σ ε)`` against the source text (as the model tokenizer writes it), per σ."""
    texts = _check_texts(texts)
    sources = model_texts(model, texts)
    z = model.encode(texts)  # (B, N, d)
    eps = _noise(z.shape, seed, model.device)
    scores, examples = [], []
    for sigma in sigmas:
        decoded = model.decode(z + sigma * eps)
        scores.append(bleu(decoded, sources))
        examples.append(decoded[0])
    return {
        "probe": "robustness",
        "x": "sigma",
        "sigma": list(sigmas),
        "curves": {"decoded": {"bleu": scores}},
        "source0": sources[0],
        "examples0": examples,
        "num_texts": len(texts),
        "seed": seed,
    }


def mismatch_probe(
    model, texts: Sequence[str], *, num_samples: int = 64, steps_list: Sequence[int] = (10, 50, 200), seed: int = 0
) -> dict:
    """Train-inference mismatch ``MSE(ẑ, E(D(ẑ)))`` of generated latents per step count; real latents beside."""
    texts = _check_texts(texts)
    z_real = model.encode(texts)
    real = _mse(z_real, model.encode(model.decode(z_real))).mean().item()
    generated = []
    for steps in steps_list:
        z_hat = model.generate_latents(num_samples, steps=steps, seed=seed)  # (B, N, d)
        generated.append(_mse(z_hat, model.encode(model.decode(z_hat))).mean().item())
    return {
        "probe": "mismatch",
        "x": "steps",
        "steps": list(steps_list),
        "curves": {"generated": {"mse": generated}, "real (held-out texts)": {"mse": [real] * len(steps_list)}},
        "num_samples": num_samples,
        "num_texts": len(texts),
        "seed": seed,
    }


@torch.inference_mode()
def _walk(model, z: torch.Tensor, grid: torch.Tensor, x0: torch.Tensor | None, sampler: str):
    """Deterministic sampler steps along ``grid`` from state z: (B, N, d); returns (z, last x0 estimate)."""
    for i in range(len(grid) - 1):
        x0 = model.denoiser(z, grid[i].expand(z.shape[0]), x0)
        z = SAMPLERS[sampler](model.schedule, z, x0, grid[i], grid[i + 1], None)
    return z, x0


def trajectory_probe(
    model,
    *,
    num_samples: int = 32,
    nus: Sequence[float] = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0),
    t_perturb: Sequence[float] = (0.1, 0.3),
    steps: int | None = None,
    sampler: str = "euler",
    seed: int = 0,
) -> dict:
    """Perturb the sampler state at a late time t by ``ν ε``, continue; MSE of the final ẑ_0 to the unperturbed."""
    if sampler not in DETERMINISTIC:
        raise ValueError(
            f"trajectory probe needs a deterministic sampler ({' | '.join(DETERMINISTIC)}), got {sampler!r}"
        )
    steps = steps or model.cfg.sample.steps
    grid = torch.linspace(model.schedule.t_max, 0.0, steps + 1, device=model.device)
    z1 = _noise((num_samples, *model.latent_shape), seed, model.device)
    eps = _noise(z1.shape, seed + 1, model.device)
    curves = {}
    for t in t_perturb:
        k = int((grid > t).sum())  # steps taken before reaching t
        if not 0 < k < steps:
            raise ValueError(f"t_perturb={t} must lie strictly inside the sampling grid (0, {model.schedule.t_max})")
        z_k, x0_k = _walk(model, z1, grid[: k + 1], None, sampler)
        _, clean = _walk(model, z_k, grid[k:], x0_k, sampler)
        mse = [_mse(_walk(model, z_k + nu * eps, grid[k:], x0_k, sampler)[1], clean).mean().item() for nu in nus]
        curves[f"perturbed at t={grid[k].item():.3f} (step {k}/{steps})"] = {"mse": mse}
    return {
        "probe": "trajectory",
        "x": "nu",
        "nu": list(nus),
        "curves": curves,
        "sampler": sampler,
        "steps": steps,
        "num_samples": num_samples,
        "seed": seed,
    }


LOSS_T_GRID = (0.01, 0.02, 0.03, 0.04, *(i / 20 for i in range(1, 20)))  # dense at small t, where words are settled


@torch.inference_mode()
def loss_vs_t_probe(model, texts: Sequence[str], *, ts: Sequence[float] = LOSS_T_GRID, seed: int = 0) -> dict:
    """Held-out x0-MSE diffusion loss at fixed t, without and with self-conditioning (one fixed eps per t), beside
    the identity baseline x0_hat = z_t / sqrt(alpha) with the same eps, which a useful denoiser must beat at small t."""
    texts = _check_texts(texts)
    z0 = model.encode(texts)  # (B, N, d)
    labels = ("no self-conditioning", "self-conditioned", "identity z_t / sqrt(alpha)")
    curves: dict = {label: {"loss": []} for label in labels}
    for i, t in enumerate(ts):
        tb = torch.full((z0.shape[0],), float(t), device=model.device)
        for label, p in zip(labels[:2], (0.0, 1.0), strict=True):
            g = torch.Generator().manual_seed(seed + i)  # the same eps for both variants and the baseline
            loss = diffusion_loss(model.denoiser, model.schedule, z0, tb, self_condition_prob=p, generator=g)
            curves[label]["loss"].append(loss.mean().item())
        eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed + i)).to(z0.device)
        alpha = model.schedule.alpha(tb[:1])
        identity = model.schedule.add_noise(z0, tb, eps) / alpha.sqrt()
        curves[labels[2]]["loss"].append(((identity - z0) ** 2).mean().item())
    beats = [m < b for m, b in zip(curves[labels[1]]["loss"], curves[labels[2]]["loss"], strict=True)]
    small = [b for t, b in zip(ts, beats, strict=True) if t <= 0.05]
    return {
        "probe": "loss-t",
        "x": "t",
        "t": list(ts),
        "curves": curves,
        "beats_identity_at_t_le_0.05": all(small) if small else None,
        "num_texts": len(texts),
        "seed": seed,
    }


@torch.inference_mode()
def position_probe(
    model, texts: Sequence[str], *, num_samples: int = 64, steps: int | None = None, seed: int = 0
) -> dict:
    """Per token position: accuracy of ``decode(encode(w))`` and of the token head on the true h (held-out texts),
    and the share of distinct tokens among generated samples. Shows positions the latents lose, e.g. position 0
    of a causal encoder, where an input-independent attention sink hides the token (see ``encoder.prefix_bos``)."""
    texts = _check_texts(texts)
    ids, mask = model.tokenize(texts)  # (B, L)
    real = mask.float()
    count = real.sum(0)  # (L,) texts that reach each position

    def accuracy(predicted: torch.Tensor) -> list[float | None]:
        hits = ((predicted == ids).float() * real).sum(0)
        return [h / c if c else None for h, c in zip(hits.tolist(), count.tolist(), strict=True)]

    h = model.features(ids, mask)
    samples = model.decode_ids(model.generate_latents(num_samples, steps=steps or model.cfg.sample.steps, seed=seed))
    return {
        "probe": "positions",
        "x": "position",
        "position": list(range(ids.shape[1])),
        "curves": {
            "decode(encode(w)), held-out": {"accuracy": accuracy(model.decode_ids(model.encode(texts)))},
            "token head on the true h": {"accuracy": accuracy(model.autoencoder.logits(h, mask).argmax(-1))},
            "generated samples": {"distinct tokens": [len(set(col.tolist())) / num_samples for col in samples.T]},
        },
        "num_texts": len(texts),
        "num_samples": num_samples,
        "seed": seed,
    }


# frequency-rank buckets of the frequency probe: [lo, hi) of the rank (0 = the most frequent training token)
FREQUENCY_BUCKETS = ((0, 10, "top-10"), (10, 100, "10-100"), (100, 1000, "100-1k"), (1000, 10_000, "1k-10k"))
RARER, UNSEEN = "rarer (rank >= 10k)", "unseen in training"


@torch.inference_mode()
def token_frequency_ranks(model, texts: Sequence[str], *, batch_size: int = 1024) -> tuple[torch.Tensor, int]:
    """Frequency rank of every vocabulary id among the tokens of ``texts`` (tokenised as the model reads them:
    ``model.tokenize``, padding excluded): (V,) long, 0 = the most frequent (ties by id), -1 = never seen; and the
    number of tokens counted."""
    vocab = model.autoencoder.vocab_size
    counts = torch.zeros(vocab, dtype=torch.long)
    for start in range(0, len(texts), batch_size):
        ids, mask = model.tokenize(list(texts[start : start + batch_size]))
        counts += torch.bincount(ids[mask.bool()].cpu(), minlength=vocab)[:vocab]
    order = torch.sort(-counts, stable=True).indices  # most frequent first, ties by id
    ranks = torch.empty(vocab, dtype=torch.long)
    ranks[order] = torch.arange(vocab)
    ranks[counts == 0] = -1
    return ranks, int(counts.sum())


@torch.inference_mode()
def frequency_probe(
    model, texts: Sequence[str], train_texts: Sequence[str], *, max_train_texts: int | None = 100_000
) -> dict:
    """Per frequency bucket of the held-out tokens (their rank in the run's training texts, log-spaced: top-10,
    10-100, 100-1k, 1k-10k, rarer, unseen in training): the share of held-out tokens and the accuracy of
    ``decode(encode(w))`` and of the token head on the true h. Shows whether the lost tokens are the rare ones.
    The ranks count the first ``max_train_texts`` training texts (None: all)."""
    texts = _check_texts(texts)
    counted = list(train_texts[:max_train_texts] if max_train_texts is not None else train_texts)
    ranks, train_tokens = token_frequency_ranks(model, _check_texts(counted))
    ids, mask = model.tokenize(texts)  # (B, L)
    real = mask.bool()
    rank = ranks.to(ids.device)[ids]  # (B, L)
    edges = torch.tensor([hi for _, hi, _ in FREQUENCY_BUCKETS], device=ids.device)
    bucket = torch.bucketize(rank, edges, right=True)  # 0 .. len(FREQUENCY_BUCKETS) (rarer)
    bucket[rank < 0] = len(FREQUENCY_BUCKETS) + 1  # unseen
    labels = [label for *_, label in FREQUENCY_BUCKETS] + [RARER, UNSEEN]
    tokens = [int((real & (bucket == b)).sum()) for b in range(len(labels))]
    total = sum(tokens)

    def accuracy(predicted: torch.Tensor) -> list[float | None]:
        hit = (predicted == ids) & real
        return [int((hit & (bucket == b)).sum()) / n if n else None for b, n in enumerate(tokens)]

    h = model.features(ids, mask)
    return {
        "probe": "frequency",
        "x": "bucket",
        "bucket": labels,
        "curves": {
            "decode(encode(w)), held-out": {"accuracy": accuracy(model.decode_ids(model.encode(texts)))},
            "token head on the true h": {"accuracy": accuracy(model.autoencoder.logits(h, mask).argmax(-1))},
            "held-out tokens": {"share": [n / total for n in tokens]},
        },
        "tokens": tokens,
        "num_texts": len(texts),
        "train_texts_counted": len(counted),
        "train_tokens_counted": train_tokens,
        "vocab_seen_in_training": int((ranks >= 0).sum()),
    }


PROBES = ("interpolation", "robustness", "mismatch", "trajectory", "loss-t", "positions", "frequency")
_LOG_METRICS = ("judge_ppl", "mse")


def write_probe(result: dict, out: str | Path) -> dict[str, Path]:
    """JSON at ``out`` and a PNG beside it with one panel per metric, x = the probe's swept variable."""
    out = Path(out)
    x = result[result["x"]]
    metrics = list(dict.fromkeys(m for curve in result["curves"].values() for m in curve))
    panels = [(m, m, {label: (x, c[m]) for label, c in result["curves"].items() if m in c}) for m in metrics]
    png = plot_curves(
        out.with_suffix(".png"),
        panels,
        xlabel=result["x"],
        title=f"probe: {result['probe']}",
        log_panels=[m for m in metrics if m in _LOG_METRICS],
    )
    atomic_write_json(out, result)
    return {"json": out, "png": png}

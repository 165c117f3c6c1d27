"""Latent-space probes on an untrained tiny model: each probe's numbers recomputed directly from the model."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from ldlm.config import load_config
from ldlm.diffusion import diffusion_loss, sample_latents
from ldlm.evaluation import probes
from ldlm.evaluation.conditional import bleu
from ldlm.evaluation.suite import model_texts
from ldlm.pipeline import LatentDiffusionLM

TEXTS = ["the market fell sharply on monday.", "she said the plan would work.", "rain is expected later today."]
OTHER = ["officials declined to comment.", "the team won its third game.", "prices rose by two percent."]


@pytest.fixture(scope="module")
def model() -> LatentDiffusionLM:
    torch.manual_seed(0)
    return LatentDiffusionLM(load_config("tiny")).eval()


class CountingJudge:
    """Judge stand-in: 'PPL' = number of non-empty texts, and it records what it was asked to score."""

    name = "counting"

    def __init__(self):
        self.seen: list[list[str]] = []

    def perplexity(self, texts):
        self.seen.append(list(texts))
        return {"token_ppl": float(sum(bool(t.strip()) for t in texts))}


def test_interpolation_endpoints_decode_the_endpoints(model):
    judge = CountingJudge()
    out = probes.interpolation_probe(
        model, judge, TEXTS, OTHER, mus=(0.0, 0.5, 1.0), noise_ts=(0.0, 0.5), denoise_steps=3
    )
    clean = out["examples_pair0"]["no noise"]
    assert clean[0] == model.decode(model.encode(OTHER))[0]  # mu = 0 -> z2
    assert clean[2] == model.decode(model.encode(TEXTS))[0]  # mu = 1 -> z1
    assert judge.seen[0] == model.decode(model.encode(OTHER))  # all pairs judged at each mu
    assert len(out["curves"]) == 2 and all(len(c["judge_ppl"]) == 3 for c in out["curves"].values())
    z = 0.5 * model.encode(TEXTS) + 0.5 * model.encode(OTHER)
    noised = model.decode(probes.denoise_from(model, z, 0.5, 3, seed=0))
    assert judge.seen[4] == noised  # second curve, mu = 0.5: noised to t, denoised with the fixed seed


def test_decoder_robustness_bleu_per_sigma(model):
    out = probes.decoder_robustness_probe(model, TEXTS, sigmas=(0.0, 2.0), seed=3)
    z = model.encode(TEXTS)
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
    sources = model_texts(model, TEXTS)
    assert out["curves"]["decoded"]["bleu"] == [
        bleu(model.decode(z), sources),
        bleu(model.decode(z + 2 * eps), sources),
    ]
    assert out["source0"] == TEXTS[0]  # already lowercase and short: the round trip keeps it


def test_mismatch_mse_by_hand(model):
    out = probes.mismatch_probe(model, TEXTS, num_samples=4, steps_list=(2,), seed=1)
    z = model.encode(TEXTS)
    real = ((z - model.encode(model.decode(z))) ** 2).mean().item()
    z_hat = model.generate_latents(4, steps=2, seed=1)
    generated = ((z_hat - model.encode(model.decode(z_hat))) ** 2).mean().item()
    assert out["curves"]["real (held-out texts)"]["mse"] == [pytest.approx(real)]
    assert out["curves"]["generated"]["mse"] == [pytest.approx(generated)]


def test_trajectory_walk_equals_sampler_and_zero_perturbation_gives_zero(model):
    z1 = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    grid = torch.linspace(model.schedule.t_max, 0.0, 6)
    _, x0 = probes._walk(model, z1, grid, None, "euler")
    expected = sample_latents(model.denoiser, model.schedule, tuple(z1.shape), steps=5, sampler="euler", z_init=z1)
    torch.testing.assert_close(x0, expected)
    out = probes.trajectory_probe(model, num_samples=2, nus=(0.0, 0.5), t_perturb=(0.3,), steps=5)
    (mse,) = out["curves"].values()
    assert mse["mse"][0] == 0.0 and mse["mse"][1] > 0.0


def test_loss_vs_t_equals_diffusion_loss(model):
    out = probes.loss_vs_t_probe(model, TEXTS, ts=(0.2, 0.8), seed=5)
    z0 = model.encode(TEXTS)
    for i, t in enumerate((0.2, 0.8)):
        tb = torch.full((3,), t)
        for label, p in (("no self-conditioning", 0.0), ("self-conditioned", 1.0)):
            g = torch.Generator().manual_seed(5 + i)
            loss = diffusion_loss(model.denoiser, model.schedule, z0, tb, self_condition_prob=p, generator=g)
            assert out["curves"][label]["loss"][i] == pytest.approx(loss.mean().item())
        # the identity baseline with the same eps: its error is (1 - alpha) / alpha * E[eps^2] ~ (1 - alpha) / alpha
        alpha = model.schedule.alpha(torch.tensor(t)).item()
        assert out["curves"]["identity z_t / sqrt(alpha)"]["loss"][i] == pytest.approx((1 - alpha) / alpha, rel=0.5)
    assert out["beats_identity_at_t_le_0.05"] is None  # no t <= 0.05 on this grid
    dense = probes.loss_vs_t_probe(model, TEXTS, ts=(0.01, 0.05, 0.5), seed=5)
    ident, ours = dense["curves"]["identity z_t / sqrt(alpha)"]["loss"], dense["curves"]["self-conditioned"]["loss"]
    assert dense["beats_identity_at_t_le_0.05"] == (ours[0] < ident[0] and ours[1] < ident[1])


def test_position_probe_per_position_figures_by_hand(model):
    out = probes.position_probe(model, TEXTS, num_samples=4, steps=2, seed=3)
    ids, mask = model.tokenize(TEXTS)
    predicted = {
        "decode(encode(w)), held-out": model.decode_ids(model.encode(TEXTS)),
        "token head on the true h": model.autoencoder.logits(model.features(ids, mask), mask).argmax(-1),
    }
    real = mask.bool()
    for label, pred in predicted.items():
        expected = [
            (pred[real[:, p], p] == ids[real[:, p], p]).float().mean().item() if real[:, p].any() else None
            for p in range(ids.shape[1])
        ]
        assert out["curves"][label]["accuracy"] == pytest.approx(expected)
    assert out["curves"]["decode(encode(w)), held-out"]["accuracy"][-1] is None  # no text reaches the last position
    samples = model.decode_ids(model.generate_latents(4, steps=2, seed=3))
    assert out["curves"]["generated samples"]["distinct tokens"] == [len(set(c.tolist())) / 4 for c in samples.T]
    assert out["position"] == list(range(ids.shape[1]))


TRAIN = ["the market fell.", "the plan would work.", "the the the rain is expected.", "she said the team won."]


def test_frequency_probe_per_bucket_figures_by_hand(model):
    out = probes.frequency_probe(model, TEXTS + OTHER, TRAIN)
    # ranks by hand: count the training tokens (padding excluded), most frequent first, ties by id
    train_ids, train_mask = model.tokenize(TRAIN)
    counts = Counter(train_ids[train_mask.bool()].tolist())
    rank = {tok: r for r, tok in enumerate(sorted(counts, key=lambda tok: (-counts[tok], tok)))}
    edges = [(0, 10), (10, 100), (100, 1000), (1000, 10_000), (10_000, float("inf"))]
    ids, mask = model.tokenize(TEXTS + OTHER)
    real = mask.bool()
    tokens = ids[real].tolist()

    def bucket_of(tok: int) -> int:
        if tok not in rank:
            return len(edges)  # unseen in training
        return next(b for b, (lo, hi) in enumerate(edges) if lo <= rank[tok] < hi)

    buckets = [bucket_of(tok) for tok in tokens]
    assert out["bucket"][-1] == "unseen in training" and len(out["bucket"]) == len(edges) + 1
    assert out["tokens"] == [buckets.count(b) for b in range(len(edges) + 1)]
    shares = out["curves"]["held-out tokens"]["share"]
    assert sum(shares) == pytest.approx(1.0) and sum(out["tokens"]) == len(tokens)  # the buckets partition them
    assert out["tokens"][-1] > 0 and out["tokens"][0] > 0  # "officials", "prices" ... never occur in TRAIN
    assert out["tokens"][-1] == sum(tok not in counts for tok in tokens)
    predicted = {
        "decode(encode(w)), held-out": model.decode_ids(model.encode(TEXTS + OTHER))[real].tolist(),
        "token head on the true h": model.autoencoder.logits(model.features(ids, mask), mask).argmax(-1)[real].tolist(),
    }
    for label, pred in predicted.items():
        expected = []
        for b in range(len(edges) + 1):
            hits = [p == t for p, t, k in zip(pred, tokens, buckets, strict=True) if k == b]
            expected.append(sum(hits) / len(hits) if hits else None)
        assert out["curves"][label]["accuracy"] == pytest.approx(expected)
    assert out["curves"]["token head on the true h"]["accuracy"][2] is None  # no token ranks 100-1k here
    assert out["train_texts_counted"] == len(TRAIN) and out["train_tokens_counted"] == sum(counts.values())
    assert out["vocab_seen_in_training"] == len(counts)
    assert probes.frequency_probe(model, TEXTS, TRAIN, max_train_texts=1)["train_texts_counted"] == 1


def test_frequency_probe_png_has_a_panel_per_measure(model, tmp_path):
    out = probes.frequency_probe(model, TEXTS, TRAIN)
    paths = probes.write_probe(out, tmp_path / "frequency.json")
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(paths["json"].read_text())["bucket"] == out["bucket"]
    assert "frequency" in probes.PROBES  # `ldlm probe all` runs it


def test_probe_bad_inputs(model):
    with pytest.raises(ValueError, match="non-empty texts"):
        probes.decoder_robustness_probe(model, ["", "  "])
    with pytest.raises(ValueError, match="one to one"):
        probes.interpolation_probe(model, CountingJudge(), TEXTS, OTHER[:2])
    with pytest.raises(ValueError, match="deterministic sampler"):
        probes.trajectory_probe(model, sampler="euler_maruyama")
    with pytest.raises(ValueError, match="strictly inside"):
        probes.trajectory_probe(model, num_samples=2, t_perturb=(0.9999,), steps=5)


def test_write_probe_json_and_png(tmp_path):
    result = {"probe": "demo", "x": "sigma", "sigma": [0, 1], "curves": {"a": {"bleu": [50.0, None], "mse": [1, 2]}}}
    paths = probes.write_probe(result, tmp_path / "p.json")
    assert json.loads(paths["json"].read_text()) == result
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_probe_command_on_missing_run_is_one_clear_error(tmp_path, capsys):
    from ldlm.cli import main

    assert main(["probe", "robustness", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ldlm probe: error: ")

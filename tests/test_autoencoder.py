"""COSMOS stage-1 signals (Sec. 4.2.2, App. D.1): perturbations, latent dropout, KL, CE variants, head."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ldlm.config import AutoencoderConfig
from ldlm.model.autoencoder import TextAutoencoder
from ldlm.objectives.augment import augmentation_strength, latent_dropout, perturb_activations
from ldlm.objectives.head import centroid_head_
from ldlm.objectives.losses import kl_divergence, token_cross_entropy


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _cfg(**kw):
    base = dict(num_latents=2, width=16, heads=4, encoder_blocks=1, decoder_blocks=1)
    base.update(kw)
    return AutoencoderConfig(**base)


def _calls_of_kind(kind, h, mask, cfg, strength, n, seed=0):
    g, out = _gen(seed), []
    while len(out) < n:
        hp, k = perturb_activations(h, mask, cfg, strength, g)
        if k == kind:
            out.append(hp)
    return out


# ----------------------------------------------------------------------------- activation perturbations


def test_masking_zeroes_about_mask_prob_of_real_vectors_and_never_pads():
    cfg = _cfg()
    b, length, d = 32, 40, 6
    h = torch.randn(b, length, d) + 3.0  # no exact zeros anywhere (pads included, on purpose)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[:, 30:] = 0
    dropped = kept = 0
    for hp in _calls_of_kind("mask", h, mask, cfg, 1.0, 20):
        zero = (hp == 0).all(-1)
        partial = ((hp == 0).any(-1)) & ~zero
        assert not partial.any(), "masking must zero whole vectors of h"
        assert not zero[:, 30:].any(), "padding positions must never be touched"
        assert torch.equal(hp[~zero], h[~zero]), "vectors that are not masked stay unchanged"
        dropped += zero[:, :30].sum().item()
        kept += (~zero[:, :30]).sum().item()
    share = dropped / (dropped + kept)  # 20 * 32 * 30 = 19200 Bernoulli(0.3) draws: std ~0.0033
    assert abs(share - 0.3) < 0.02


def test_masking_probability_scales_with_strength():
    cfg = _cfg(mask_prob=0.3)
    h = torch.ones(32, 40, 4)
    mask = torch.ones(32, 40)
    zeros = [(hp == 0).all(-1).float().mean().item() for hp in _calls_of_kind("mask", h, mask, cfg, 0.5, 15)]
    assert abs(sum(zeros) / len(zeros) - 0.15) < 0.02


@pytest.mark.parametrize("strength, delta", [(1.0, 0.7), (0.5, 0.85)])
def test_noising_formula(strength, delta):
    """h' = delta h + sqrt(1 - delta^2) eps: the reconstructed eps is N(0, 1) and independent of h."""
    cfg = _cfg(noise_delta=0.7)
    torch.manual_seed(0)
    h = torch.randn(16, 32, 32)
    mask = torch.ones(16, 32)
    hp = _calls_of_kind("noise", h, mask, cfg, strength, 1)[0]
    eps = (hp - delta * h) / math.sqrt(1 - delta**2)
    assert abs(eps.mean().item()) < 0.02
    assert abs(eps.std().item() - 1.0) < 0.02
    corr = torch.corrcoef(torch.stack([eps.flatten(), h.flatten()]))[0, 1].item()
    assert abs(corr) < 0.03, "a wrong delta leaves a multiple of h in the reconstructed noise"
    assert abs(hp.var().item() - 1.0) < 0.03  # variance preserving on normalised h


def test_noising_matches_explicit_computation_with_identical_generator():
    cfg = _cfg(noise_delta=0.7)
    h = torch.randn(3, 5, 4)
    mask = torch.ones(3, 5)
    for seed in range(20):
        hp, kind = perturb_activations(h, mask, cfg, 1.0, _gen(seed))
        if kind != "noise":
            continue
        g = _gen(seed)
        assert torch.rand((), generator=g).item() >= 0.5  # the coin that chose noising
        eps = torch.randn(h.shape, generator=g)
        torch.testing.assert_close(hp, 0.7 * h + math.sqrt(1 - 0.49) * eps)
        return
    pytest.fail("no noising in 20 seeds")


def test_both_perturbations_occur_equally_often():
    cfg = _cfg()
    h, mask, g = torch.randn(2, 8, 4), torch.ones(2, 8), _gen(1)
    kinds = [perturb_activations(h, mask, cfg, 1.0, g)[1] for _ in range(1000)]
    assert set(kinds) == {"mask", "noise"}
    assert abs(kinds.count("mask") / 1000 - 0.5) < 0.05  # std 0.016


def test_strength_zero_is_identity():
    cfg = _cfg()
    h = torch.randn(2, 8, 4)
    out, kind = perturb_activations(h, torch.ones(2, 8), cfg, 0.0, _gen())
    assert kind == "none" and torch.equal(out, h)


def test_augmentation_strength_ramp():
    paper = _cfg()
    assert augmentation_strength(paper, 0) == 1.0  # paper: on from the first step
    cfg = _cfg(augment_start_step=10, augment_ramp_steps=4)
    values = [augmentation_strength(cfg, s) for s in (0, 9, 10, 11, 12, 13, 14, 1000)]
    assert values == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cfg = _cfg(augment_start_step=5, augment_ramp_steps=0)
    assert [augmentation_strength(cfg, s) for s in (4, 5, 6)] == [0.0, 1.0, 1.0]


# ----------------------------------------------------------------------------- latent dropout and KL


def test_latent_dropout_zeroes_share_p_of_features_without_rescaling():
    z = torch.randn(64, 8, 32) + 5.0  # no natural zeros
    out = latent_dropout(z, 0.4, _gen())
    zero = out == 0
    assert abs(zero.float().mean().item() - 0.4) < 0.02
    assert torch.equal(out[~zero], z[~zero]), "kept features are not rescaled by 1/(1-p)"
    # individual features, not whole latent vectors
    per_vector = zero.float().mean(-1)
    assert ((per_vector > 0) & (per_vector < 1)).float().mean() > 0.9
    assert latent_dropout(z, 0.0, _gen()) is z


def test_kl_divergence_hand_computed():
    mean = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])  # (B=2, N=1, d=2)
    logvar = torch.tensor([[[0.0, math.log(2.0)]], [[0.0, 0.0]]])
    # sample 0: 0.5 * [(1 + 1 - 0 - 1) + (0 + 2 - log 2 - 1)] = 1 - log(2)/2 ; sample 1: 0; batch mean
    expected = (1 - math.log(2.0) / 2) / 2
    assert kl_divergence(mean, logvar).item() == pytest.approx(expected, rel=1e-6)
    assert kl_divergence(torch.zeros(3, 4, 5), torch.zeros(3, 4, 5)).item() == 0.0
    # sums over (N, d): doubling the number of latents doubles the value
    m = torch.randn(2, 3, 4)
    lv = torch.randn(2, 3, 4) * 0.3
    double = kl_divergence(torch.cat([m, m], 1), torch.cat([lv, lv], 1))
    assert double.item() == pytest.approx(2 * kl_divergence(m, lv).item(), rel=1e-5)


# ----------------------------------------------------------------------------- token cross-entropy


def _ce_setup(vocab=7, d=5, b=3, length=6, seed=0):
    torch.manual_seed(seed)
    head = nn.Linear(d, vocab)
    h_hat = torch.randn(b, length, d, requires_grad=True)
    targets = torch.randint(vocab, (b, length))
    mask = torch.ones(b, length, dtype=torch.long)
    mask[0, 4:] = 0
    mask[2, 2:] = 0
    return head, h_hat, targets, mask


def test_exact_ce_over_real_positions():
    head, h_hat, targets, mask = _ce_setup()
    got = token_cross_entropy(head, h_hat, targets, mask, positions=0, negatives=0, generator=_gen())
    real = mask.bool()
    expected = F.cross_entropy(head(h_hat)[real], targets[real])
    torch.testing.assert_close(got, expected)
    # padded positions do not count: garbage targets there change nothing
    targets2 = targets.clone()
    targets2[~real] = 0
    got2 = token_cross_entropy(head, h_hat, targets2, mask, positions=0, negatives=0, generator=_gen())
    torch.testing.assert_close(got2, got)
    # positions >= #real positions is the same as all of them
    got3 = token_cross_entropy(head, h_hat, targets, mask, positions=10**6, negatives=0, generator=_gen())
    torch.testing.assert_close(got3, got)


def test_ce_on_random_subset_of_positions():
    head, h_hat, targets, mask = _ce_setup(b=4, length=10)
    real = mask.bool()
    per_pos = F.cross_entropy(head(h_hat)[real], targets[real], reduction="none")
    got = token_cross_entropy(head, h_hat, targets, mask, positions=3, negatives=0, generator=_gen(5))
    pick = torch.randperm(per_pos.numel(), generator=_gen(5))[:3]
    torch.testing.assert_close(got, per_pos[pick].mean())


def test_sampled_ce_equals_full_ce_when_all_classes_are_drawn():
    head, h_hat, targets, mask = _ce_setup(vocab=7)
    full = token_cross_entropy(head, h_hat, targets, mask, positions=0, negatives=0, generator=_gen())
    sampled = token_cross_entropy(head, h_hat, targets, mask, positions=0, negatives=700, generator=_gen())
    torch.testing.assert_close(sampled, full)


def test_sampled_ce_with_negatives_equal_to_vocab_is_exact():
    head, h_hat, targets, mask = _ce_setup(vocab=50)
    full = token_cross_entropy(head, h_hat, targets, mask, positions=0, negatives=0, generator=_gen())
    sampled = token_cross_entropy(head, h_hat, targets, mask, positions=0, negatives=50, generator=_gen())
    torch.testing.assert_close(sampled, full)


def test_sampled_ce_uses_fewer_classes():
    head, h_hat, targets, mask = _ce_setup(vocab=200)
    full = token_cross_entropy(head, h_hat, targets, mask, positions=0, negatives=0, generator=_gen())
    sampled = token_cross_entropy(head, h_hat, targets, mask, positions=0, negatives=5, generator=_gen())
    assert sampled.item() < full.item()  # fewer classes in the softmax denominator


@pytest.mark.parametrize("negatives", [0, 20])
def test_detach_head_gives_no_gradient_to_the_head(negatives):
    head, h_hat, targets, mask = _ce_setup(vocab=30)
    loss = token_cross_entropy(
        head, h_hat, targets, mask, positions=0, negatives=negatives, generator=_gen(), detach_head=True
    )
    loss.backward()
    assert head.weight.grad is None and head.bias.grad is None
    assert h_hat.grad is not None and h_hat.grad.abs().sum() > 0  # the decoder still learns
    h_hat.grad = None
    token_cross_entropy(head, h_hat, targets, mask, positions=0, negatives=negatives, generator=_gen()).backward()
    assert head.weight.grad.abs().sum() > 0 and head.bias.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- centroid head


def test_centroid_head_classifies_class_means():
    torch.manual_seed(0)
    vocab, dim = 12, 8
    centers = torch.randn(5, dim) * 4
    classes = torch.tensor([1, 3, 4, 7, 10])  # seen classes; the others are never seen
    targets = classes.repeat_interleave(40)
    h = centers.repeat_interleave(40, 0) + 0.3 * torch.randn(200, dim)
    head = nn.Linear(dim, vocab)
    assert centroid_head_(head, h, targets) == 5
    means = torch.stack([h[targets == c].mean(0) for c in classes])
    scale = (head.weight[classes] / means).mean().item()  # the fitted temperature
    assert scale > 0
    torch.testing.assert_close(head.weight[classes], means * scale)
    with torch.no_grad():
        assert torch.equal(head(means).argmax(-1), classes)  # each class mean is classified as its class
        assert (head(h).argmax(-1) == targets).float().mean() > 0.99
        unseen = torch.ones(vocab, dtype=torch.bool)
        unseen[classes] = False
        assert (head.bias[unseen] < head.bias[classes].min()).all()
        assert (head.weight[unseen] == 0).all()
        # nearest-class-mean: logits rank the seen classes by distance to their mean
        x = torch.randn(50, dim) * 2
        torch.testing.assert_close(head(x)[:, classes].argmax(-1), torch.cdist(x, means).argmin(-1))


def test_centroid_head_temperature_minimises_cross_entropy():
    torch.manual_seed(0)
    vocab, dim = 30, 16
    centers = torch.randn(10, dim) * 3
    classes = torch.arange(10) * 3
    targets = classes.repeat_interleave(50)
    h = centers.repeat_interleave(50, 0) + 3.0 * torch.randn(500, dim)  # overlapping classes
    head = nn.Linear(dim, vocab)
    centroid_head_(head, h, targets)
    with torch.no_grad():
        logits = head(h)
        best = F.cross_entropy(logits, targets)
        # rescaling the logits (weights and biases together) in either direction only makes CE worse
        for factor in (0.5, 2.0):
            scaled = logits[:, classes] * factor
            assert F.cross_entropy(scaled, targets // 3) > F.cross_entropy(logits[:, classes], targets // 3)
        assert best < math.log(10)  # better than chance among the 10 seen classes


def test_centroid_head_never_predicts_unseen_classes():
    torch.manual_seed(0)
    vocab, dim = 12, 8
    classes = torch.tensor([1, 3, 4, 7, 10])
    centers = torch.randn(5, dim)
    centers = 9.0 * centers / centers.norm(dim=-1, keepdim=True)  # |mu|^2 / 2 = 40.5 > 30
    targets = classes.repeat_interleave(10)
    head = nn.Linear(dim, vocab)
    centroid_head_(head, centers.repeat_interleave(10, 0), targets)
    with torch.no_grad():
        pred = head(torch.zeros(1, dim)).argmax(-1)  # the normalised mean feature
    assert pred.item() in classes.tolist()


# ----------------------------------------------------------------------------- the module


def _ae(**kw):
    torch.manual_seed(0)
    return TextAutoencoder(_cfg(**kw), hidden_size=12, max_length=10, vocab_size=20)


def test_autoencoder_shapes():
    ae = _ae(latent_dim=6)
    h, mask = torch.randn(3, 10, 12), torch.ones(3, 10)
    z = ae.encode(h, mask)
    assert z.shape == (3, 2, 6)
    assert ae.decode_hidden(z, 10).shape == (3, 10, 12)
    assert ae.decode_hidden(z, 7).shape == (3, 7, 12)
    assert ae.decode_tokens(z, 10).shape == (3, 10)
    mean, logvar = ae.encode_distribution(h, mask)
    assert logvar is None and torch.equal(mean, z)


def test_vae_variant_outputs_mean_and_logvar():
    ae = _ae(latent_dim=6, kl_weight=0.01)
    assert ae.variational
    assert ae.compressor.proj_out.out_features == 2 * 6
    assert ae.decompressor.proj_in.in_features == 6
    h, mask = torch.randn(3, 10, 12), torch.ones(3, 10)
    mean, logvar = ae.encode_distribution(h, mask)
    assert mean.shape == logvar.shape == (3, 2, 6)
    torch.testing.assert_close(ae.encode(h, mask), mean)  # deterministic latents = posterior mean
    raw = ae.compressor(h, key_mask=mask)
    torch.testing.assert_close(raw[..., :6], mean)
    torch.testing.assert_close(raw[..., 6:].clamp(-30, 20), logvar)
    assert _ae(latent_dim=6).compressor.proj_out.out_features == 6  # kl_weight=0: no variance head


def test_stage1_objective_reconstructs_the_clean_features(tiny_run, monkeypatch):
    """CE + MSE are computed against the CLEAN h, the perturbation only enters the compressor's input,
    latent dropout is applied to z with the configured p."""
    from ldlm.data.sources import normalized_features
    from ldlm.objectives import autoencoder as stage1

    model = tiny_run.model
    seen = {}

    def fake_perturb(h, mask, cfg, strength, generator):
        seen["strength"] = strength
        return h + 1.0, "noise"

    def fake_dropout(z, p, generator):
        seen["p"], seen["z"] = p, z.detach().clone()
        return z

    monkeypatch.setattr(stage1, "perturb_activations", fake_perturb)
    monkeypatch.setattr(stage1, "latent_dropout", fake_dropout)
    task = stage1.AutoencoderTask(model, seed=0)
    ids, mask = model.tokenize(["the cat sat on the mat.", "rain fell over the quiet town."])
    batch = {"input_ids": ids, "attention_mask": mask}
    loss, metrics = task(batch, step=0)
    assert seen["strength"] == 1.0 and seen["p"] == pytest.approx(model.cfg.autoencoder.latent_dropout)
    with torch.no_grad():
        _, _, h = normalized_features(model, batch, torch.device("cpu"))
        ae = model.autoencoder
        z = ae.encode(h + 1.0, mask)
        torch.testing.assert_close(seen["z"], z)  # dropout sees the latents of the PERTURBED input
        h_hat = ae.decode_hidden(z, ids.shape[1])
        m = mask.unsqueeze(-1).float()
        clean = (((h_hat - h) ** 2) * m).sum() / (m.sum() * h.shape[-1])
        noisy = (((h_hat - h - 1.0) ** 2) * m).sum() / (m.sum() * h.shape[-1])
    assert metrics["mse"] == pytest.approx(clean.item(), rel=1e-4)
    assert abs(metrics["mse"] - noisy.item()) > 1e-3
    assert loss.item() == pytest.approx(metrics["ce"] + metrics["mse"], rel=1e-5)  # ce_weight = mse_weight = 1

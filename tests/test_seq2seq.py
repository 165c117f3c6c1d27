"""Seq2seq conditioning (COSMOS App. C.1): cross-attention masks, guidance, init from unconditional, bad input."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from ldlm_helpers import tiny_model

from ldlm import cli
from ldlm.config import DiffusionConfig, load_config
from ldlm.diffusion import build_denoiser
from ldlm.diffusion.conditioning import guided_prediction
from ldlm.evaluation.seq2seq import derange, margin_bootstrap
from ldlm.model.source_latents import encode_sources
from ldlm.recipes.seq2seq import init_from_unconditional
from ldlm.sampling.mbr import mbr_select
from ldlm.storage.io import WeightFileError

SMALL = DiffusionConfig(denoiser="transformer", layers=2, width=32, heads=4)


def _conditional(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    net = build_denoiser(
        DiffusionConfig(**{**SMALL.__dict__, "denoiser": kind}), latent_dim=3, num_latents=4, condition_layers=1,
        source_latents=8,
    ).eval()  # fmt: skip
    for cross in net.cross:  # leave the zero initialisation, so the source matters
        torch.nn.init.normal_(cross.attn.out.weight, std=0.3)
    if kind == "dit":  # open the adaLN-Zero gates, so the blocks are not the identity
        for block in net.blocks:
            torch.nn.init.normal_(block.ada[1].weight, std=0.3)
    return net


def _inputs(batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 3, generator=g), torch.rand(batch, generator=g), torch.randn(batch, 8, 3, generator=g)


@pytest.mark.parametrize("kind", ["transformer", "dit"])
def test_cross_attention_ignores_source_padding(kind):
    net = _conditional(kind)
    z, t, src = _inputs()
    mask = torch.tensor([[1] * 5 + [0] * 3, [1] * 8])
    with torch.no_grad():
        out = net(z, t, cond=net.encode_condition(src, mask))
        padded = src.clone()
        padded[0, 5:] += 100.0  # only sample 0's padding changes
        same = net(z, t, cond=net.encode_condition(padded, mask))
        real = src.clone()
        real[0, :5] += 1.0
        moved = net(z, t, cond=net.encode_condition(real, mask))
    assert torch.allclose(out, same, atol=1e-5)
    assert not torch.allclose(out[0], moved[0], atol=1e-3)
    assert torch.allclose(out[1], moved[1], atol=1e-6)  # samples do not see each other's sources


@pytest.mark.parametrize("kind", ["transformer", "dit"])
def test_guidance_scale_zero_is_the_unconditional_denoiser(kind):
    torch.manual_seed(3)
    uncond = build_denoiser(DiffusionConfig(**{**SMALL.__dict__, "denoiser": kind}), latent_dim=3, num_latents=4)
    net = _conditional(kind)
    missing, unexpected = net.load_state_dict(uncond.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("condition_encoder.", "cross.")) for k in missing)
    z, t, src = _inputs()
    x0 = torch.randn_like(z)
    cond = net.encode_condition(src, torch.ones(2, 8, dtype=torch.long))
    with torch.no_grad():
        expected = uncond.eval()(z, t, x0)
        assert torch.allclose(guided_prediction(net, z, t, x0, cond, 0.0), expected, atol=1e-6)
        assert not torch.allclose(guided_prediction(net, z, t, x0, cond, 1.0), expected, atol=1e-3)
        dropped = guided_prediction(net, z, t, x0, cond.__class__(cond.memory, cond.bias, torch.tensor([0, 1])), 1.0)
    assert torch.allclose(dropped[0], expected[0], atol=1e-6)  # condition dropout: that sample is unconditional
    assert not torch.allclose(dropped[1], expected[1], atol=1e-3)


@pytest.fixture(scope="module")
def seq2seq_model():
    return tiny_model(load_config("seq2seq_tiny"))


def test_source_windows_mask_padding(seq2seq_model, caplog):
    long = " ".join(["word"] * 80)
    with caplog.at_level(logging.WARNING, logger="ldlm.model.source_latents"):
        z, mask = encode_sources(seq2seq_model, ["a short source", long, "another short one"])
    n = seq2seq_model.cfg.autoencoder.num_latents
    assert z.shape == (3, 2 * n, seq2seq_model.autoencoder.latent_dim)
    assert mask[0].tolist() == [1] * n + [0] * n  # the second window holds only padding
    assert mask[1].tolist() == [1] * (2 * n)
    truncation = [r for r in caplog.records if "seq2seq.source_max_length" in r.getMessage()]
    assert len(truncation) == 1 and "1 of 3 sources" in truncation[0].getMessage()


def test_generate_with_guidance_zero_equals_unconditional_sampling(seq2seq_model):
    kw = dict(steps=3, seed=5, batch_size=8)
    uncond = seq2seq_model.generate_latents(2, **kw)
    guided = seq2seq_model.generate_latents(0, sources=["one source", "two"], guidance_scale=0.0, **kw)
    assert torch.allclose(uncond, guided)
    texts = seq2seq_model.generate(sources=["one source", "two"], num_candidates=2, **kw)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_bad_sources_fail_before_the_forward_pass(seq2seq_model):
    with pytest.raises(ValueError, match="source 1 is empty"):
        seq2seq_model.generate(sources=["fine", "   "])
    with pytest.raises(ValueError, match="non-empty list"):
        seq2seq_model.generate(sources=[])


def test_unconditional_model_refuses_sources(tmp_path):
    model = tiny_model(load_config("tiny"))
    with pytest.raises(ValueError, match="trained without sources"):
        model.generate(sources=["a source"], steps=2)
    model.save_pretrained(tmp_path / "model")
    source_file = tmp_path / "src.txt"
    source_file.write_text("a source\n")
    assert cli.main(["sample", str(tmp_path), "--source-file", str(source_file), "--steps", "2"]) == 2


def test_init_from_unconditional_leaves_only_new_parameters_fresh(tmp_path, seq2seq_model):
    base = tiny_model(load_config("tiny"), seed=7)
    base.latent_mean.fill_(0.5)
    base.save_pretrained(tmp_path / "base" / "model")
    model = tiny_model(load_config("seq2seq_tiny"), seed=8)
    fresh = init_from_unconditional(model, tmp_path / "base")  # a run directory holding model/
    assert fresh and all(k.startswith(("denoiser.condition_encoder.", "denoiser.cross.")) for k in fresh)
    base_state = base.trained_state_dict()
    for name, tensor in model.trained_state_dict().items():
        if name not in fresh:
            assert torch.equal(tensor, base_state[name]), name
    other = tiny_model(load_config("seq2seq_tiny", ["encoder.max_length=32"]))
    with pytest.raises(WeightFileError, match="encoder.max_length"):
        init_from_unconditional(other, tmp_path / "base")


def test_sample_and_evaluate_cli_on_a_saved_seq2seq_model(tmp_path, seq2seq_model, capsys):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"source": f"what is thing number {i}?", "target": f"which thing is {i}?"} for i in range(40)]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config("seq2seq_tiny", [f"data.dataset={pairs}", "data.validation_size=4"])
    seq2seq_model.cfg = cfg
    seq2seq_model.save_pretrained(tmp_path / "run" / "model")
    src = tmp_path / "src.jsonl"
    src.write_text('{"source": "how do I learn?"}\n{"source": "why?"}\n')
    assert cli.main(["sample", str(tmp_path / "run"), "--source-file", str(src), "--steps", "2"]) == 0
    assert "-> " in capsys.readouterr().out
    out = tmp_path / "eval.json"
    args = ["evaluate", str(tmp_path / "run"), "-n", "4", "--steps", "2", "--no-bertscore", "--out", str(out)]
    assert cli.main([*args, "--seeds", "0,1"]) == 0
    result = json.loads(out.read_text())
    for key in ("bleu", "bleu_permuted_refs", "bleu_copy_source", "rougeL", "rougeL_permuted_refs", "num_pairs"):
        assert key in result
    assert result["num_pairs"] == 4 and len(result["examples"]) == 4
    # two seeds: the top-level figures are their means, with the spread and the paired margin beside them
    assert [r["seed"] for r in result["per_seed"]] == [0, 1]
    assert result["bleu"] == pytest.approx(sum(r["bleu"] for r in result["per_seed"]) / 2)
    low, high = result["rougeL_margin_ci95"]
    assert low <= result["rougeL_margin"] <= high and "bleu_std" in result


def test_margin_bootstrap_separates_source_dependent_outputs_from_generic_ones():
    refs = [f"what is the colour of the {w} house near the river" for w in ("red", "blue", "green", "old", "new")] * 8
    permuted = derange(refs, seed=0)
    copied = margin_bootstrap(refs, refs, permuted, resamples=50)  # outputs that follow their source
    assert copied["bleu_margin_ci95"][0] > 0 and copied["rougeL_margin_ci95"][0] > 0
    generic = margin_bootstrap(["what is the colour of the house"] * len(refs), refs, permuted, resamples=50)
    assert generic["rougeL_margin"] == pytest.approx(0.0, abs=1e-9)  # same output for all: no margin at all
    assert generic["bleu_margin_ci95"][0] <= 0 <= generic["bleu_margin_ci95"][1]


def test_derange_and_mbr():
    texts = [f"t{i}" for i in range(7)]
    permuted = derange(texts, seed=0)
    assert sorted(permuted) == sorted(texts) and all(a != b for a, b in zip(texts, permuted, strict=True))
    chosen = mbr_select([["the cat sat on the mat", "a dog ran", "the cat sat on a mat"]])
    assert chosen[0].startswith("the cat sat")

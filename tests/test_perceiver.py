"""Perceiver Resampler: shapes, padding mask, separate query/input norms, locality prior and its bias."""

from __future__ import annotations

import pytest
import torch

from ldlm.model.perceiver import PerceiverBlock, PerceiverResampler, locality_prior

WIDTH, HEADS = 16, 4


def _resampler(num_queries, max_inputs, in_dim=8, out_dim=6, blocks=2, locality_bias=0.0, seed=0):
    torch.manual_seed(seed)
    return PerceiverResampler(
        num_queries=num_queries,
        max_inputs=max_inputs,
        in_dim=in_dim,
        out_dim=out_dim,
        width=WIDTH,
        blocks=blocks,
        heads=HEADS,
        locality_bias=locality_bias,
    ).eval()


def test_compressor_shape_l_to_n():
    comp = _resampler(num_queries=3, max_inputs=12, in_dim=8, out_dim=5)
    x = torch.randn(2, 12, 8)
    assert comp(x).shape == (2, 3, 5)
    assert comp(x[:, :7]).shape == (2, 3, 5)  # shorter inputs are fine
    with pytest.raises(ValueError, match="max_inputs=12"):
        comp(torch.randn(2, 13, 8))


def test_decompressor_shape_n_to_l_with_fewer_outputs_than_queries():
    dec = _resampler(num_queries=12, max_inputs=3, in_dim=5, out_dim=8, locality_bias=2.0)
    z = torch.randn(2, 3, 5)
    assert dec(z).shape == (2, 12, 8)
    part = dec(z, num_outputs=7)
    assert part.shape == (2, 7, 8)
    assert torch.isfinite(part).all()


@pytest.mark.parametrize("locality_bias", [0.0, 3.0])
def test_key_padding_mask_really_masks(locality_bias):
    comp = _resampler(num_queries=3, max_inputs=10, locality_bias=locality_bias)
    x = torch.randn(2, 10, 8)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, 6:] = 0  # row 0: 6 real inputs, 4 padded
    mask[1, 9:] = 0
    base = comp(x, key_mask=mask)
    x_pad = x.clone()
    x_pad[0, 6:] = torch.randn(4, 8) * 100  # change padded inputs only
    x_pad[1, 9] = 7.0
    torch.testing.assert_close(comp(x_pad, key_mask=mask), base, rtol=0, atol=1e-6)
    x_real = x.clone()
    x_real[0, 2] += 1.0  # change one real input
    changed = comp(x_real, key_mask=mask)
    assert (changed[0] - base[0]).abs().max() > 1e-3
    torch.testing.assert_close(changed[1], base[1], rtol=0, atol=1e-6)  # rows are independent
    # without the mask the padded values do leak in
    assert (comp(x_pad) - comp(x)).abs().max() > 1e-3


def test_fully_padded_row_stays_finite():
    comp = _resampler(num_queries=2, max_inputs=5)
    out = comp(torch.randn(1, 5, 8), key_mask=torch.zeros(1, 5))
    assert torch.isfinite(out).all()  # queries still attend to themselves


def test_query_and_input_norms_are_distinct_modules():
    comp = _resampler(num_queries=3, max_inputs=10, blocks=3)
    for block in comp.blocks:
        assert block.norm_queries is not block.norm_inputs
        assert block.norm_queries.weight is not block.norm_inputs.weight
    names = {n for n, _ in comp.named_parameters()}
    assert "blocks.0.norm_inputs.weight" in names and "blocks.0.norm_queries.weight" in names


def _capture_attention_args(block: PerceiverBlock):
    seen = {}

    def hook(module, args):
        seen["queries"], seen["context"] = args[0].detach().clone(), args[1].detach().clone()

    return seen, block.attn.register_forward_pre_hook(hook)


def test_inputs_are_normalised_by_norm_inputs_and_queries_by_norm_queries():
    torch.manual_seed(0)
    block = PerceiverBlock(WIDTH, HEADS, 2.0).eval()
    u = torch.randn(2, 3, WIDTH)
    x = torch.randn(2, 5, WIDTH) * 3 + 1
    seen, handle = _capture_attention_args(block)
    out = block(u, x, None)
    q0, ctx0 = seen["queries"], seen["context"]
    # context = [LN_q(u); LN_x(x)]
    torch.testing.assert_close(ctx0[:, :3], q0)
    torch.testing.assert_close(ctx0[:, 3:], block.norm_inputs(x))
    with torch.no_grad():  # perturb the INPUT norm only
        block.norm_inputs.weight.mul_(2.0)
        block.norm_inputs.bias.add_(0.5)
    out2 = block(u, x, None)
    torch.testing.assert_close(seen["queries"], q0)  # the query path does not see norm_inputs
    torch.testing.assert_close(seen["context"][:, :3], ctx0[:, :3])
    assert (seen["context"][:, 3:] - ctx0[:, 3:]).abs().max() > 0.1  # the inputs' normalisation changed
    assert (out2 - out).abs().max() > 1e-3  # ... and so did the output
    with torch.no_grad():  # perturb the QUERY norm only
        block.norm_queries.bias.add_(0.5)
    block(u, x, None)
    assert (seen["queries"] - q0).abs().max() > 0.1
    handle.remove()


def test_locality_prior_compressor_q_less_than_k():
    # Q=2 latents over K=4 positions: latent 0 <- positions 0,1; latent 1 <- positions 2,3
    expected = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]]) * 5.0
    torch.testing.assert_close(locality_prior(2, 4, 5.0), expected)
    # Q=3 over K=6: chunks of two
    p = locality_prior(3, 6, 1.0)
    torch.testing.assert_close(p, torch.tensor([[1.0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]]))
    # Q=2 over K=5 (not divisible): contiguous chunks covering every input exactly once
    p = locality_prior(2, 5, 1.0)
    torch.testing.assert_close(p, torch.tensor([[1.0, 1, 1, 0, 0], [0, 0, 0, 1, 1]]))
    # Q == K: the identity
    torch.testing.assert_close(locality_prior(4, 4, 2.0), 2.0 * torch.eye(4))


def test_locality_prior_decompressor_q_greater_than_k():
    # Q=4 output positions from K=2 latents: positions 0,1 <- latent 0; positions 2,3 <- latent 1
    expected = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]]) * 3.0
    torch.testing.assert_close(locality_prior(4, 2, 3.0), expected)
    p = locality_prior(5, 2, 1.0)  # output p -> latent floor(p * 2 / 5): 0,0,0,1,1
    torch.testing.assert_close(p, torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1], [0, 1]]))


@pytest.mark.parametrize("n, length", [(4, 24), (3, 7), (5, 12), (1, 9)])
def test_locality_prior_encoder_and_decoder_agree(n, length):
    comp, dec = locality_prior(n, length, 1.0), locality_prior(length, n, 1.0)
    torch.testing.assert_close(dec, comp.T)  # position l <-> latent n, both directions
    assert (comp.sum(0) == 1).all()  # each position belongs to exactly one latent
    assert (comp.sum(1) >= 1).all()  # each latent covers at least one position


def test_learnable_bias_initialised_from_prior():
    comp = _resampler(num_queries=3, max_inputs=9, blocks=2, locality_bias=4.0)
    assert isinstance(comp.bias, torch.nn.Parameter) and comp.bias.requires_grad
    assert comp.bias.shape == (2, 3, 3 + 9)
    expected = torch.cat([torch.zeros(3, 3), locality_prior(3, 9, 4.0)], 1)
    for b in range(2):
        torch.testing.assert_close(comp.bias.data[b], expected)
    # it is trained: gradients reach it
    comp(torch.randn(2, 9, 8)).square().sum().backward()
    assert comp.bias.grad is not None and comp.bias.grad.abs().sum() > 0


def test_bias_absent_when_locality_bias_is_zero():
    comp = _resampler(num_queries=3, max_inputs=9, locality_bias=0.0)
    assert comp.bias is None
    assert not any(name == "bias" for name, _ in comp.named_parameters())
    assert comp._mask(0, 3, 9, None) is None


def test_strong_prior_restricts_each_latent_to_its_chunk():
    # a huge bias makes attention (almost) one-hot on the prior: latent q depends only on its chunk
    comp = _resampler(num_queries=3, max_inputs=9, blocks=1, locality_bias=1e4)
    x = torch.randn(1, 9, 8)
    base = comp(x)
    x2 = x.clone()
    x2[0, 4] += 5.0  # position 4 belongs to latent 1 (chunk 3..5)
    diff = (comp(x2) - base).abs().amax(-1)[0]
    assert diff[1] > 1e-3
    assert diff[0] < 1e-5 and diff[2] < 1e-5


def test_strong_prior_in_decompressor_with_partial_outputs():
    dec = _resampler(num_queries=8, max_inputs=2, in_dim=5, out_dim=4, blocks=1, locality_bias=1e4)
    z = torch.randn(1, 2, 5)
    base = dec(z, num_outputs=6)
    z2 = z.clone()
    z2[0, 1] += 5.0  # latent 1 covers positions 4..7
    diff = (dec(z2, num_outputs=6) - base).abs().amax(-1)[0]
    assert (diff[:4] < 1e-5).all() and (diff[4:] > 1e-3).all()

"""``encoder.kind=trainable_embeddings`` (Emb_theta, LDLM Table 1 token encoder and Table 2 "Scratch emb"): token
embeddings learned from scratch in the joint stage, with gradient from CE and (gamma-scaled) L_diff, never cached or
normalised, saved with the model; and the config checks that keep it to the recipe and loss it works with."""

from __future__ import annotations

import pytest
import torch
from ldlm_helpers import tiny_config

from ldlm.config import ConfigError
from ldlm.data.sources import normalized_features
from ldlm.model.encoders import FrozenEncoder, TrainableEmbeddings, build_encoder
from ldlm.objectives.joint import JointTask, encoder_swapped
from ldlm.pipeline import LatentDiffusionLM
from ldlm.recipes.ldlm import train_ldlm

SCRATCH = ("encoder.kind=trainable_embeddings", "joint.reconstruction=ce")
IDENTITY = ("autoencoder.latent_encoder=identity", "autoencoder.num_latents=16", "autoencoder.locality_bias=0")


@pytest.fixture(scope="module")
def scratch_cfg():
    return tiny_config(*SCRATCH)


def _batch(model: LatentDiffusionLM, vocab_slice: int = 100, seed: int = 0) -> dict[str, torch.Tensor]:
    """Token ids drawn from the first ``vocab_slice`` ids only (so the other embedding rows see no gradient)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab_slice, (4, model.max_length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_embeddings_are_a_differentiable_lookup_with_no_normalisation(scratch_cfg):
    enc = build_encoder(scratch_cfg.encoder)
    assert isinstance(enc, TrainableEmbeddings) and enc.trainable and not FrozenEncoder.trainable
    assert enc.embedding.weight.shape == (enc.vocab_size, 384) == (30522, 384)  # MiniLM's tokenizer and width
    assert 0.95 < enc.embedding.weight.std().item() < 1.05  # N(0, 1): the scale of normalised features
    ids = torch.tensor([[101, 7592, 102]])
    h = enc(ids, torch.ones_like(ids))
    assert torch.equal(h[0, 1], enc.embedding.weight[7592]) and h.requires_grad
    enc.fit_stats(iter([(torch.randn(2, 3, 384) * 5 + 3, torch.ones(2, 3))]))  # no statistics: stays identity
    assert torch.equal(enc.normalize(h), h)


def test_joint_loss_trains_the_embeddings_of_the_batch_tokens_only(scratch_cfg):
    torch.manual_seed(0)
    model = LatentDiffusionLM(scratch_cfg)
    task = JointTask(model, scratch_cfg, seed=0)
    weight = model.encoder.embedding.weight
    assert any(p is weight for p in task.parameters())  # optimised, averaged by the EMA and checkpointed
    batch = _batch(model)
    loss, _ = task(batch, step=1000)  # after the warmup: gamma = 1
    loss.backward()
    trained = set((weight.grad.abs().sum(1) > 0).nonzero().squeeze(1).tolist())
    assert trained == set(batch["input_ids"][batch["attention_mask"].bool()].tolist())  # padding: no gradient


def test_diffusion_gradient_reaches_the_embeddings_scaled_by_the_warmup(scratch_cfg):
    """Only L_diff: its gradient to Emb_theta is gamma(s) times the full one (App. A.2), so zero when gamma = 0."""
    torch.manual_seed(0)
    model = LatentDiffusionLM(tiny_config(*SCRATCH, "joint.gamma_min=0"))
    task = JointTask(model, model.cfg, seed=0)
    weight = model.encoder.embedding.weight
    grads = {}
    for step in (0, 1000):
        task.generator.manual_seed(0)
        task.timesteps.update = lambda *a: None  # the same t draws at both steps
        weight.grad = None
        task.losses(_batch(model), step)["diff"].backward()
        grads[step] = weight.grad.clone()
    assert task.gamma(0) == 0.0 and task.gamma(1000) == 1.0
    assert grads[0].abs().sum() == 0 and grads[1000].abs().sum() > 0


def test_features_outside_the_joint_stage_carry_no_gradient(scratch_cfg):
    """Head pre-training, D_w post-training and evaluation read h as a constant: no graph to Emb_theta."""
    model = LatentDiffusionLM(scratch_cfg)
    batch = _batch(model)
    assert not normalized_features(model, batch, torch.device("cpu"))[2].requires_grad
    assert normalized_features(model, batch, torch.device("cpu"), grad=True)[2].requires_grad


def test_encoder_swapped_reads_the_given_encoder_and_restores_the_live_one(scratch_cfg):
    model = LatentDiffusionLM(scratch_cfg)
    live, other = model.encoder, build_encoder(scratch_cfg.encoder)
    batch = _batch(model)
    with encoder_swapped(model, other):
        h = normalized_features(model, batch, torch.device("cpu"))[2]
    assert model.encoder is live
    assert torch.equal(h[0, 0], other.embedding.weight[batch["input_ids"][0, 0]])
    with encoder_swapped(model, None):
        assert model.encoder is live


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (("encoder.kind=bert",), "encoder.kind"),
        (("encoder.kind=trainable_embeddings", "joint.reconstruction=mse"), "joint.reconstruction"),
        (("encoder.kind=trainable_embeddings", "joint.reconstruction=ce+mse"), "joint.reconstruction"),
        (("encoder.kind=trainable_embeddings", "joint.reconstruction=ce", "recipe=cosmos"), "recipe=ldlm"),
    ],
)
def test_config_rejects_what_trainable_embeddings_cannot_do(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(*overrides)


@pytest.mark.parametrize("latents", [(), IDENTITY], ids=["perceiver", "identity"])
def test_recipe_trains_saves_and_reloads_the_embeddings(tmp_path, latents):
    """End to end (Table 1's Emb_theta row: Perceiver E_z; Table 2's Scratch emb: z = Emb_theta(w)): the embedding
    matrix moves, nothing is cached, and the saved model reloads it exactly."""
    cfg = tiny_config(
        *SCRATCH, *latents, f"output_dir={tmp_path / 'run'}", "joint_train.steps=6", "joint_train.eval_every=6",
        "joint_train.save_every=0", "decoder_train.steps=0", "data.max_texts=96",
    )  # fmt: skip
    torch.manual_seed(0)
    model = LatentDiffusionLM(cfg)
    before = model.encoder.embedding.weight.detach().clone()
    model, summary = train_ldlm(cfg, progress=False, model=model)
    after = model.encoder.embedding.weight.detach()
    assert not torch.equal(before, after) and summary["heldout_token_accuracy"] >= 0
    assert torch.equal(model.encoder.mean, torch.zeros(384)) and torch.equal(model.encoder.std, torch.ones(384))
    loaded = LatentDiffusionLM.from_pretrained(tmp_path / "run")
    assert torch.equal(loaded.encoder.embedding.weight, after)
    assert len(loaded.generate(num_samples=2, steps=2, seed=0)) == 2

"""LatentDiffusionLM on the session's tiny trained run: save/load, generation, encode/decode, safety."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors import safe_open

from ldlm import pipeline as pipeline_mod
from ldlm.pipeline import CONFIG_NAME, WEIGHTS_NAME, LatentDiffusionLM
from ldlm.storage.io import WeightFileError

TEXTS = ["the cat sat on the mat.", "rain fell over the quiet town all night long.", "she smiled."]


@pytest.fixture(scope="module")
def model(tiny_run):
    return tiny_run.model


@pytest.fixture(scope="module")
def reloaded(tiny_run):
    return LatentDiffusionLM.from_pretrained(tiny_run.run_dir)  # a run dir holding model/ works too


def test_run_dir_layout(tiny_run):
    run_dir = tiny_run.run_dir
    assert sorted(p.name for p in (run_dir / "model").iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["name"] == "tiny" and summary["train_texts"] > 0
    for stage in ("autoencoder", "diffusion"):
        rows = [json.loads(line) for line in (run_dir / stage / "metrics.jsonl").read_text().splitlines()]
        assert rows and rows[-1]["step"] == 20


def test_saved_weights_exclude_frozen_encoder(tiny_run, model):
    path = tiny_run.run_dir / "model" / WEIGHTS_NAME
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert not any(k.startswith("encoder.model.") for k in keys)
    # everything trained or estimated is there: feature stats, latent stats, autoencoder, denoiser
    assert {"encoder.mean", "encoder.std", "latent_mean", "latent_std"} <= keys
    assert any(k.startswith("autoencoder.compressor.") for k in keys)
    assert any(k.startswith("autoencoder.decompressor.") for k in keys)
    assert "autoencoder.head.weight" in keys and any(k.startswith("denoiser.") for k in keys)
    assert keys == set(model.trained_state_dict())
    cfg = json.loads((tiny_run.run_dir / "model" / CONFIG_NAME).read_text())
    assert cfg == json.loads(json.dumps(tiny_run.cfg.to_dict()))


def test_round_trip_identical_tensors_and_texts(model, reloaded, tmp_path):
    saved = model.trained_state_dict()
    loaded = reloaded.trained_state_dict()
    assert saved.keys() == loaded.keys()
    for key in saved:
        assert torch.equal(saved[key].cpu(), loaded[key]), key
    # statistics were actually estimated (not the initial zeros/ones)
    assert not torch.equal(loaded["encoder.std"], torch.ones_like(loaded["encoder.std"]))
    assert not torch.equal(loaded["latent_std"], torch.ones_like(loaded["latent_std"]))
    assert reloaded.cfg == model.cfg
    texts = model.generate(4, steps=5, seed=0)
    assert reloaded.generate(4, steps=5, seed=0) == texts
    # and once more through save_pretrained of the loaded model
    again = LatentDiffusionLM.from_pretrained(reloaded.save_pretrained(tmp_path / "copy"))
    assert again.generate(4, steps=5, seed=0) == texts
    torch.testing.assert_close(
        again.generate_latents(4, steps=5, seed=0), model.generate_latents(4, steps=5, seed=0), rtol=0, atol=0
    )


def test_generate_is_deterministic_per_seed(reloaded):
    a = reloaded.generate_latents(3, steps=5, seed=1)
    assert torch.equal(a, reloaded.generate_latents(3, steps=5, seed=1))
    assert not torch.allclose(a, reloaded.generate_latents(3, steps=5, seed=2))
    texts = reloaded.generate(3, steps=5, seed=1)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert reloaded.generate(3, steps=5, seed=1) == texts
    # batching does not change the samples' count or shape
    assert reloaded.generate_latents(5, steps=2, seed=0, batch_size=2).shape == (5, *reloaded.latent_shape)
    with pytest.raises(ValueError):
        reloaded.generate(0)


def test_encode_shape_and_normalisation(reloaded, tiny_run):
    from ldlm.data.texts import load_run_texts

    n, d = tiny_run.cfg.autoencoder.num_latents, reloaded.autoencoder.latent_dim
    z = reloaded.encode(TEXTS)
    assert z.shape == (3, n, d) == (3, *reloaded.latent_shape)
    # encode = (E_z(normalised h) - mu) / sigma, the space the diffusion model works in
    ids, mask = reloaded.tokenize(TEXTS)
    with torch.no_grad():
        raw = reloaded.autoencoder.encode(reloaded.features(ids, mask), mask)
    torch.testing.assert_close(z, (raw - reloaded.latent_mean) / reloaded.latent_std)
    # the latent statistics were fitted on the training texts: their latents are standardised
    train = load_run_texts(tiny_run.cfg.data).train
    zt = reloaded.encode(train)
    assert zt.mean(0).abs().max() < 0.05
    assert (zt.std(0) - 1).abs().max() < 0.05


def test_decode_inverts_latent_normalisation(reloaded):
    z = reloaded.encode(TEXTS)
    ids = reloaded.decode_ids(z)
    assert ids.shape == (3, reloaded.max_length)
    with torch.no_grad():
        direct = reloaded.autoencoder.decode_tokens(z * reloaded.latent_std + reloaded.latent_mean, reloaded.max_length)
    assert torch.equal(ids, direct)
    texts = reloaded.decode(z)
    assert texts == reloaded.ids_to_texts(ids)
    tok = reloaded.encoder.tokenizer
    for text in texts:
        assert tok.sep_token not in text and tok.pad_token not in text and tok.cls_token not in text


def test_ids_to_texts_cuts_at_sep(reloaded):
    tok = reloaded.encoder.tokenizer
    a, b, c = tok.convert_tokens_to_ids(["cat", "sat", "dog"])
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    ids = torch.tensor(
        [
            [cls, a, b, sep, c, pad],  # CLS a b SEP c PAD -> "cat sat"
            [a, b, c, pad, a, a],  # no CLS: cut at the first PAD
            [cls, sep, a, b, c, pad],  # empty
            [cls, a, b, c, a, b],  # no end token: the whole row
        ]
    )
    assert reloaded.ids_to_texts(ids) == ["cat sat", "cat sat dog", "", "cat sat dog cat sat"]


def test_from_pretrained_without_model_is_helpful(tmp_path):
    with pytest.raises(WeightFileError) as err:
        LatentDiffusionLM.from_pretrained(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and CONFIG_NAME in msg and "save_pretrained" in msg


def _no_unpickling(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a user weight file was unpickled")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)


def test_model_bin_only_is_refused(tmp_path, tiny_run, monkeypatch):
    _no_unpickling(monkeypatch)
    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    (bin_only / "model.bin").write_bytes(b"not to be unpickled")
    with pytest.raises(WeightFileError):
        LatentDiffusionLM.from_pretrained(bin_only)
    # with a valid config beside it: still refused, and the message says why
    (bin_only / CONFIG_NAME).write_text((tiny_run.run_dir / "model" / CONFIG_NAME).read_text())
    with pytest.raises(WeightFileError) as err:
        LatentDiffusionLM.from_pretrained(bin_only)
    msg = str(err.value)
    assert WEIGHTS_NAME in msg and "model.bin" in msg and "unpickle" in msg


def test_truncated_weights_raise_weight_file_error(tmp_path, tiny_run):
    src = tiny_run.run_dir / "model"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / CONFIG_NAME).write_text((src / CONFIG_NAME).read_text())
    data = (src / WEIGHTS_NAME).read_bytes()
    (broken / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match="truncated|safetensors"):
        LatentDiffusionLM.from_pretrained(broken)


def test_weights_not_matching_config_raise(tmp_path, tiny_run):
    src = tiny_run.run_dir / "model"
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((src / CONFIG_NAME).read_text())
    cfg["autoencoder"]["num_latents"] = 2
    (other / CONFIG_NAME).write_text(json.dumps(cfg))
    (other / WEIGHTS_NAME).write_bytes((src / WEIGHTS_NAME).read_bytes())
    with pytest.raises(WeightFileError, match="does not match"):
        LatentDiffusionLM.from_pretrained(other)


def test_invalid_config_json_raises_weight_file_error(tmp_path, tiny_run):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CONFIG_NAME).write_text("{not json")
    (bad / WEIGHTS_NAME).write_bytes((tiny_run.run_dir / "model" / WEIGHTS_NAME).read_bytes())
    with pytest.raises(WeightFileError, match="not a valid ldlm config"):
        LatentDiffusionLM.from_pretrained(bad)


def test_save_is_atomic(tmp_path, reloaded, monkeypatch):
    target = tmp_path / "model"
    reloaded.save_pretrained(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def failing_save(state, path):
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pipeline_mod, "save_safetensors", failing_save)
    with pytest.raises(OSError, match="disk full"):
        reloaded.save_pretrained(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # previous model intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp dir left behind
    assert LatentDiffusionLM.from_pretrained(target).generate(2, steps=2, seed=0) == reloaded.generate(
        2, steps=2, seed=0
    )
    # a first save that fails leaves nothing at all
    with pytest.raises(OSError):
        reloaded.save_pretrained(tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

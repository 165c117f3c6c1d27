"""`data.diffusion_full_window`: the COSMOS diffusion stage sees only texts that fill all L positions."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from ldlm.data.registry import DatasetError
from ldlm.data.texts import RunTexts, diffusion_texts, full_window_texts
from ldlm.recipes.stages import train_diffusion

SHORT = "A short one."
LONG = " ".join(["the committee met again on tuesday and agreed on a new budget for the city"] * 3)


def _with(cfg, **data_fields):
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data_fields))


def test_full_window_texts_keeps_only_texts_without_padding(tiny_run):
    model = tiny_run.model
    assert full_window_texts(model, [SHORT, LONG, SHORT]) == [LONG]
    data = RunTexts(train=[SHORT, LONG], valid=[LONG, SHORT], extra=[])
    assert diffusion_texts(model, data, tiny_run.cfg) == ([SHORT, LONG], [LONG, SHORT])  # off: all texts
    on = _with(tiny_run.cfg, diffusion_full_window=True)
    assert diffusion_texts(model, data, on) == ([LONG], [LONG])
    with pytest.raises(DatasetError, match="encoder.max_length"):
        diffusion_texts(model, RunTexts(train=[SHORT], valid=[], extra=[]), on)


def test_diffusion_stage_trains_on_the_full_windows_only(tiny_run, tmp_path):
    model = copy.deepcopy(tiny_run.model)
    cfg = _with(tiny_run.cfg, diffusion_full_window=True)
    cfg = dataclasses.replace(cfg, diffusion_train=dataclasses.replace(cfg.diffusion_train, steps=2, eval_every=2))
    data = RunTexts(train=[SHORT, LONG, SHORT, LONG + " again"], valid=[LONG, SHORT], extra=[])
    summary = train_diffusion(model, data, cfg, tmp_path, progress=False)
    assert summary["diffusion_texts"] == 2


def test_diffusion_rows_are_read_from_the_autoencoder_features_without_encoding_again(monkeypatch, tmp_path):
    import torch
    from ldlm_helpers import tiny_model

    from ldlm.config import load_config
    from ldlm.data import features
    from ldlm.data.sources import FeatureSource, RowSubset, diffusion_sources

    monkeypatch.setattr(features, "CACHE_DIR", tmp_path)
    cfg = _with(load_config("tiny"), diffusion_full_window=True)
    model = tiny_model(cfg)
    encoded = []  # rows through the frozen encoder E_h
    forward = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda ids, mask: encoded.append(len(ids)) or forward(ids, mask))
    train = [SHORT, LONG, SHORT, LONG + " again", "the mayor said " + LONG, SHORT + " two"]
    data = RunTexts(train=train, valid=[LONG + " valid", SHORT, "so " + LONG], extra=["extra " + LONG, SHORT])
    FeatureSource(model, data.autoencoder_texts, True), FeatureSource(model, data.valid, True)  # the autoencoder stage
    entries = sorted(p.name for p in (tmp_path / "features").iterdir())
    assert sum(encoded) == len(data.autoencoder_texts) + len(data.valid)
    encoded.clear()

    new = diffusion_sources(model, data, cfg)
    assert encoded == [] and sorted(p.name for p in (tmp_path / "features").iterdir()) == entries
    assert all(isinstance(s, RowSubset) for s in new)
    texts = diffusion_texts(model, data, cfg)
    old = [FeatureSource(model, t, True) for t in texts]  # today's path: a new entry of the subset, encoded again
    assert sum(encoded) == len(texts[0]) + len(texts[1]) == 5
    for a, b in zip(new, old, strict=True):
        assert len(a) == len(b)
        for idx in (torch.arange(len(b)), torch.tensor([1, 0])):
            x, y = a.batch(idx), b.batch(idx)
            assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["attention_mask"], y["attention_mask"])
            torch.testing.assert_close(x["h"], y["h"], atol=2e-3, rtol=2e-3)
    # no cache, or no entry of the autoencoder's texts: the subset is tokenised / encoded as before
    assert not isinstance(diffusion_sources(model, data, _with(cfg, cache_features=False))[0], RowSubset)
    other = dataclasses.replace(data, extra=["never encoded " + LONG])
    assert not isinstance(diffusion_sources(model, other, cfg)[0], RowSubset)

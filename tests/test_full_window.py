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
